"""Output dataclasses of the three model families (field names follow transformers') and of their transformer
decoders, plus the input geometry every head output carries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class TransformerDecoderOutput:
    """Output of the query decoders (`MaskedAttentionTransformerModule`, `DetrTransformerModule`).

    Attributes:
        intermediate_hidden_states: the LayerNorm-ed query states `[batch, queries, hidden]` of every prediction
            step (the class head's input), last = final.
        last_hidden_state: `[batch, queries, hidden]`, the decoder's final state.
        hidden_states: the un-normalised query states `[batch, queries, hidden]`, the decoder's input first, then
            each layer's output (Mask2Former: only when requested).
        attentions: per layer, the self-attention probabilities `[batch, heads, queries, queries]`, when requested.
        cross_attentions: per layer, the cross-attention probabilities `[batch, heads, queries, memory]`, when
            requested.
        masks_queries_logits: Mask2Former: the mask logits of every prediction step.
    """

    intermediate_hidden_states: list[torch.Tensor]
    last_hidden_state: torch.Tensor
    hidden_states: list[torch.Tensor] | None = None
    attentions: list[torch.Tensor] | None = None
    cross_attentions: list[torch.Tensor] | None = None
    masks_queries_logits: list[torch.Tensor] | None = None


@dataclass
class SeriesSegmentationModelOutput(ModelOutput):
    """Output of the base models (no class head).

    Attributes:
        encoder_last_hidden_state: the backbone's coarsest map `[batch(·frames), C, H/32, W/32]`.
        pixel_decoder_last_hidden_state: the mask features `[batch(·frames), mask_feature_size, H/4, W/4]`.
        transformer_decoder_last_hidden_state: the last decoder layer's query states `[batch, queries, hidden]`.
        transformer_decoder_intermediate_states: LayerNorm-ed query states of every prediction step
            (`[batch, queries, hidden]` each), input of the class head.
        masks_queries_logits: Mask2Former: mask logits of every prediction step `[batch, queries, (frames,) H/4,
            W/4]`.
        encoder_hidden_states: the 4 backbone maps `[batch(·frames), C_i, H/s_i, W/s_i]`, finest first, when
            `output_hidden_states`.
        pixel_decoder_hidden_states: the pixel decoder's maps, coarse first, when `output_hidden_states`
            (Mask2Former: the 3 multi-scale maps /32, /16, /8; MaskFormer: the 4 FPN maps /32 ... /4).
        transformer_decoder_hidden_states: un-normalised query states `[batch, queries, hidden]`, the decoder's
            input first, then one per layer, when `output_hidden_states`.
        hidden_states: MaskFormer: `encoder_hidden_states + pixel_decoder_hidden_states +
            transformer_decoder_hidden_states` (as transformers' MaskFormer), when `output_hidden_states`.
        attentions: per decoder layer, the self-attention probabilities `[batch, heads, queries, queries]`, when
            `output_attentions` (as transformers).
        cross_attentions: per decoder layer, the cross-attention probabilities `[batch, heads, queries, memory]`
            (memory = the attended level's `h * w`, videos `frames * h * w`), when `output_attentions`.
    """

    encoder_last_hidden_state: torch.FloatTensor | None = None
    pixel_decoder_last_hidden_state: torch.FloatTensor | None = None
    transformer_decoder_last_hidden_state: torch.FloatTensor | None = None
    transformer_decoder_intermediate_states: tuple[torch.FloatTensor, ...] | None = None
    masks_queries_logits: tuple[torch.FloatTensor, ...] | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


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
        padded_image_size: `[batch, 2]` the padded input's (height, width), the same in every row (one row per
            image, so batched outputs split per image).
        The other fields are the base model's (`SeriesSegmentationModelOutput`).
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
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SeriesVideoInstanceSegmentationOutput(SeriesUniversalSegmentationOutput):
    """Output of [`SeriesVideoMask2FormerForVideoInstanceSegmentation`].

    The fields of `SeriesUniversalSegmentationOutput` with video shapes (`masks_queries_logits
    [batch, queries, frames, H/4, W/4]`, `image_sizes` and `padded_image_size` `[batch, 2]` per video), plus:

    Attributes:
        query_embeddings: `[batch, queries, hidden]`, the LayerNorm-ed final query states (input of the class
            and mask heads); windowed inference associates the queries of consecutive clips with them.
    """

    query_embeddings: torch.FloatTensor | None = None


def input_geometry(pixel_mask: torch.Tensor | None, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """`image_sizes` and `padded_image_size`, both `[batch, 2]` (height, width).

    Args:
        pixel_mask: `[batch, H, W]`, 1 on real pixels (a validated mask), or None (every image fills the input).
        pixel_values: `[batch, ..., H, W]`.

    The valid region of an image is the top-left rectangle its mask covers (padding is added bottom/right).
    """
    batch, height, width = pixel_values.shape[0], pixel_values.shape[-2], pixel_values.shape[-1]
    padded = torch.tensor([[height, width]], device=pixel_values.device).repeat(batch, 1)
    if pixel_mask is None:
        return {"image_sizes": padded.clone(), "padded_image_size": padded}
    valid = pixel_mask.bool()
    image_sizes = torch.stack((valid.any(dim=-1).sum(-1), valid.any(dim=-2).sum(-1)), dim=-1)
    return {"image_sizes": image_sizes, "padded_image_size": padded}
