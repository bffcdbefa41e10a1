"""The image Mask2Former: backbone → deformable pixel decoder → masked-attention decoder → class and mask heads.

Module and parameter names follow transformers' Mask2Former, so `facebook/mask2former-*` checkpoints load
unchanged; the blocks themselves are this package's shared modules.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .backbone import backbone_channels, backbone_feature_maps, build_backbone, freeze_batch_norm
from .configuration_mask2former import SeriesMask2FormerConfig
from .deformable_pixel_decoder import DeformableAttentionLayer, MSDeformAttnPixelDecoder
from .kernel_loading import HubKernelsMixin, kernel_forward_pre_hook
from .masked_attention_decoder import MaskedAttentionDecoderLayer, MaskedAttentionTransformerModule
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


class SeriesMask2FormerPixelLevelModule(nn.Module):
    """Backbone (`encoder`) and deformable pixel decoder (`decoder`)."""

    def __init__(self, config: SeriesMask2FormerConfig):
        super().__init__()
        self.config = config
        self.encoder = build_backbone(config.backbone_config, config.use_pretrained_backbone, config.backbone)
        config.use_pretrained_backbone = False  # the weights are now the model's: a saved copy must not download
        self.decoder = MSDeformAttnPixelDecoder(
            backbone_channels(self.encoder),
            feature_size=config.feature_size,
            mask_feature_size=config.mask_feature_size,
            num_layers=config.encoder_layers,
            num_heads=config.num_attention_heads,
            num_points=config.encoder_num_points,
            ffn_dim=config.encoder_feedforward_dim,
            dropout=config.dropout,
            activation=config.activation_function,
            feature_strides=config.feature_strides,
            common_stride=config.common_stride,
        )

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.config.freeze_backbone_batch_norm:
            freeze_batch_norm(self.encoder)
        return self

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False):
        """`[batch, 3, H, W]` → (4 backbone maps, `PixelDecoderOutput`)."""
        features = backbone_feature_maps(self.encoder, pixel_values)
        return features, self.decoder(features, output_hidden_states=output_hidden_states)


def build_transformer_module(config: SeriesMask2FormerConfig, video: bool = False) -> MaskedAttentionTransformerModule:
    """The masked-attention decoder of a (video) Mask2Former config."""
    return MaskedAttentionTransformerModule(
        in_channels=config.feature_size,
        hidden_dim=config.hidden_dim,
        num_queries=config.num_queries,
        num_layers=config.decoder_layers - 1,
        num_heads=config.num_attention_heads,
        dim_feedforward=config.dim_feedforward,
        mask_feature_size=config.mask_feature_size,
        dropout=config.dropout,
        pre_norm=config.pre_norm,
        enforce_input_projection=config.enforce_input_projection,
        video=video,
    )


def run_mask2former(
    pixel_level_module: SeriesMask2FormerPixelLevelModule,
    transformer_module: MaskedAttentionTransformerModule,
    frames: torch.Tensor,
    num_frames: int,
    output_hidden_states: bool,
    output_attentions: bool,
) -> SeriesSegmentationModelOutput:
    """Backbone → pixel decoder → masked-attention decoder on `frames [batch * num_frames, 3, H, W]` (images:
    `num_frames=1`; videos: the frames of a video are consecutive and decoded jointly)."""
    features, pixel_decoder_output = pixel_level_module(frames, output_hidden_states)
    decoder_output = transformer_module(
        pixel_decoder_output.multi_scale_features,
        pixel_decoder_output.mask_features,
        num_frames=num_frames,
        output_hidden_states=output_hidden_states,
        output_attentions=output_attentions,
    )
    return segmentation_model_output(
        features, pixel_decoder_output.mask_features, pixel_decoder_output.multi_scale_features, decoder_output,
        output_hidden_states, output_attentions,
    )


class SeriesMask2FormerPreTrainedModel(HubKernelsMixin, PreTrainedModel):
    config_class = SeriesMask2FormerConfig
    config: SeriesMask2FormerConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["MaskedAttentionDecoderLayer"]
    supports_gradient_checkpointing = True  # decoder and deformable encoder layers (and the backbone's own)

    def post_init(self) -> None:
        super().post_init()
        # before each forward: use the Hub deformable-attention kernel on CUDA unless turned off (kernel_loading.py)
        self.register_forward_pre_hook(kernel_forward_pre_hook)
        use_onednn_layers(self)  # float32 CPU inference through oneDNN (onednn_layers.py)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialisation of the original implementation (only touches parameters not loaded from a checkpoint)."""
        xavier_std = self.config.init_xavier_std
        if isinstance(module, DeformableAttentionLayer):
            init.constant_(module.sampling_offsets.weight, 0.0)
            thetas = torch.arange(module.n_heads, dtype=torch.float32) * (2.0 * math.pi / module.n_heads)
            grid = torch.stack([thetas.cos(), thetas.sin()], -1)
            grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(module.n_heads, 1, 1, 2)
            grid = grid.repeat(1, module.n_levels, module.n_points, 1)
            grid = grid * torch.arange(1, module.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
            init.copy_(module.sampling_offsets.bias, grid.flatten())
            init.constant_(module.attention_weights.weight, 0.0)
            init.constant_(module.attention_weights.bias, 0.0)
            for projection in (module.value_proj, module.output_proj):
                init.xavier_uniform_(projection.weight)
                init.constant_(projection.bias, 0.0)
        elif isinstance(module, MaskedAttentionDecoderLayer):
            for parameter in module.parameters():
                if parameter.dim() > 1:
                    init.xavier_uniform_(parameter, gain=xavier_std)
            init.zeros_(module.cross_attn.in_proj_bias)
        elif isinstance(module, MSDeformAttnPixelDecoder):
            init.normal_(module.level_embed, std=1.0)
            for projection in module.input_projections:
                init.xavier_uniform_(projection[0].weight, gain=1.0)
                init.constant_(projection[0].bias, 0.0)
        elif isinstance(module, MaskedAttentionTransformerModule):
            for projection in module.input_projections:
                if isinstance(projection, nn.Conv2d):
                    init.xavier_uniform_(projection.weight, gain=xavier_std)
                    init.constant_(projection.bias, 0.0)
        elif not init_shared_weights(module, self.config.no_object_weight):
            super()._init_weights(module)


class SeriesMask2FormerModel(SeriesMask2FormerPreTrainedModel):
    """Mask2Former without the class head: per-layer query states and mask logits."""

    def __init__(self, config: SeriesMask2FormerConfig):
        super().__init__(config)
        self.pixel_level_module = SeriesMask2FormerPixelLevelModule(config)
        self.transformer_module = build_transformer_module(config)
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
            pixel_mask: `[batch, H, W]`, 1 on real pixels (checked; the network ignores padding like the original).

        Returns:
            `SeriesSegmentationModelOutput`.
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return_dict = self.config.return_dict if return_dict is None else return_dict
        validate_pixel_values(pixel_values, getattr(self.config.backbone_config, "num_channels", 3))
        validate_pixel_mask(pixel_mask, pixel_values)
        output = run_mask2former(
            self.pixel_level_module, self.transformer_module, pixel_values, 1, output_hidden_states, output_attentions
        )
        return output if return_dict else output.to_tuple()


class SeriesMask2FormerForUniversalSegmentation(SeriesMask2FormerPreTrainedModel):
    """Mask2Former with the class head and the loss: semantic, instance and panoptic segmentation."""

    def __init__(self, config: SeriesMask2FormerConfig):
        super().__init__(config)
        self.model = SeriesMask2FormerModel(config)
        self.class_predictor = nn.Linear(config.hidden_dim, config.num_labels + 1)
        self.criterion = build_criterion(
            config, class_weight=config.class_weight, cost_class=config.class_weight,
            num_points=config.train_num_points,
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        mask_labels: list[torch.Tensor] | None = None,
        class_labels: list[torch.Tensor] | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_auxiliary_logits: bool | None = None,
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
            output_auxiliary_logits: return the earlier layers' predictions (default: config).

        Returns:
            `SeriesUniversalSegmentationOutput`: `class_queries_logits [batch, queries, num_labels + 1]`,
            `masks_queries_logits [batch, queries, H/4, W/4]`, `image_sizes` and `padded_image_size` `[batch, 2]`;
            `loss` when targets are given.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        validate_targets(mask_labels, class_labels, pixel_values, self.config.num_labels)
        outputs = self.model(
            pixel_values,
            pixel_mask=pixel_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        class_logits = [self.class_predictor(states) for states in outputs.transformer_decoder_intermediate_states]
        output = universal_segmentation_output(
            SeriesUniversalSegmentationOutput, outputs, class_logits, list(outputs.masks_queries_logits),
            criterion=self.criterion, config=self.config, mask_labels=mask_labels, class_labels=class_labels,
            output_auxiliary_logits=wants_auxiliary_logits(self.config, output_auxiliary_logits),
            pixel_values=pixel_values, pixel_mask=pixel_mask,
        )
        return output if return_dict else output.to_tuple()
