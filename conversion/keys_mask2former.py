"""Name mapping of the image Mask2Former: detectron2 checkpoint names -> `SeriesMask2FormerForUniversalSegmentation`.

Our state-dict keys equal transformers' `Mask2FormerForUniversalSegmentation` for every part transformers has.

- pixel decoder `sem_seg_head.pixel_decoder.X` -> `model.pixel_level_module.decoder.Y` (`input_proj` ->
  `input_projections`, `transformer.level_embed` -> `level_embed`, encoder `norm1/linear1/linear2/norm2` ->
  `self_attn_layer_norm/fc1/fc2/final_layer_norm`, `mask_features` -> `mask_projection`, `adapter_i` / `layer_i`
  conv + `.norm` -> `.0` / `.1`);
- predictor `sem_seg_head.predictor.X` -> `model.transformer_module.Y` (fused self-attention `in_proj` split into
  q/k/v, cross-attention kept fused, `static_query` or `query_feat` -> `queries_features`, `class_embed` ->
  the top-level `class_predictor`, `mask_embed.layers.i` -> `decoder.mask_predictor.mask_embedder.i.0`);
- `criterion.empty_weight` is kept as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .keys_backbones import convert_backbone

PIXEL_DECODER_IN = "sem_seg_head.pixel_decoder."
PREDICTOR_IN = "sem_seg_head.predictor."
PIXEL_DECODER_OUT = "model.pixel_level_module.decoder."
TRANSFORMER_OUT = "model.transformer_module."


def _split_in_projection(prefix: str, leaf: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """`in_proj_weight [3C, C]` / `in_proj_bias [3C]` (rows q, k, v) -> `{q,k,v}_proj.{weight,bias}`."""
    kind = "weight" if leaf == "in_proj_weight" else "bias"
    return {
        f"{prefix}{name}_proj.{kind}": part.clone() for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0))
    }


def convert_msdeformattn_pixel_decoder(
    original: Mapping[str, torch.Tensor], prefix_in: str = PIXEL_DECODER_IN, prefix_out: str = PIXEL_DECODER_OUT
) -> dict[str, torch.Tensor]:
    """Rename the `MSDeformAttnPixelDecoder` weights under `prefix_in` (keys elsewhere are ignored).

    Raises:
        ValueError: a key under `prefix_in` that the deformable pixel decoder does not have.
    """
    encoder_names = {"norm1": "self_attn_layer_norm", "linear1": "fc1", "linear2": "fc2", "norm2": "final_layer_norm"}
    converted: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        if not key.startswith(prefix_in):
            continue
        name = key[len(prefix_in) :]
        if match := re.fullmatch(r"input_proj\.(\d+)\.([01])\.(weight|bias)", name):
            converted[prefix_out + f"input_projections.{match[1]}.{match[2]}.{match[3]}"] = value
        elif name == "transformer.level_embed":
            converted[prefix_out + "level_embed"] = value
        elif match := re.fullmatch(r"transformer\.encoder\.layers\.(\d+)\.(\w+)\.(.+)", name):
            layer = prefix_out + f"encoder.layers.{match[1]}."
            if match[2] == "self_attn":
                converted[layer + "self_attn." + match[3]] = value
            elif match[2] in encoder_names:
                converted[layer + encoder_names[match[2]] + "." + match[3]] = value
            else:
                raise ValueError(f"unexpected pixel-decoder encoder weight {key!r}")
        elif match := re.fullmatch(r"mask_features\.(weight|bias)", name):
            converted[prefix_out + "mask_projection." + match[1]] = value
        elif match := re.fullmatch(r"((?:adapter|layer)_\d+)\.(weight|bias|norm\.weight|norm\.bias)", name):
            leaf = match[2]
            index = "1." + leaf[5:] if leaf.startswith("norm.") else "0." + leaf
            converted[prefix_out + f"{match[1]}.{index}"] = value
        else:
            raise ValueError(f"unexpected MSDeformAttn pixel-decoder weight {key!r}")
    if not converted:
        raise ValueError(f"no pixel-decoder weights found under {prefix_in!r}")
    return converted


def convert_masked_attention_decoder(
    original: Mapping[str, torch.Tensor],
    prefix_in: str = PREDICTOR_IN,
    prefix_out: str = TRANSFORMER_OUT,
    class_predictor_out: str = "class_predictor.",
) -> dict[str, torch.Tensor]:
    """Rename the `MultiScaleMaskedTransformerDecoder` (or the video decoder, same names) weights under
    `prefix_in`. The queries may be named `static_query` (released image files) or `query_feat`; giving both is an
    error.

    Raises:
        ValueError: a key under `prefix_in` that the masked-attention decoder does not have, or both query names.
    """
    converted: dict[str, torch.Tensor] = {}
    ffn_names = {"linear1": "fc1", "linear2": "fc2", "norm": "final_layer_norm"}
    for key, value in original.items():
        if not key.startswith(prefix_in):
            continue
        name = key[len(prefix_in) :]
        if match := re.fullmatch(r"transformer_self_attention_layers\.(\d+)\.(.+)", name):
            layer = prefix_out + f"decoder.layers.{match[1]}."
            rest = match[2]
            if rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
                converted.update(_split_in_projection(layer + "self_attn.", rest.split(".")[1], value))
            elif rest.startswith("self_attn.out_proj."):
                converted[layer + rest] = value
            elif rest.startswith("norm."):
                converted[layer + "self_attn_layer_norm." + rest[5:]] = value
            else:
                raise ValueError(f"unexpected decoder self-attention weight {key!r}")
        elif match := re.fullmatch(r"transformer_cross_attention_layers\.(\d+)\.(.+)", name):
            layer = prefix_out + f"decoder.layers.{match[1]}."
            rest = match[2]
            if rest.startswith("multihead_attn."):
                converted[layer + "cross_attn." + rest[len("multihead_attn.") :]] = value
            elif rest.startswith("norm."):
                converted[layer + "cross_attn_layer_norm." + rest[5:]] = value
            else:
                raise ValueError(f"unexpected decoder cross-attention weight {key!r}")
        elif match := re.fullmatch(r"transformer_ffn_layers\.(\d+)\.(linear1|linear2|norm)\.(weight|bias)", name):
            converted[prefix_out + f"decoder.layers.{match[1]}.{ffn_names[match[2]]}.{match[3]}"] = value
        elif match := re.fullmatch(r"decoder_norm\.(weight|bias)", name):
            converted[prefix_out + "decoder.layernorm." + match[1]] = value
        elif name in ("static_query.weight", "query_feat.weight"):
            target = prefix_out + "queries_features.weight"
            if target in converted:
                raise ValueError("the checkpoint has both static_query and query_feat: which one is the model's?")
            converted[target] = value
        elif name == "query_embed.weight":
            converted[prefix_out + "queries_embedder.weight"] = value
        elif name == "level_embed.weight":
            converted[prefix_out + "level_embed.weight"] = value
        elif match := re.fullmatch(r"input_proj\.(\d+)\.(weight|bias)", name):
            converted[prefix_out + f"input_projections.{match[1]}.{match[2]}"] = value
        elif match := re.fullmatch(r"class_embed\.(weight|bias)", name):
            converted[class_predictor_out + match[1]] = value
        elif match := re.fullmatch(r"mask_embed\.layers\.(\d+)\.(weight|bias)", name):
            converted[prefix_out + f"decoder.mask_predictor.mask_embedder.{match[1]}.0.{match[2]}"] = value
        else:
            raise ValueError(f"unexpected masked-attention decoder weight {key!r}")
    if not converted:
        raise ValueError(f"no transformer-decoder weights found under {prefix_in!r}")
    return converted


def convert_mask2former_state_dict(
    original: Mapping[str, torch.Tensor], cfg: Mapping[str, Any], backbone_naming: str = "swin"
) -> dict[str, torch.Tensor]:
    """Convert a whole image Mask2Former checkpoint (`backbone.*`, `sem_seg_head.*`, `criterion.empty_weight`).

    Raises:
        ValueError: a key outside the known prefixes (with the list of such keys).
    """
    known = ("backbone.", PIXEL_DECODER_IN, PREDICTOR_IN, "criterion.empty_weight")
    unknown = sorted(key for key in original if not key.startswith(known))
    if unknown:
        raise ValueError(f"unexpected keys in the Mask2Former checkpoint: {unknown[:10]}")
    converted = convert_backbone(original, cfg, naming=backbone_naming)
    converted.update(convert_msdeformattn_pixel_decoder(original))
    converted.update(convert_masked_attention_decoder(original))
    if "criterion.empty_weight" in original:
        converted["criterion.empty_weight"] = original["criterion.empty_weight"]
    return converted
