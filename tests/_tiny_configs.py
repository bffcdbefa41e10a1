"""Tiny model configs shared by the tests (CPU-fast)."""

from __future__ import annotations

from transformers import ResNetConfig, SwinConfig

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def tiny_swin(**overrides) -> SwinConfig:
    kwargs = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=4, out_features=STAGES)
    kwargs.update(overrides)
    return SwinConfig(**kwargs)


def tiny_resnet(**overrides) -> ResNetConfig:
    kwargs = dict(embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="bottleneck",
                  out_features=STAGES)
    kwargs.update(overrides)
    return ResNetConfig(**kwargs)


def tiny_mask2former_kwargs(backbone_config=None, **overrides) -> dict:
    kwargs = dict(
        backbone_config=backbone_config if backbone_config is not None else tiny_swin(),
        hidden_dim=32, feature_size=32, mask_feature_size=32, encoder_feedforward_dim=64, dim_feedforward=64,
        num_queries=6, decoder_layers=5, encoder_layers=2, num_attention_heads=2, num_labels=4,
        train_num_points=256,
    )
    kwargs.update(overrides)
    return kwargs


TINY_DETR_DECODER = dict(d_model=32, decoder_layers=3, decoder_attention_heads=2, decoder_ffn_dim=64, num_queries=6)


def tiny_maskformer_kwargs(backbone_config=None, **overrides) -> dict:
    kwargs = dict(
        backbone_config=backbone_config if backbone_config is not None else tiny_swin(),
        decoder_config=dict(TINY_DETR_DECODER), fpn_feature_size=32, mask_feature_size=32, num_labels=4,
    )
    kwargs.update(overrides)
    return kwargs
