"""`ModelOutput` dataclasses shared by the three model families (field names follow transformers')."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class SeriesSegmentationModelOutput(ModelOutput):
    """Output of the base models (no class head).

    Attributes:
        encoder_last_hidden_state: the backbone's coarsest map `[batch, C, H/32, W/32]`.
        pixel_decoder_last_hidden_state: the mask features `[batch(·frames), mask_feature_size, H/4, W/4]`.
        transformer_decoder_last_hidden_state: the last decoder layer's query states `[batch, queries, hidden]`.
        transformer_decoder_intermediate_states: LayerNorm-ed query states of every prediction step
            (`[batch, queries, hidden]` each), input of the class head.
        masks_queries_logits: mask logits of every prediction step `[batch, queries, (frames,) H/4, W/4]`.
        encoder_hidden_states: the 4 backbone maps, when `output_hidden_states`.
        pixel_decoder_hidden_states: the pixel decoder's multi-scale maps, when `output_hidden_states`.
        transformer_decoder_hidden_states: un-normalised query states per layer, when `output_hidden_states`.
        attentions: per-layer attention probabilities, when `output_attentions`.
    """

    encoder_last_hidden_state: torch.FloatTensor | None = None
    pixel_decoder_last_hidden_state: torch.FloatTensor | None = None
    transformer_decoder_last_hidden_state: torch.FloatTensor | None = None
    transformer_decoder_intermediate_states: tuple[torch.FloatTensor, ...] | None = None
    masks_queries_logits: tuple[torch.FloatTensor, ...] | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple | None = None


@dataclass
class SeriesUniversalSegmentationOutput(ModelOutput):
    """Output of the universal-segmentation models.

    Attributes:
        loss: weighted total loss, when targets are given.
        loss_dict: the unweighted losses by name (`loss_cross_entropy`, `loss_mask`, `loss_dice`, `..._{i}`).
        class_queries_logits: `[batch, queries, num_labels + 1]`.
        masks_queries_logits: `[batch, queries, H/4, W/4]` (videos: `[batch, queries, frames, H/4, W/4]`).
        auxiliary_logits: earlier layers' `{"class_queries_logits", "masks_queries_logits"}`.
        image_sizes: `[batch, 2]` (height, width) of each un-padded image inside the padded input (from
            `pixel_mask`); post-processing crops the padding with it.
        padded_image_size: `[2]` the padded input's (height, width).
        The other fields are the base model's.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.FloatTensor] | None = None
    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    auxiliary_logits: list[dict[str, torch.FloatTensor]] | None = None
    image_sizes: torch.LongTensor | None = None
    padded_image_size: torch.LongTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    pixel_decoder_last_hidden_state: torch.FloatTensor | None = None
    transformer_decoder_last_hidden_state: torch.FloatTensor | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple | None = None


def image_sizes_from_pixel_mask(pixel_mask: torch.Tensor | None, pixel_values: torch.Tensor) -> torch.Tensor:
    """`[batch, 2]` (height, width) of the valid region of each image; the full size without a mask.

    The valid region is the top-left rectangle (padding is added bottom/right).
    """
    batch, height, width = pixel_values.shape[0], pixel_values.shape[-2], pixel_values.shape[-1]
    if pixel_mask is None:
        return torch.tensor([[height, width]], device=pixel_values.device).expand(batch, 2)
    valid = pixel_mask.bool()
    heights = valid.any(dim=-1).sum(-1)
    widths = valid.any(dim=-2).sum(-1)
    return torch.stack((heights, widths), dim=-1)
