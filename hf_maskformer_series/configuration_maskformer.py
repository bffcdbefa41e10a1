"""Configuration of MaskFormer v1 (`model_type="series_maskformer"`).

Attribute names are those of transformers' `MaskFormerConfig` (the transformer decoder's settings live in a DETR
`decoder_config`), so a transformers / `facebook/maskformer-*` `config.json` loads as is. Our additions: the
transformer-encoder pixel decoder, `enforce_input_projection`, `pre_norm`, `freeze_backbone_batch_norm`.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from .configuration_common import CompatibleModelTypesMixin, pop_backbone_arguments, resolve_backbone_config

# Swin-B as in transformers' MaskFormerConfig default (facebook/maskformer-swin-base-ade).
DEFAULT_MASKFORMER_SWIN_BACKBONE = {
    "model_type": "swin",
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
    "window_size": 12,
    "image_size": 384,
    "drop_path_rate": 0.3,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}

PIXEL_DECODER_TYPES = ("fpn", "transformer_encoder")


def _as_maskformer_swin(backbone_config: PreTrainedConfig) -> PreTrainedConfig:
    """A `swin` backbone config as transformers' `maskformer-swin` (the layout of MaskFormer checkpoints) returning
    the 4 stages, as transformers' MaskFormer does with a plain `SwinConfig`; other configs are returned as is."""
    if backbone_config.model_type != "swin":
        return backbone_config
    values = backbone_config.to_dict()
    for key in ("model_type", "transformers_version", "out_indices", "stage_names"):
        values.pop(key, None)
    values["out_features"] = ["stage1", "stage2", "stage3", "stage4"]
    return AutoConfig.for_model("maskformer-swin", **values)


def _resolve_decoder_config(decoder_config: PreTrainedConfig | dict[str, Any] | None) -> PreTrainedConfig:
    if decoder_config is None:
        decoder_config = {}
    if isinstance(decoder_config, dict):
        decoder_config = dict(decoder_config)
        model_type = decoder_config.pop("model_type", "detr")
        if model_type != "detr":
            raise ValueError(f"decoder_config must be a DETR config (model_type 'detr'), got model_type {model_type!r}")
        decoder_config = AutoConfig.for_model("detr", **decoder_config)
    if not isinstance(decoder_config, PreTrainedConfig) or decoder_config.model_type != "detr":
        raise ValueError(f"decoder_config must be a DetrConfig or a dict, got {type(decoder_config).__name__}")
    return decoder_config


class SeriesMaskFormerConfig(CompatibleModelTypesMixin, PreTrainedConfig):
    r"""Configuration of [`SeriesMaskFormerModel`] and [`SeriesMaskFormerForInstanceSegmentation`].

    Args:
        fpn_feature_size: channels of the pixel decoder's FPN maps (the original `CONVS_DIM`).
        mask_feature_size: channels of the per-pixel mask embeddings (`MASK_DIM`).
        no_object_weight: cross-entropy weight of the "no object" class.
        use_auxiliary_loss: supervise every decoder layer (the original's deep supervision).
        backbone_config: the backbone's config (Swin, ResNet, `maskformer-swin`, any AutoBackbone or
            `TimmBackboneConfig`) or a dict with its `model_type`; defaults to Swin-B returning 4 stages. With
            `use_maskformer_swin` a `swin` config is turned into transformers' `maskformer-swin` (as transformers'
            MaskFormer does, returning its 4 stages whatever its `out_features`), so `facebook/maskformer-swin-*`
            weights load.
        backbone, use_timm_backbone, backbone_kwargs, use_pretrained_backbone (keyword arguments): as in
            [`SeriesMask2FormerConfig`].
        decoder_config: a `DetrConfig` (or dict) for the transformer decoder: `d_model` (hidden size), `num_queries`,
            `decoder_layers`, `decoder_attention_heads`, `decoder_ffn_dim`, `dropout`, `activation_function`.
        init_std, init_xavier_std: initialisation.
        dice_weight, cross_entropy_weight, mask_weight: loss weights (the mask loss is the sigmoid focal loss) and
            matching costs (the class cost is 1, as in the original).
        output_auxiliary_logits: return the predictions of the intermediate layers (default: `use_auxiliary_loss`).
        pixel_decoder_type: "fpn" (the original `BasePixelDecoder`) or "transformer_encoder"
            (`TransformerEncoderPixelDecoder`: a DETR encoder on the /32 map before the FPN, whose output is also the
            transformer decoder's memory; the COCO-panoptic R50/R101 models).
        pixel_decoder_encoder_layers, pixel_decoder_encoder_attention_heads, pixel_decoder_encoder_ffn_dim,
        pixel_decoder_encoder_dropout, pixel_decoder_pre_norm: the pixel decoder's transformer encoder.
        pre_norm: pre-LayerNorm transformer decoder layers (the released models are post-norm).
        enforce_input_projection: 1×1 projection before the transformer decoder even if the channels already match
            (the original's `ENFORCE_INPUT_PROJ`, set by the COCO Swin configs).
        freeze_backbone_batch_norm: keep the backbone's BatchNorm statistics and affine parameters fixed while
            training (detectron2's FrozenBN; relevant for ResNet backbones).
        use_maskformer_swin: build `swin` backbones as transformers' `MaskFormerSwinBackbone`.
    """

    model_type = "series_maskformer"
    compatible_model_types = ("maskformer",)  # transformers' config.json loads as ours
    sub_configs = {"backbone_config": AutoConfig, "decoder_config": AutoConfig}
    attribute_map = {"hidden_size": "mask_feature_size"}

    def __init__(
        self,
        fpn_feature_size: int = 256,
        mask_feature_size: int = 256,
        no_object_weight: float = 0.1,
        use_auxiliary_loss: bool = False,
        backbone_config: PreTrainedConfig | dict[str, Any] | None = None,
        decoder_config: PreTrainedConfig | dict[str, Any] | None = None,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        dice_weight: float = 1.0,
        cross_entropy_weight: float = 1.0,
        mask_weight: float = 20.0,
        output_auxiliary_logits: bool | None = None,
        pixel_decoder_type: str = "fpn",
        pixel_decoder_encoder_layers: int = 6,
        pixel_decoder_encoder_attention_heads: int = 8,
        pixel_decoder_encoder_ffn_dim: int = 2048,
        pixel_decoder_encoder_dropout: float = 0.1,
        pixel_decoder_pre_norm: bool = False,
        pre_norm: bool = False,
        enforce_input_projection: bool = False,
        freeze_backbone_batch_norm: bool = True,
        use_maskformer_swin: bool = True,
        **kwargs,
    ):
        # transformers writes these two derived values into its config.json; they are recomputed here
        kwargs.pop("num_attention_heads", None)
        kwargs.pop("num_hidden_layers", None)
        # a transformers config.json says "maskformer": keep our own model_type so a re-saved folder loads as ours
        kwargs.pop("model_type", None)
        backbone_config, self.backbone, self.use_pretrained_backbone = pop_backbone_arguments(backbone_config, kwargs)
        self.backbone_config = resolve_backbone_config(
            backbone_config, default=DEFAULT_MASKFORMER_SWIN_BACKBONE,
            convert=_as_maskformer_swin if use_maskformer_swin else None,
        )
        self.decoder_config = _resolve_decoder_config(decoder_config)
        # shorthands for the decoder's hidden size and query count (stored in decoder_config)
        if "hidden_dim" in kwargs:
            self.decoder_config.d_model = kwargs.pop("hidden_dim")
        if "num_queries" in kwargs:
            self.decoder_config.num_queries = kwargs.pop("num_queries")
        if pixel_decoder_type not in PIXEL_DECODER_TYPES:
            raise ValueError(f"pixel_decoder_type must be one of {PIXEL_DECODER_TYPES}, got {pixel_decoder_type!r}")
        for name, value in (
            ("fpn_feature_size", fpn_feature_size),
            ("mask_feature_size", mask_feature_size),
            ("pixel_decoder_encoder_layers", pixel_decoder_encoder_layers),
        ):
            if value < (0 if name == "pixel_decoder_encoder_layers" else 1):
                raise ValueError(f"{name} must be positive, got {value}")
        if pixel_decoder_type == "transformer_encoder" and fpn_feature_size % pixel_decoder_encoder_attention_heads:
            raise ValueError(
                f"fpn_feature_size ({fpn_feature_size}) must be divisible by pixel_decoder_encoder_attention_heads "
                f"({pixel_decoder_encoder_attention_heads})"
            )
        self.fpn_feature_size = fpn_feature_size
        self.mask_feature_size = mask_feature_size
        self.no_object_weight = no_object_weight
        self.use_auxiliary_loss = use_auxiliary_loss
        self.init_std = init_std
        self.init_xavier_std = init_xavier_std
        self.dice_weight = dice_weight
        self.cross_entropy_weight = cross_entropy_weight
        self.mask_weight = mask_weight
        self.output_auxiliary_logits = output_auxiliary_logits
        self.pixel_decoder_type = pixel_decoder_type
        self.pixel_decoder_encoder_layers = pixel_decoder_encoder_layers
        self.pixel_decoder_encoder_attention_heads = pixel_decoder_encoder_attention_heads
        self.pixel_decoder_encoder_ffn_dim = pixel_decoder_encoder_ffn_dim
        self.pixel_decoder_encoder_dropout = pixel_decoder_encoder_dropout
        self.pixel_decoder_pre_norm = pixel_decoder_pre_norm
        self.pre_norm = pre_norm
        self.enforce_input_projection = enforce_input_projection
        self.freeze_backbone_batch_norm = freeze_backbone_batch_norm
        self.use_maskformer_swin = use_maskformer_swin
        super().__init__(**kwargs)
        self.num_attention_heads = self.decoder_config.decoder_attention_heads
        self.num_hidden_layers = self.decoder_config.decoder_layers

    @property
    def hidden_dim(self) -> int:
        """Channels of the transformer decoder (`decoder_config.d_model`)."""
        return self.decoder_config.d_model

    @property
    def num_queries(self) -> int:
        """Number of object queries (`decoder_config.num_queries`)."""
        return self.decoder_config.num_queries
