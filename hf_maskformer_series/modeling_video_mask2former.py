"""The video Mask2Former: the image model's backbone and pixel decoder on every frame, a space-time decoder.

As the original (`mask2former_video`): the backbone and the deformable pixel decoder see the `batch × frames`
frames as independent images; the masked-attention decoder (3-D sine positions, memories of `frames × h × w`
tokens per level) predicts one class and one mask *tube* `[frames, H/4, W/4]` per query and video. Module and
parameter names are those of the image model, so an image Mask2Former checkpoint initialises it.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_video_mask2former import SeriesVideoMask2FormerConfig
from .modeling_common import build_criterion, universal_segmentation_output, wants_auxiliary_logits
from .modeling_mask2former import (
    SeriesMask2FormerPixelLevelModule,
    SeriesMask2FormerPreTrainedModel,
    build_transformer_module,
    run_mask2former,
)
from .modeling_outputs import SeriesSegmentationModelOutput, SeriesVideoInstanceSegmentationOutput
from .validation import validate_pixel_mask, validate_pixel_values, validate_targets

__all__ = [
    "SeriesVideoInstanceSegmentationOutput",  # defined in modeling_outputs, importable from here too
    "SeriesVideoMask2FormerForVideoInstanceSegmentation",
    "SeriesVideoMask2FormerModel",
    "SeriesVideoMask2FormerPreTrainedModel",
]


class SeriesVideoMask2FormerPreTrainedModel(SeriesMask2FormerPreTrainedModel):
    config_class = SeriesVideoMask2FormerConfig
    config: SeriesVideoMask2FormerConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video",)


class SeriesVideoMask2FormerModel(SeriesVideoMask2FormerPreTrainedModel):
    """Video Mask2Former without the class head: per-layer query states and mask tubes."""

    def __init__(self, config: SeriesVideoMask2FormerConfig):
        super().__init__(config)
        self.pixel_level_module = SeriesMask2FormerPixelLevelModule(config)
        self.transformer_module = build_transformer_module(config, video=True)
        self.post_init()

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SeriesSegmentationModelOutput | tuple:
        """
        Args:
            pixel_values_videos: `[batch, frames, 3, H, W]`, normalised, padded bottom/right (all frames of a
                video have the same size).
            pixel_mask: `[batch, H, W]` (or `[batch, frames, H, W]`), 1 on real pixels; the model ignores
                padding like the original.

        Returns:
            `SeriesSegmentationModelOutput`; `masks_queries_logits` are `[batch, queries, frames, H/4, W/4]`,
            `pixel_decoder_last_hidden_state` is `[batch * frames, mask_feature_size, H/4, W/4]`.
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return_dict = self.config.return_dict if return_dict is None else return_dict
        validate_pixel_values(pixel_values_videos, getattr(self.config.backbone_config, "num_channels", 3), video=True)
        validate_pixel_mask(pixel_mask, pixel_values_videos, video=True)
        num_frames = pixel_values_videos.shape[1]
        if num_frames < 1:
            raise ValueError(f"pixel_values_videos has no frames: shape {tuple(pixel_values_videos.shape)}")
        frames = pixel_values_videos.flatten(0, 1)  # video-major: v0f0, v0f1, ..., v1f0, ...
        output = run_mask2former(
            self.pixel_level_module, self.transformer_module, frames, num_frames, output_hidden_states, output_attentions
        )
        return output if return_dict else output.to_tuple()


class SeriesVideoMask2FormerForVideoInstanceSegmentation(SeriesVideoMask2FormerPreTrainedModel):
    """Video Mask2Former with the class head and the video set loss (video instance segmentation)."""

    def __init__(self, config: SeriesVideoMask2FormerConfig):
        super().__init__(config)
        self.model = SeriesVideoMask2FormerModel(config)
        self.class_predictor = nn.Linear(config.hidden_dim, config.num_labels + 1)
        self.criterion = build_criterion(
            config, class_weight=config.class_weight, cost_class=config.class_weight,
            num_points=config.train_num_points,
        )
        self.post_init()

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        mask_labels: list[torch.Tensor] | None = None,
        class_labels: list[torch.Tensor] | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_auxiliary_logits: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SeriesVideoInstanceSegmentationOutput | tuple:
        """
        Args:
            pixel_values_videos: `[batch, frames, 3, H, W]`.
            mask_labels: per video `[instances, frames, H, W]` binary masks at the input resolution, padded like
                the frames; an instance absent from a frame has an empty mask there (training). Or the lean form: an
                integer `[frames, H, W]` segment map (value `j` = instance `j`, `-1` = none); same losses.
            class_labels: per video `[instances]` class ids in `[0, num_labels)` (training).
            pixel_mask: `[batch, H, W]` (or `[batch, frames, H, W]`), 1 on real pixels.
            output_auxiliary_logits: return the earlier layers' predictions (default: config).

        Returns:
            `SeriesVideoInstanceSegmentationOutput`; `loss` and `loss_dict` when targets are given. `num_masks`
            of the loss is the number of instances (not × frames).
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        validate_targets(mask_labels, class_labels, pixel_values_videos, self.config.num_labels, video=True)
        frame_pixel_mask = validate_pixel_mask(pixel_mask, pixel_values_videos, video=True)
        outputs = self.model(
            pixel_values_videos,
            pixel_mask=frame_pixel_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        class_logits = [self.class_predictor(states) for states in outputs.transformer_decoder_intermediate_states]
        output = universal_segmentation_output(
            SeriesVideoInstanceSegmentationOutput, outputs, class_logits, list(outputs.masks_queries_logits),
            criterion=self.criterion, config=self.config, mask_labels=mask_labels, class_labels=class_labels,
            output_auxiliary_logits=wants_auxiliary_logits(self.config, output_auxiliary_logits),
            pixel_values=pixel_values_videos, pixel_mask=frame_pixel_mask,
            query_embeddings=outputs.transformer_decoder_intermediate_states[-1],
        )
        return output if return_dict else output.to_tuple()
