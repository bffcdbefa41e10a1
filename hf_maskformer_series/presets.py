"""Named model presets for training from scratch: ``SeriesMask2FormerConfig`` keyword arguments for a label set.

- ``tiny`` (the training examples' default): a 4-stage Swin with ``embed_dim=32``, hidden size 64, 16 queries,
  4 predictions (3 decoder layers), 2 deformable encoder layers, 1024 training points. About 1.8 M parameters;
  one training step on a batch of 8 images of 128x128 takes ~0.25 s on 2 CPU cores. It is meant for the embedded
  synthetic data and for tests, not for real datasets.
- ``swin-tiny``: the paper's Swin-T Mask2Former (hidden 256, 100 queries, 10 predictions, 6 encoder layers,
  12544 points); the backbone is built with random weights -- load pretrained ones with ``--model_name_or_path``.
- ``r50``: the paper's ResNet-50 Mask2Former (same head as ``swin-tiny``).

Every preset returns plain keyword arguments, so a caller can override any of them before building the config::

    kwargs = preset_config_kwargs("tiny", id2label={0: "circle", 1: "sky"})
    config = SeriesMask2FormerConfig(**kwargs)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import ResNetConfig, SwinConfig

__all__ = ["PRESET_NAMES", "preset_config_kwargs"]

_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _tiny() -> dict[str, Any]:
    return dict(
        backbone_config=SwinConfig(
            embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=4, drop_path_rate=0.0,
            out_features=_STAGES,
        ),
        hidden_dim=64, feature_size=64, mask_feature_size=64, encoder_feedforward_dim=256, dim_feedforward=256,
        num_queries=16, decoder_layers=4, encoder_layers=2, num_attention_heads=4, train_num_points=1024,
        freeze_backbone_batch_norm=False,
    )


def _paper_head() -> dict[str, Any]:
    return dict(
        hidden_dim=256, feature_size=256, mask_feature_size=256, encoder_feedforward_dim=1024, dim_feedforward=2048,
        num_queries=100, decoder_layers=10, encoder_layers=6, num_attention_heads=8, train_num_points=12544,
    )


def _swin_tiny() -> dict[str, Any]:
    return dict(
        backbone_config=SwinConfig(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, drop_path_rate=0.3,
            out_features=_STAGES,
        ),
        **_paper_head(),
    )


def _r50() -> dict[str, Any]:
    return dict(
        backbone_config=ResNetConfig(
            embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type="bottleneck",
            out_features=_STAGES,
        ),
        freeze_backbone_batch_norm=True,
        **_paper_head(),
    )


_PRESETS = {"tiny": _tiny, "swin-tiny": _swin_tiny, "r50": _r50}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def preset_config_kwargs(name: str, id2label: Mapping[int, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``SeriesMask2FormerConfig`` for preset ``name``.

    Args:
        name: one of ``PRESET_NAMES``.
        id2label: ``{label id: name}`` of the label set (ids ``0 .. num_labels - 1``); sets ``id2label``,
            ``label2id`` and ``num_labels``.
        **overrides: any config argument, applied last.

    Raises:
        ValueError: unknown preset name, or label ids that are not ``0 .. num_labels - 1``.
    """
    if name not in _PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; choose one of {', '.join(PRESET_NAMES)}.")
    kwargs = _PRESETS[name]()
    if id2label is not None:
        id2label = {int(key): str(value) for key, value in id2label.items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"id2label keys must be 0 .. num_labels - 1; got {sorted(id2label)}.")
        kwargs.update(id2label=id2label, label2id={v: k for k, v in id2label.items()}, num_labels=len(id2label))
    kwargs.update(overrides)
    return kwargs
