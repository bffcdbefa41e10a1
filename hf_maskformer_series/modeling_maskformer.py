"""MaskFormer v1: backbone → FPN pixel decoder (optionally with a transformer encoder) → DETR decoder → heads.

Module and parameter names follow transformers' `MaskFormerForInstanceSegmentation`, so `facebook/maskformer-*`
checkpoints load unchanged; the transformer-encoder pixel decoder (absent from transformers) adds
`pixel_level_module.decoder.{input_projection, transformer_encoder}`. Behaviour follows the original: the decoder's
shared LayerNorm is applied to each intermediate output only (transformers feeds it forward when auxiliary
outputs are on), and `enforce_input_projection` is supported.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .backbone import backbone_channels, backbone_feature_maps, build_backbone, freeze_batch_norm
from .configuration_maskformer import SeriesMaskFormerConfig
from .detr_transformer import DetrDecoderLayer, DetrEncoderLayer, DetrTransformerModule
from .fpn_pixel_decoder import FPNPixelDecoder, TransformerEncoderPixelDecoder
from .heads import MLP, predict_masks
from .modeling_common import (
    build_criterion,
    init_shared_weights,
    segmentation_model_output,
    universal_segmentation_output,
    wants_auxiliary_logits,
)
from .modeling_outputs import SeriesSegmentationModelOutput, SeriesUniversalSegmentationOutput
from .onednn_layers import use_onednn_layers
from .validation import validate_pixel_mask, validate_pixel_values, validate_targets


class SeriesMaskFormerPixelLevelModule(nn.Module):
    """Backbone (`encoder`) and pixel decoder (`decoder`)."""

    def __init__(self, config: SeriesMaskFormerConfig):
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config.backbone_config, config.use_pretrained_backbone, config.backbone)
        config.use_pretrained_backbone = False  # the weights are now the model's: a saved copy must not download
        channels = backbone_channels(self.encoder)
        if config.pixel_decoder_type == "transformer_encoder":
            self.decoder = TransformerEncoderPixelDecoder(
                channels,
                feature_size=config.fpn_feature_size,
                mask_feature_size=config.mask_feature_size,
                num_layers=config.pixel_decoder_encoder_layers,
                num_heads=config.pixel_decoder_encoder_attention_heads,
                ffn_dim=config.pixel_decoder_encoder_ffn_dim,
                dropout=config.pixel_decoder_encoder_dropout,
                pre_norm=config.pixel_decoder_pre_norm,
            )
        else:
            self.decoder = FPNPixelDecoder(
                channels, feature_size=config.fpn_feature_size, mask_feature_size=config.mask_feature_size
            )

    @property
    def transformer_in_channels(self) -> int:
        """Channels of the map the transformer decoder reads."""
        if isinstance(self.decoder, TransformerEncoderPixelDecoder):
            return self.config.fpn_feature_size
        return backbone_channels(self.encoder)[-1]

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.config.freeze_backbone_batch_norm:
            freeze_batch_norm(self.encoder)
        return self

    def forward(self, pixel_values: torch.Tensor):
        """`[batch, 3, H, W]` → (4 backbone maps finest first, `FPNPixelDecoderOutput`)."""
        features = backbone_feature_maps(self.encoder, pixel_values)
        return features, self.decoder(features)


class SeriesMaskFormerPreTrainedModel(PreTrainedModel):
    config_class = SeriesMaskFormerConfig
    config: SeriesMaskFormerConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["DetrDecoderLayer", "DetrEncoderLayer"]

    def post_init(self) -> None:
        super().post_init()
        use_onednn_layers(self)  # float32 CPU inference through oneDNN (onednn_layers.py)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialisation of the original implementation (only touches parameters not loaded from a checkpoint)."""
        if isinstance(module, (DetrDecoderLayer, DetrEncoderLayer)):
            # DETR's Transformer._reset_parameters: xavier on every matrix
            for parameter in module.parameters():
                if parameter.dim() > 1:
                    init.xavier_uniform_(parameter)
            for attention in (getattr(module, "self_attn", None), getattr(module, "encoder_attn", None)):
                if attention is not None:
                    for projection in (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj):
                        init.zeros_(projection.bias)
        elif not init_shared_weights(module, self.config.no_object_weight, detectron2_convs=True):
            super()._init_weights(module)


class SeriesMaskFormerModel(SeriesMaskFormerPreTrainedModel):
    """MaskFormer without the heads: mask features and per-layer query states."""

    def __init__(self, config: SeriesMaskFormerConfig):
        super().__init__(config)
        decoder_config = config.decoder_config
        self.pixel_level_module = SeriesMaskFormerPixelLevelModule(config)
        self.transformer_module = DetrTransformerModule(
            in_channels=self.pixel_level_module.transformer_in_channels,
            hidden_dim=decoder_config.d_model,
            num_queries=decoder_config.num_queries,
            num_layers=decoder_config.decoder_layers,
            num_heads=decoder_config.decoder_attention_heads,
            ffn_dim=decoder_config.decoder_ffn_dim,
            dropout=decoder_config.dropout,
            activation=decoder_config.activation_function,
            pre_norm=config.pre_norm,
            enforce_input_projection=config.enforce_input_projection,
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SeriesSegmentationModelOutput | tuple:
        """
        Args:
            pixel_values: `[batch, 3, H, W]`, normalised, padded bottom/right.
            pixel_mask: `[batch, H, W]`, 1 on real pixels (checked; unused by the network, like the original).

        Returns:
            `SeriesSegmentationModelOutput`: `pixel_decoder_last_hidden_state` are the mask features
            `[batch, mask_feature_size, H/4, W/4]`, `transformer_decoder_intermediate_states` the LayerNorm-ed query
            states of every decoder layer; `pixel_decoder_hidden_states` are the 4 FPN maps (coarse first),
            `transformer_decoder_hidden_states` the decoder's (zero) input and each layer's output, `hidden_states`
            the three concatenated (as transformers' MaskFormer).
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return_dict = self.config.return_dict if return_dict is None else return_dict
        validate_pixel_values(pixel_values, getattr(self.config.backbone_config, "num_channels", 3))
        validate_pixel_mask(pixel_mask, pixel_values)
        features, pixel_decoder_output = self.pixel_level_module(pixel_values)
        decoder_output = self.transformer_module(pixel_decoder_output.transformer_features, output_attentions)
        output = segmentation_model_output(
            features, pixel_decoder_output.mask_features, pixel_decoder_output.fpn_features, decoder_output,
            output_hidden_states, output_attentions, combined_hidden_states=True,
        )
        return output if return_dict else output.to_tuple()


class SeriesMaskFormerForInstanceSegmentation(SeriesMaskFormerPreTrainedModel):
    """MaskFormer with the class and mask heads and the loss: semantic, instance and panoptic segmentation."""

    def __init__(self, config: SeriesMaskFormerConfig):
        super().__init__(config)
        hidden_dim = config.decoder_config.d_model
        self.model = SeriesMaskFormerModel(config)
        self.class_predictor = nn.Linear(hidden_dim, config.num_labels + 1)
        self.mask_embedder = MLP(hidden_dim, hidden_dim, config.mask_feature_size, num_layers=3)
        # MaskFormer: full-resolution sigmoid focal + dice, class matching cost 1
        self.criterion = build_criterion(config, class_weight=config.cross_entropy_weight, cost_class=1.0,
                                         mask_loss="focal")
        self.post_init()

    def _predict(self, states: torch.Tensor, mask_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`states [batch, queries, hidden]` → class logits `[batch, queries, C+1]`, masks `[batch, queries, h, w]`."""
        return self.class_predictor(states), predict_masks(self.mask_embedder(states), mask_features)

    def forward(
        self,
        pixel_values: torch.Tensor,
        mask_labels: list[torch.Tensor] | None = None,
        class_labels: list[torch.Tensor] | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_auxiliary_logits: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SeriesUniversalSegmentationOutput | tuple:
        """
        Args:
            pixel_values: `[batch, 3, H, W]`.
            mask_labels: per image `[targets, H, W]` binary masks at the input resolution (training), or the lean
                form: an integer `[H, W]` segment map (value `j` = target `j`, `-1` = no target); same losses.
            class_labels: per image `[targets]` class ids in `[0, num_labels)` (training).
            pixel_mask: `[batch, H, W]`, 1 on real pixels.
            output_auxiliary_logits: return the earlier layers' predictions (default: config, then
                `use_auxiliary_loss`).

        Returns:
            `SeriesUniversalSegmentationOutput`: `class_queries_logits [batch, queries, num_labels + 1]`,
            `masks_queries_logits [batch, queries, H/4, W/4]`, `image_sizes` and `padded_image_size` `[batch, 2]`;
            `loss` when targets are given.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        validate_targets(mask_labels, class_labels, pixel_values, self.config.num_labels)
        output_auxiliary_logits = wants_auxiliary_logits(self.config, output_auxiliary_logits)
        outputs = self.model(
            pixel_values,
            pixel_mask=pixel_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        mask_features = outputs.pixel_decoder_last_hidden_state
        states = outputs.transformer_decoder_intermediate_states
        if not (output_auxiliary_logits or (mask_labels is not None and self.config.use_auxiliary_loss)):
            states = states[-1:]  # the earlier layers' predictions are not needed
        predictions = [self._predict(layer_states, mask_features) for layer_states in states]
        output = universal_segmentation_output(
            SeriesUniversalSegmentationOutput, outputs, [classes for classes, _ in predictions],
            [masks for _, masks in predictions], criterion=self.criterion, config=self.config,
            mask_labels=mask_labels, class_labels=class_labels, output_auxiliary_logits=output_auxiliary_logits,
            pixel_values=pixel_values, pixel_mask=pixel_mask,
        )
        return output if return_dict else output.to_tuple()
