"""Configuration of the image Mask2Former (`model_type="series_mask2former"`).

Attribute names are those of transformers' `Mask2FormerConfig`, so a transformers `config.json` loads as is.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from .configuration_common import CompatibleModelTypesMixin, pop_backbone_arguments, resolve_backbone_config


class SeriesMask2FormerConfig(CompatibleModelTypesMixin, PreTrainedConfig):
    r"""Configuration of [`SeriesMask2FormerModel`] and [`SeriesMask2FormerForUniversalSegmentation`].

    Args:
        backbone_config: the backbone's config (Swin, ResNet, any AutoBackbone, or `TimmBackboneConfig`) or a dict
            with its `model_type`; defaults to Swin-S returning 4 stages.
        backbone, use_timm_backbone, backbone_kwargs, use_pretrained_backbone (keyword arguments, as in
            transformers): `backbone="resnet50"` builds that timm model through `TimmBackbone` (stages 1-4), or with
            `use_timm_backbone=False` the transformers model of that name or folder; `backbone_kwargs` go to its
            config. `use_pretrained_backbone=True` downloads the backbone's weights when the model is built (an
            `OSError` at once when the Hub cannot be reached).
        feature_size: channels of the pixel decoder's multi-scale maps.
        mask_feature_size: channels of the per-pixel mask embeddings.
        hidden_dim: channels of the transformer decoder.
        encoder_feedforward_dim: FFN size of the deformable encoder layers (1024 in every released model).
        activation_function: FFN activation of the pixel-decoder encoder.
        encoder_layers: deformable encoder layers in the pixel decoder.
        decoder_layers: the original `DEC_LAYERS`: the transformer decoder has `decoder_layers - 1` layers and
            gives `decoder_layers` predictions.
        num_attention_heads: heads of every attention layer.
        encoder_num_points: sampling points per head and level in deformable attention.
        dropout: dropout of the transformer layers.
        dim_feedforward: FFN size of the transformer decoder.
        pre_norm: pre-LayerNorm transformer decoder layers (the released models are post-norm).
        enforce_input_projection: 1×1 projection before the decoder even if the channels match.
        common_stride: stride of the mask features (4).
        ignore_value: label ignored by the loss and processor.
        num_queries: number of object queries.
        no_object_weight: cross-entropy weight of the "no object" class.
        class_weight, mask_weight, dice_weight: loss and matching-cost weights.
        train_num_points, oversample_ratio, importance_sample_ratio: point sampling of the mask losses.
        init_std, init_xavier_std: initialisation.
        use_auxiliary_loss: supervise every decoder layer.
        feature_strides: strides of the 4 backbone maps.
        output_auxiliary_logits: return the predictions of the intermediate layers (default: `use_auxiliary_loss`).
        freeze_backbone_batch_norm: keep the backbone's BatchNorm statistics and affine parameters fixed while
            training (detectron2's FrozenBN; relevant for ResNet backbones).
        use_kernels: use the compiled deformable-attention kernel from the Hub when the model runs on CUDA (the
            environment variable `HF_MASKFORMER_SERIES_DISABLE_KERNELS=1` turns it off too).
    """

    model_type = "series_mask2former"
    compatible_model_types = ("mask2former",)  # transformers' config.json loads as ours
    sub_configs = {"backbone_config": AutoConfig}
    attribute_map = {"hidden_size": "hidden_dim", "num_hidden_layers": "decoder_layers"}

    def __init__(
        self,
        backbone_config: PreTrainedConfig | dict[str, Any] | None = None,
        feature_size: int = 256,
        mask_feature_size: int = 256,
        hidden_dim: int = 256,
        encoder_feedforward_dim: int = 1024,
        activation_function: str = "relu",
        encoder_layers: int = 6,
        decoder_layers: int = 10,
        num_attention_heads: int = 8,
        encoder_num_points: int = 4,
        dropout: float = 0.0,
        dim_feedforward: int = 2048,
        pre_norm: bool = False,
        enforce_input_projection: bool = False,
        common_stride: int = 4,
        ignore_value: int = 255,
        num_queries: int = 100,
        no_object_weight: float = 0.1,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        train_num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        use_auxiliary_loss: bool = True,
        feature_strides: list[int] | tuple[int, ...] = (4, 8, 16, 32),
        output_auxiliary_logits: bool | None = None,
        freeze_backbone_batch_norm: bool = True,
        use_kernels: bool = True,
        **kwargs,
    ):
        kwargs.pop("model_type", None)  # a transformers `mask2former` config.json loads as ours
        backbone_config, self.backbone, self.use_pretrained_backbone = pop_backbone_arguments(backbone_config, kwargs)
        self.backbone_config = resolve_backbone_config(backbone_config)
        self.feature_size = feature_size
        self.mask_feature_size = mask_feature_size
        self.hidden_dim = hidden_dim
        self.encoder_feedforward_dim = encoder_feedforward_dim
        self.activation_function = activation_function
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.num_attention_heads = num_attention_heads
        self.encoder_num_points = encoder_num_points
        self.dropout = dropout
        self.dim_feedforward = dim_feedforward
        self.pre_norm = pre_norm
        self.enforce_input_projection = enforce_input_projection
        self.common_stride = common_stride
        self.ignore_value = ignore_value
        self.num_queries = num_queries
        self.no_object_weight = no_object_weight
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.init_std = init_std
        self.init_xavier_std = init_xavier_std
        self.use_auxiliary_loss = use_auxiliary_loss
        self.feature_strides = list(feature_strides)
        self.output_auxiliary_logits = output_auxiliary_logits
        self.freeze_backbone_batch_norm = freeze_backbone_batch_norm
        self.use_kernels = use_kernels
        if decoder_layers < 2:
            raise ValueError(f"decoder_layers must be >= 2 (it counts the query-init prediction), got {decoder_layers}")
        if len(self.feature_strides) != 4:
            raise ValueError(f"feature_strides must list 4 strides, got {self.feature_strides}")
        super().__init__(**kwargs)
