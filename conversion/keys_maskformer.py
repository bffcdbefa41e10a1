"""Name mapping of MaskFormer v1: detectron2 checkpoint names -> `SeriesMaskFormerForInstanceSegmentation`.

Our state-dict keys equal transformers' `MaskFormerForInstanceSegmentation` for every part transformers has.

- pixel decoder `sem_seg_head.[pixel_decoder.]X` (released v1 `.pkl` files have no `pixel_decoder.` segment; both
  are accepted) -> `model.pixel_level_module.decoder.Y`: `layer_4` -> `fpn.stem.{0,1}`, `adapter_{3,2,1}` /
  `layer_{3,2,1}` -> `fpn.layers.{0,1,2}.proj` / `.block` (conv -> `.0`, `.norm` -> `.1`), `mask_features` ->
  `mask_projection`; transformer-encoder pixel decoder: `input_proj` -> `input_projection`,
  `transformer.encoder.layers.i.{self_attn, linear1, linear2, norm1, norm2}` -> `transformer_encoder.layers.i.
  {self_attn.{q,k,v,out}_proj, fc1, fc2, self_attn_layer_norm, final_layer_norm}`, `transformer.encoder.norm`
  (pre-norm only) -> `transformer_encoder.layernorm`;
- predictor `sem_seg_head.predictor.X` -> `model.transformer_module.Y`: `transformer.decoder.layers.i.{self_attn,
  multihead_attn, linear1, linear2, norm1, norm2, norm3}` -> `decoder.layers.i.{self_attn, encoder_attn, fc1, fc2,
  self_attn_layer_norm, encoder_attn_layer_norm, final_layer_norm}` (fused `in_proj` split into q/k/v), `transformer.decoder.norm` -> `decoder.layernorm`, `query_embed` -> `queries_embedder`,
  `input_proj` -> `input_projection`; `class_embed` -> top-level `class_predictor`, `mask_embed.layers.i` ->
  top-level `mask_embedder.i.0`;
- backbone through `keys_backbones` (Swin as transformers' `MaskFormerSwinBackbone` by default, or ResNet);
- `criterion.empty_weight` is kept as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .keys_backbones import convert_resnet_backbone, convert_swin_backbone

HEAD_IN = "sem_seg_head."
PREDICTOR_IN = "sem_seg_head.predictor."
PIXEL_DECODER_OUT = "model.pixel_level_module.decoder."
TRANSFORMER_OUT = "model.transformer_module."

_ATTENTION_LEAVES = {"out_proj.weight": "out_proj.weight", "out_proj.bias": "out_proj.bias"}
_ENCODER_LAYER_NAMES = {
    "linear1": "fc1",
    "linear2": "fc2",
    "norm1": "self_attn_layer_norm",
    "norm2": "final_layer_norm",
}
_DECODER_LAYER_NAMES = {
    "linear1": "fc1",
    "linear2": "fc2",
    "norm1": "self_attn_layer_norm",
    "norm2": "encoder_attn_layer_norm",
    "norm3": "final_layer_norm",
}
_FPN_LEVELS = {"4": "fpn.stem.", "3": "fpn.layers.0.", "2": "fpn.layers.1.", "1": "fpn.layers.2."}


def _attention(prefix_out: str, leaf: str, value: torch.Tensor, key: str) -> dict[str, torch.Tensor]:
    """`nn.MultiheadAttention` weights -> `{q,k,v,out}_proj`; `in_proj_*` rows are q, k, v."""
    if leaf in ("in_proj_weight", "in_proj_bias"):
        kind = "weight" if leaf == "in_proj_weight" else "bias"
        return {
            f"{prefix_out}{name}_proj.{kind}": part.clone() for name, part in zip("qkv", value.chunk(3, dim=0))
        }
    if leaf in _ATTENTION_LEAVES:
        return {prefix_out + _ATTENTION_LEAVES[leaf]: value}
    raise ValueError(f"unexpected attention weight {key!r}")


def _transformer_layer(prefix_out: str, rest: str, value: torch.Tensor, key: str,
                       names: Mapping[str, str], attentions: Mapping[str, str]) -> dict[str, torch.Tensor]:
    module, _, leaf = rest.partition(".")
    if module in attentions:
        return _attention(prefix_out + attentions[module] + ".", leaf, value, key)
    if module in names and leaf in ("weight", "bias"):
        return {prefix_out + names[module] + "." + leaf: value}
    raise ValueError(f"unexpected transformer layer weight {key!r}")


def convert_maskformer_pixel_decoder(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert the pixel-decoder weights (`sem_seg_head.*` outside `predictor.`, with or without `pixel_decoder.`)."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        if not key.startswith(HEAD_IN) or key.startswith(PREDICTOR_IN):
            continue
        name = key[len(HEAD_IN) :]
        if name.startswith("pixel_decoder."):
            name = name[len("pixel_decoder.") :]
        if match := re.fullmatch(r"(layer|adapter)_([1-4])\.(weight|norm\.weight|norm\.bias)", name):
            kind, level, leaf = match.groups()
            if kind == "adapter" and level == "4":
                raise ValueError(f"unexpected pixel-decoder weight {key!r}")
            module = PIXEL_DECODER_OUT + _FPN_LEVELS[level]
            if level != "4":
                module += "block." if kind == "layer" else "proj."
            converted[module + ("0.weight" if leaf == "weight" else "1." + leaf.split(".")[1])] = value
        elif match := re.fullmatch(r"mask_features\.(weight|bias)", name):
            converted[PIXEL_DECODER_OUT + "mask_projection." + match[1]] = value
        elif match := re.fullmatch(r"input_proj\.(weight|bias)", name):
            converted[PIXEL_DECODER_OUT + "input_projection." + match[1]] = value
        elif match := re.fullmatch(r"transformer\.encoder\.layers\.(\d+)\.(.+)", name):
            prefix = PIXEL_DECODER_OUT + f"transformer_encoder.layers.{match[1]}."
            converted.update(
                _transformer_layer(prefix, match[2], value, key, _ENCODER_LAYER_NAMES, {"self_attn": "self_attn"})
            )
        elif match := re.fullmatch(r"transformer\.encoder\.norm\.(weight|bias)", name):
            converted[PIXEL_DECODER_OUT + "transformer_encoder.layernorm." + match[1]] = value
        else:
            raise ValueError(f"unexpected pixel-decoder weight {key!r}")
    if not converted:
        raise ValueError(f"no pixel-decoder weights found under {HEAD_IN!r}")
    return converted


def convert_maskformer_predictor(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert the `TransformerPredictor` weights (`sem_seg_head.predictor.*`), heads included.

    Raises:
        ValueError: predictor-side transformer encoder layers (`ENC_LAYERS > 0`, used by no released model) or any
            other unknown key.
    """
    converted: dict[str, torch.Tensor] = {}
    attentions = {"self_attn": "self_attn", "multihead_attn": "encoder_attn"}
    for key, value in original.items():
        if not key.startswith(PREDICTOR_IN):
            continue
        name = key[len(PREDICTOR_IN) :]
        if match := re.fullmatch(r"transformer\.decoder\.layers\.(\d+)\.(.+)", name):
            prefix = TRANSFORMER_OUT + f"decoder.layers.{match[1]}."
            converted.update(_transformer_layer(prefix, match[2], value, key, _DECODER_LAYER_NAMES, attentions))
        elif match := re.fullmatch(r"transformer\.decoder\.norm\.(weight|bias)", name):
            converted[TRANSFORMER_OUT + "decoder.layernorm." + match[1]] = value
        elif name == "query_embed.weight":
            converted[TRANSFORMER_OUT + "queries_embedder.weight"] = value
        elif match := re.fullmatch(r"input_proj\.(weight|bias)", name):
            converted[TRANSFORMER_OUT + "input_projection." + match[1]] = value
        elif match := re.fullmatch(r"class_embed\.(weight|bias)", name):
            converted["class_predictor." + match[1]] = value
        elif match := re.fullmatch(r"mask_embed\.layers\.(\d+)\.(weight|bias)", name):
            converted[f"mask_embedder.{match[1]}.0.{match[2]}"] = value
        elif name.startswith("transformer.encoder."):
            raise ValueError(
                f"{key!r}: transformer encoder layers inside the predictor (MASK_FORMER.ENC_LAYERS > 0) are not "
                "supported"
            )
        else:
            raise ValueError(f"unexpected predictor weight {key!r}")
    if not converted:
        raise ValueError(f"no predictor weights found under {PREDICTOR_IN!r}")
    return converted


def convert_maskformer_state_dict(
    original: Mapping[str, torch.Tensor], backbone_naming: str = "maskformer_swin"
) -> dict[str, torch.Tensor]:
    """Convert a whole MaskFormer v1 checkpoint (`backbone.*`, `sem_seg_head.*`, `criterion.empty_weight`).

    The backbone kind is read from the keys: `backbone.patch_embed.*` is a D2 Swin (converted to `backbone_naming`:
    "maskformer_swin", our default for `swin` configs, or "swin" for `SwinBackbone`), `backbone.stem.*` a
    detectron2 ResNet.

    Raises:
        ValueError: a key outside the known prefixes, or a backbone that is neither Swin nor ResNet.
    """
    known = ("backbone.", HEAD_IN, "criterion.empty_weight")
    unknown = sorted(key for key in original if not key.startswith(known))
    if unknown:
        raise ValueError(f"unexpected keys in the MaskFormer checkpoint: {unknown[:10]}")
    if any(key.startswith("backbone.patch_embed.") for key in original):
        converted = convert_swin_backbone(original, naming=backbone_naming)
    elif any(key.startswith("backbone.stem.") for key in original):
        converted = convert_resnet_backbone(original)
    else:
        raise ValueError("the checkpoint's backbone is neither a D2 Swin (backbone.patch_embed.*) nor a detectron2 "
                         "ResNet (backbone.stem.*)")
    converted.update(convert_maskformer_pixel_decoder(original))
    converted.update(convert_maskformer_predictor(original))
    if "criterion.empty_weight" in original:
        converted["criterion.empty_weight"] = original["criterion.empty_weight"]
    return converted
