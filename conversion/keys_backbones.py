"""Backbone name mapping: detectron2 `D2SwinTransformer` and detectron2 ResNet (FrozenBN) -> transformers backbones.

The converted names are those of the backbone as it sits inside our models (`prefix_out`, by default
`model.pixel_level_module.encoder.`): transformers' `SwinBackbone` (`naming="swin"`, the default) or
`MaskFormerSwinBackbone` (`naming="maskformer_swin"`), and transformers' `ResNetBackbone`.

Each `*_backbone_config` function builds the matching transformers backbone config from the original detectron2
config, given as the nested dict of the merged YAML (`{"MODEL": {"SWIN": {...}, "RESNETS": {...}}, ...}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from transformers import MaskFormerSwinConfig, PreTrainedConfig, ResNetConfig, SwinConfig

OUT_FEATURES = ["stage1", "stage2", "stage3", "stage4"]
RESNET_DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}

SWIN_BACKBONE_NAMES = {"D2SwinTransformer"}
RESNET_BACKBONE_NAMES = {"build_resnet_backbone"}


def _section(cfg: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Any = cfg
    for name in path:
        if not isinstance(node, Mapping) or name not in node:
            raise ValueError(f"the original config has no {'.'.join(path)} section")
        node = node[name]
    return node


def original_backbone_name(cfg: Mapping[str, Any]) -> str:
    """`MODEL.BACKBONE.NAME` of a detectron2 config (`D2SwinTransformer`, `build_resnet_backbone`)."""
    return str(_section(cfg, "MODEL", "BACKBONE")["NAME"])


# --------------------------------------------------------------------------------------------------------------- Swin


def _swin_arguments(cfg: Mapping[str, Any]) -> dict[str, Any]:
    swin = _section(cfg, "MODEL", "SWIN")
    if swin.get("APE", False):
        raise ValueError("MODEL.SWIN.APE=True (absolute position embedding) is not supported by the conversion")
    if not swin.get("PATCH_NORM", True):
        raise ValueError("MODEL.SWIN.PATCH_NORM=False is not supported: transformers' Swin always normalises patches")
    if swin.get("QK_SCALE") not in (None, "None"):
        raise ValueError(f"MODEL.SWIN.QK_SCALE={swin['QK_SCALE']} is not supported (only the default head_dim**-0.5)")
    out_features = list(swin.get("OUT_FEATURES", ["res2", "res3", "res4", "res5"]))
    if out_features != ["res2", "res3", "res4", "res5"]:
        raise ValueError(f"MODEL.SWIN.OUT_FEATURES must be res2..res5, got {out_features}")
    return {
        "image_size": int(swin.get("PRETRAIN_IMG_SIZE", 224)),
        "patch_size": int(swin.get("PATCH_SIZE", 4)),
        "embed_dim": int(swin["EMBED_DIM"]),
        "depths": [int(d) for d in swin["DEPTHS"]],
        "num_heads": [int(h) for h in swin["NUM_HEADS"]],
        "window_size": int(swin["WINDOW_SIZE"]),
        "mlp_ratio": float(swin.get("MLP_RATIO", 4.0)),
        "qkv_bias": bool(swin.get("QKV_BIAS", True)),
        "hidden_dropout_prob": float(swin.get("DROP_RATE", 0.0)),
        "attention_probs_dropout_prob": float(swin.get("ATTN_DROP_RATE", 0.0)),
        "drop_path_rate": float(swin.get("DROP_PATH_RATE", 0.3)),
        "use_absolute_embeddings": False,
        "out_features": list(OUT_FEATURES),
    }


def swin_backbone_config(cfg: Mapping[str, Any]) -> SwinConfig:
    """transformers `SwinConfig` (for `SwinBackbone`) equivalent to the original `MODEL.SWIN` section."""
    return SwinConfig(**_swin_arguments(cfg))


def maskformer_swin_backbone_config(cfg: Mapping[str, Any]) -> MaskFormerSwinConfig:
    """transformers `MaskFormerSwinConfig` (for `MaskFormerSwinBackbone`) equivalent to `MODEL.SWIN`."""
    return MaskFormerSwinConfig(**_swin_arguments(cfg))


_SWIN_BLOCK_NAMES = {
    "swin": {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.o_proj",
        "attn.relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    },
    "maskformer_swin": {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.output.dense",
        "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
        "attn.relative_position_index": "attention.self.relative_position_index",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    },
}
_SWIN_QKV_NAMES = {
    "swin": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
    "maskformer_swin": ("attention.self.query", "attention.self.key", "attention.self.value"),
}
_SWIN_ROOT = {"swin": "swin.", "maskformer_swin": "model."}


def _swin_output_norm_name(naming: str, index: int) -> str:
    return f"hidden_states_norms.stage{index + 1}" if naming == "swin" else f"hidden_states_norms.{index}"


def convert_swin_backbone(
    original: Mapping[str, torch.Tensor],
    prefix_in: str = "backbone.",
    prefix_out: str = "model.pixel_level_module.encoder.",
    naming: str = "swin",
) -> dict[str, torch.Tensor]:
    """Rename the `D2SwinTransformer` weights of `original` (keys starting with `prefix_in`) to transformers names.

    The fused `attn.qkv` ([3 * C, C], rows q, k, v) is split into three [C, C] projections; `relative_position_index`
    (a buffer transformers recomputes) is dropped for `naming="swin"` and kept for `naming="maskformer_swin"`
    (where it is a persistent buffer); `norm{i}` (LayerNorm on output i) becomes the backbone's hidden-state norm.
    Keys outside `prefix_in` are ignored.

    Raises:
        ValueError: unknown `naming`, or a key under `prefix_in` that is not part of a D2SwinTransformer.
    """
    if naming not in _SWIN_BLOCK_NAMES:
        raise ValueError(f"naming must be one of {sorted(_SWIN_BLOCK_NAMES)}, got {naming!r}")
    root = prefix_out + _SWIN_ROOT[naming]
    block_names = _SWIN_BLOCK_NAMES[naming]
    q_name, k_name, v_name = _SWIN_QKV_NAMES[naming]
    converted: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        if not key.startswith(prefix_in):
            continue
        name = key[len(prefix_in) :]
        if name.startswith("patch_embed.proj."):
            converted[root + "embeddings.patch_embeddings.projection." + name.rsplit(".", 1)[1]] = value
        elif name.startswith("patch_embed.norm."):
            converted[root + "embeddings.norm." + name.rsplit(".", 1)[1]] = value
        elif match := re.fullmatch(r"norm(\d)\.(weight|bias)", name):
            converted[prefix_out + _swin_output_norm_name(naming, int(match[1])) + "." + match[2]] = value
        elif match := re.fullmatch(r"layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)", name):
            converted[root + f"encoder.layers.{match[1]}.downsample.{match[2]}"] = value
        elif match := re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias|relative_\w+)", name):
            block = root + f"encoder.layers.{match[1]}.blocks.{match[2]}."
            module, leaf = match[3], match[4]
            if module == "attn" and leaf.startswith("relative_"):
                module, leaf = f"attn.{leaf}", ""
            if module == "attn.qkv":
                for part_name, part in zip((q_name, k_name, v_name), value.chunk(3, dim=0)):
                    converted[block + f"{part_name}.{leaf}"] = part.clone()
            elif module == "attn.relative_position_index" and naming == "swin":
                continue
            elif module in block_names:
                converted[block + block_names[module] + (f".{leaf}" if leaf else "")] = value
            else:
                raise ValueError(f"unexpected Swin block weight {key!r}")
        else:
            raise ValueError(f"unexpected Swin backbone weight {key!r}")
    if not converted:
        raise ValueError(f"no Swin backbone weights found under {prefix_in!r}")
    return converted


# ------------------------------------------------------------------------------------------------------------- ResNet


def resnet_backbone_config(cfg: Mapping[str, Any]) -> ResNetConfig:
    """transformers `ResNetConfig` (for `ResNetBackbone`) equivalent to the original `MODEL.RESNETS` section.

    depth -> per-stage block counts; STEM_OUT_CHANNELS -> `embedding_size`; RES2_OUT_CHANNELS * 2**i ->
    `hidden_sizes`; STRIDE_IN_1X1 -> `downsample_in_bottleneck`.

    Raises:
        ValueError: a variant transformers' ResNet cannot express (deeplab stem, dilation, deformable convs,
            groups, a bottleneck width other than a quarter of the output, a norm other than (Frozen)BN).
    """
    resnets = _section(cfg, "MODEL", "RESNETS")
    depth = int(resnets.get("DEPTH", 50))
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
    stem_type = str(resnets.get("STEM_TYPE", "basic"))
    if stem_type != "basic":
        raise ValueError(f"MODEL.RESNETS.STEM_TYPE={stem_type!r} is not supported (only the basic 7x7 stem)")
    if int(resnets.get("RES5_DILATION", 1)) != 1 or int(resnets.get("RES4_DILATION", 1)) != 1:
        raise ValueError("dilated ResNet stages (RES4/RES5_DILATION != 1) are not supported")
    if any(resnets.get("DEFORM_ON_PER_STAGE", [False] * 4)):
        raise ValueError("deformable ResNet convolutions (DEFORM_ON_PER_STAGE) are not supported")
    num_groups = int(resnets.get("NUM_GROUPS", 1))
    if num_groups != 1:
        raise ValueError(f"grouped (ResNeXt) convolutions are not supported, MODEL.RESNETS.NUM_GROUPS={num_groups}")
    norm = str(resnets.get("NORM", "FrozenBN"))
    if norm not in ("FrozenBN", "BN", "SyncBN"):
        raise ValueError(f"MODEL.RESNETS.NORM={norm!r} is not supported (FrozenBN, BN or SyncBN)")
    res2_out = int(resnets.get("RES2_OUT_CHANNELS", 256))
    bottleneck = int(resnets.get("WIDTH_PER_GROUP", 64)) * num_groups
    layer_type = "basic" if depth in (18, 34) else "bottleneck"
    if layer_type == "bottleneck" and res2_out != 4 * bottleneck:
        raise ValueError(
            f"the bottleneck width ({bottleneck}) must be a quarter of RES2_OUT_CHANNELS ({res2_out}) for "
            "transformers' ResNet"
        )
    out_features = list(resnets.get("OUT_FEATURES", ["res2", "res3", "res4", "res5"]))
    if out_features != ["res2", "res3", "res4", "res5"]:
        raise ValueError(f"MODEL.RESNETS.OUT_FEATURES must be res2..res5, got {out_features}")
    return ResNetConfig(
        embedding_size=int(resnets.get("STEM_OUT_CHANNELS", 64)),
        hidden_sizes=[res2_out * 2**i for i in range(4)],
        depths=list(RESNET_DEPTHS[depth]),
        layer_type=layer_type,
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=bool(resnets.get("STRIDE_IN_1X1", True)),
        out_features=list(OUT_FEATURES),
    )


_RESNET_NORM_LEAVES = ("weight", "bias", "running_mean", "running_var")


def convert_resnet_backbone(
    original: Mapping[str, torch.Tensor],
    prefix_in: str = "backbone.",
    prefix_out: str = "model.pixel_level_module.encoder.",
    add_num_batches_tracked: bool = True,
) -> dict[str, torch.Tensor]:
    """Rename detectron2 ResNet weights (`stem.conv1`, `res{2..5}.{b}.conv{1,2,3}`, `res{s}.0.shortcut`, each with
    a FrozenBN `.norm`) to transformers' `ResNetBackbone` names under `prefix_out`.

    FrozenBN has no `num_batches_tracked`; with `add_num_batches_tracked` a zero counter is added for every
    BatchNorm so the converted dict loads without missing keys. Keys outside `prefix_in` are ignored.

    Raises:
        ValueError: a key under `prefix_in` that is not part of a detectron2 ResNet (e.g. conv biases).
    """
    converted: dict[str, torch.Tensor] = {}
    norms: set[str] = set()
    for key, value in original.items():
        if not key.startswith(prefix_in):
            continue
        name = key[len(prefix_in) :]
        if match := re.fullmatch(r"stem\.conv1\.(weight|norm\.\w+)", name):
            module, leaf = prefix_out + "embedder.embedder.", match[1]
        elif match := re.fullmatch(r"res([2-5])\.(\d+)\.(conv[123]|shortcut)\.(weight|norm\.\w+)", name):
            layer = prefix_out + f"encoder.stages.{int(match[1]) - 2}.layers.{match[2]}."
            module = layer + ("shortcut." if match[3] == "shortcut" else f"layer.{int(match[3][-1]) - 1}.")
            leaf = match[4]
        else:
            raise ValueError(f"unexpected ResNet backbone weight {key!r}")
        if leaf == "weight":
            converted[module + "convolution.weight"] = value
        elif leaf.startswith("norm.") and leaf[5:] in _RESNET_NORM_LEAVES:
            converted[module + "normalization." + leaf[5:]] = value
            norms.add(module + "normalization.")
        elif leaf == "norm.num_batches_tracked":
            converted[module + "normalization.num_batches_tracked"] = value
        else:
            raise ValueError(f"unexpected ResNet backbone weight {key!r}")
    if not converted:
        raise ValueError(f"no ResNet backbone weights found under {prefix_in!r}")
    if add_num_batches_tracked:
        for norm in norms:
            converted.setdefault(norm + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return converted


# ----------------------------------------------------------------------------------------------------------- dispatch


def backbone_config_from_original(cfg: Mapping[str, Any], naming: str = "swin") -> PreTrainedConfig:
    """The transformers backbone config for `MODEL.BACKBONE.NAME` (Swin with `naming`, or ResNet)."""
    name = original_backbone_name(cfg)
    if name in SWIN_BACKBONE_NAMES:
        return maskformer_swin_backbone_config(cfg) if naming == "maskformer_swin" else swin_backbone_config(cfg)
    if name in RESNET_BACKBONE_NAMES:
        return resnet_backbone_config(cfg)
    raise ValueError(f"unsupported backbone MODEL.BACKBONE.NAME={name!r} (supported: D2SwinTransformer, "
                     "build_resnet_backbone)")


def convert_backbone(
    original: Mapping[str, torch.Tensor],
    cfg: Mapping[str, Any],
    prefix_in: str = "backbone.",
    prefix_out: str = "model.pixel_level_module.encoder.",
    naming: str = "swin",
) -> dict[str, torch.Tensor]:
    """Convert the backbone weights of `original`, picking Swin or ResNet from `MODEL.BACKBONE.NAME`."""
    name = original_backbone_name(cfg)
    if name in SWIN_BACKBONE_NAMES:
        return convert_swin_backbone(original, prefix_in, prefix_out, naming=naming)
    if name in RESNET_BACKBONE_NAMES:
        return convert_resnet_backbone(original, prefix_in, prefix_out)
    raise ValueError(f"unsupported backbone MODEL.BACKBONE.NAME={name!r}")
