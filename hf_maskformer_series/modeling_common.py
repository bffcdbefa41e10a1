"""PreTrainedModel glue shared by the three model families: criterion construction, weight initialisation,
auxiliary predictions, loss, and the assembly of the output dataclasses."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import initialization as init

from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .modeling_outputs import (
    SeriesSegmentationModelOutput,
    SeriesUniversalSegmentationOutput,
    TransformerDecoderOutput,
    input_geometry,
)


def build_criterion(config: Any, *, class_weight: float, cost_class: float, mask_loss: str = "point_sigmoid_ce",
                    num_points: int | None = None) -> SetCriterion:
    """The Hungarian matcher and set criterion from a config's loss settings.

    Args:
        config: a model config (`num_labels`, `mask_weight`, `dice_weight`, `no_object_weight`, point settings).
        class_weight: weight of the classification loss.
        cost_class: weight of the classification matching cost.
        mask_loss: "point_sigmoid_ce" (Mask2Former, point-sampled) or "focal" (MaskFormer, full masks).
        num_points: points for matching and mask losses (None: full masks).
    """
    matcher = HungarianMatcher(
        cost_class=cost_class,
        cost_mask=config.mask_weight,
        cost_dice=config.dice_weight,
        num_points=num_points,
        mask_cost="focal" if mask_loss == "focal" else "sigmoid_ce",
    )
    point_settings = {}
    if num_points is not None:
        point_settings = dict(num_points=num_points, oversample_ratio=config.oversample_ratio,
                              importance_sample_ratio=config.importance_sample_ratio)
    return SetCriterion(
        num_labels=config.num_labels,
        matcher=matcher,
        class_weight=class_weight,
        mask_weight=config.mask_weight,
        dice_weight=config.dice_weight,
        no_object_weight=config.no_object_weight,
        mask_loss=mask_loss,
        **point_settings,
    )


def init_shared_weights(module: nn.Module, no_object_weight: float, detectron2_convs: bool = False) -> bool:
    """Initialise the module kinds every family shares; the families' `_init_weights` call it after their own
    blocks. Returns False for a module it does not handle.

    - `SetCriterion.empty_weight`: `[1] * num_labels + [no_object_weight]` (a buffer: after
      `from_pretrained(..., num_labels=n, ignore_mismatched_sizes=True)` it is not loaded and must be rebuilt);
    - embeddings: N(0, 1); LayerNorm / GroupNorm: ones and zeros;
    - Linear and Conv2d outside the backbone: PyTorch's default (Kaiming-uniform, a=√5), or for convolutions with
      `detectron2_convs` detectron2's `c2_xavier_fill` (Kaiming-uniform, a=1, zero bias; MaskFormer's FPN).
    The backbone keeps its own scheme (modules marked `_in_backbone`).
    """
    if isinstance(module, SetCriterion):
        empty_weight = torch.ones(module.num_labels + 1)
        empty_weight[-1] = no_object_weight
        init.copy_(module.empty_weight, empty_weight)
    elif isinstance(module, nn.Embedding):
        init.normal_(module.weight, mean=0.0, std=1.0)
    elif getattr(module, "_in_backbone", False):
        return False
    elif isinstance(module, nn.Conv2d) and detectron2_convs:
        init.kaiming_uniform_(module.weight, a=1)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, (nn.Linear, nn.Conv2d)):
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(module.bias, -bound, bound)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    else:
        return False
    return True


def wants_auxiliary_logits(config: Any, output_auxiliary_logits: bool | None) -> bool:
    """The call's choice, else the config's `output_auxiliary_logits`, else `use_auxiliary_loss`."""
    if output_auxiliary_logits is not None:
        return output_auxiliary_logits
    if config.output_auxiliary_logits is not None:
        return config.output_auxiliary_logits
    return config.use_auxiliary_loss


def segmentation_model_output(
    features: list[torch.Tensor],
    mask_features: torch.Tensor,
    pixel_decoder_maps: list[torch.Tensor],
    decoder_output: TransformerDecoderOutput,
    output_hidden_states: bool,
    output_attentions: bool,
    combined_hidden_states: bool = False,
) -> SeriesSegmentationModelOutput:
    """Assemble a base model's output (hidden states and attentions only when requested).

    Args:
        features: the 4 backbone maps, finest first.
        mask_features: the per-pixel embeddings `[batch(·frames), mask_feature_size, H/4, W/4]`.
        pixel_decoder_maps: the pixel decoder's maps, coarse first.
        decoder_output: the query decoder's output.
        combined_hidden_states: also fill `hidden_states` (MaskFormer, as transformers).
    """
    encoder_states = pixel_states = decoder_states = combined = None
    if output_hidden_states:
        encoder_states, pixel_states = tuple(features), tuple(pixel_decoder_maps)
        decoder_states = tuple(decoder_output.hidden_states)
        combined = encoder_states + pixel_states + decoder_states if combined_hidden_states else None
    attentions = decoder_output.attentions if output_attentions else None
    cross_attentions = decoder_output.cross_attentions if output_attentions else None
    masks = decoder_output.masks_queries_logits
    return SeriesSegmentationModelOutput(
        encoder_last_hidden_state=features[-1],
        pixel_decoder_last_hidden_state=mask_features,
        transformer_decoder_last_hidden_state=decoder_output.last_hidden_state,
        transformer_decoder_intermediate_states=tuple(decoder_output.intermediate_hidden_states),
        masks_queries_logits=tuple(masks) if masks is not None else None,
        encoder_hidden_states=encoder_states,
        pixel_decoder_hidden_states=pixel_states,
        transformer_decoder_hidden_states=decoder_states,
        hidden_states=combined,
        attentions=tuple(attentions) if attentions is not None else None,
        cross_attentions=tuple(cross_attentions) if cross_attentions is not None else None,
    )


# the base model's fields a head output passes through unchanged
_PASSED_THROUGH = (
    "encoder_last_hidden_state", "pixel_decoder_last_hidden_state", "transformer_decoder_last_hidden_state",
    "encoder_hidden_states", "pixel_decoder_hidden_states", "transformer_decoder_hidden_states", "hidden_states",
    "attentions", "cross_attentions",
)


def universal_segmentation_output(
    output_class: type[SeriesUniversalSegmentationOutput],
    base_output: SeriesSegmentationModelOutput,
    class_logits: list[torch.Tensor],
    mask_logits: list[torch.Tensor],
    *,
    criterion: SetCriterion,
    config: Any,
    mask_labels: list[torch.Tensor] | None,
    class_labels: list[torch.Tensor] | None,
    output_auxiliary_logits: bool,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor | None,
    **extra_fields: Any,
) -> SeriesUniversalSegmentationOutput:
    """A head model's output: final and auxiliary predictions, the loss, the input geometry and the base model's
    fields.

    Args:
        output_class: `SeriesUniversalSegmentationOutput` or a subclass.
        base_output: the base model's output.
        class_logits: per prediction step `[batch, queries, num_labels + 1]`, last = final.
        mask_logits: per prediction step `[batch, queries, (frames,) H/4, W/4]`.
        mask_labels, class_labels: training targets (or None).
        output_auxiliary_logits: return the earlier steps' predictions.
        pixel_values: the input `[batch, ..., H, W]`; pixel_mask: its validated `[batch, H, W]` mask (or None).
        **extra_fields: further fields of `output_class`.
    """
    auxiliary_logits = [
        {"class_queries_logits": classes, "masks_queries_logits": masks}
        for classes, masks in zip(class_logits[:-1], mask_logits[:-1])
    ]
    loss = loss_dict = None
    if mask_labels is not None:
        loss_dict = criterion(
            class_logits[-1],
            mask_logits[-1],
            mask_labels,
            class_labels,
            auxiliary_logits if config.use_auxiliary_loss else None,
        )
        loss = criterion.weighted_sum(loss_dict)
    return output_class(
        loss=loss,
        loss_dict=loss_dict,
        class_queries_logits=class_logits[-1],
        masks_queries_logits=mask_logits[-1],
        auxiliary_logits=auxiliary_logits if output_auxiliary_logits else None,
        **input_geometry(pixel_mask, pixel_values),
        **{name: getattr(base_output, name) for name in _PASSED_THROUGH},
        **extra_fields,
    )
