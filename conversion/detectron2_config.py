"""detectron2 configs as nested dicts: read a YAML with its `_BASE_` chain, merge, look up keys, detect the family,
and fill the keys a YAML leaves out with the original code's defaults.

The original repositories build their config as detectron2's defaults plus `add_mask_former_config` (MaskFormer) or
`add_maskformer2_config` (+ `add_maskformer2_video_config`) and then merge the YAML chain; a key absent from every
YAML keeps the code default. `ORIGINAL_DEFAULTS` holds those code defaults for every key the conversion reads (the
one source of defaults: the builders in `original_config.py` look keys up with `require`, never with a default of
their own). They differ from the released configs' values in places (e.g. Mask2Former's code defaults are
DEC_LAYERS 6, CLASS_WEIGHT 1, DROPOUT 0.1 and TRANSFORMER_ENC_LAYERS 0 where every released config sets 10, 2, 0
and 6), which is why a YAML without its `_BASE_` files must not be converted with the released values silently.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "FAMILIES",
    "ORIGINAL_DEFAULTS",
    "detect_family",
    "get",
    "load_original_config",
    "merge_configs",
    "require",
    "with_original_defaults",
]

FAMILIES = ("mask2former", "maskformer", "video_mask2former")


def merge_configs(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: values of `override` win; nested dicts merge key by key (detectron2's `merge_from_file`)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_original_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a detectron2 YAML, resolving its `_BASE_` chain (paths relative to each file).

    Raises:
        ValueError: the file (or one of its bases) is missing, unreadable, not valid YAML or not a YAML mapping, or
            the chain is circular; the message names the file.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"circular _BASE_ chain through {path}")
    if not path.is_file():
        hint = f" (the _BASE_ of {_seen[-1]})" if _seen else ""
        raise ValueError(
            f"original config {path} not found{hint}; give the whole chain of config files, or a merged YAML"
        )
    try:
        content = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"original config {path} is not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(content, dict):
        raise ValueError(f"original config {path} is not a YAML mapping (got {type(content).__name__})")
    base_name = content.pop("_BASE_", None)
    if base_name is None:
        return content
    base = load_original_config(path.parent / base_name, (*_seen, path))
    return merge_configs(base, content)


def get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """`get(cfg, "MODEL.MASK_FORMER.HIDDEN_DIM")`: a nested value, or `default` when absent."""
    node: Any = cfg
    for name in dotted.split("."):
        if not isinstance(node, Mapping) or name not in node:
            return default
        node = node[name]
    return node


_MISSING = object()


def require(cfg: Mapping[str, Any], dotted: str) -> Any:
    """A nested value that must be present (after `with_original_defaults`).

    Raises:
        ValueError: naming the key.
    """
    value = get(cfg, dotted, _MISSING)
    if value is _MISSING:
        raise ValueError(f"the original config has no {dotted}")
    return value


def detect_family(cfg: Mapping[str, Any]) -> str:
    """`mask2former`, `maskformer` (v1) or `video_mask2former`, from the meta-architecture and decoder names.

    Raises:
        ValueError: a config of none of the three families.
    """
    meta = get(cfg, "MODEL.META_ARCHITECTURE")
    decoder = get(cfg, "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME")
    pixel_decoder = get(cfg, "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME")
    if meta == "VideoMaskFormer":
        return "video_mask2former"
    if meta == "MaskFormer":
        if decoder == "MultiScaleMaskedTransformerDecoder":
            return "mask2former"
        if pixel_decoder in ("BasePixelDecoder", "TransformerEncoderPixelDecoder") and decoder in (
            None,
            "StandardTransformerDecoder",
        ):
            return "maskformer"
        if pixel_decoder == "MSDeformAttnPixelDecoder":
            return "mask2former"
    raise ValueError(
        f"not a MaskFormer / Mask2Former / video Mask2Former config (META_ARCHITECTURE={meta!r}, "
        f"TRANSFORMER_DECODER_NAME={decoder!r}, PIXEL_DECODER_NAME={pixel_decoder!r})"
    )


# detectron2's defaults (detectron2/config/defaults.py) for the keys read outside the MaskFormer sections.
_DETECTRON2_DEFAULTS: dict[str, Any] = {
    "MODEL": {
        "BACKBONE": {"NAME": "build_resnet_backbone"},
        "PIXEL_MEAN": [103.530, 116.280, 123.675],
        "PIXEL_STD": [1.0, 1.0, 1.0],
        "RESNETS": {"NORM": "FrozenBN"},
        "SEM_SEG_HEAD": {"IN_FEATURES": ["p2", "p3", "p4", "p5"], "IGNORE_VALUE": 255, "CONVS_DIM": 128,
                         "COMMON_STRIDE": 4, "NORM": "GN"},
    },
    "INPUT": {"FORMAT": "BGR", "MIN_SIZE_TEST": 800, "MAX_SIZE_TEST": 1333},
    "TEST": {"DETECTIONS_PER_IMAGE": 100},
    "DATASETS": {"TEST": []},
}

# `add_mask_former_config` (MaskFormer) and `add_maskformer2_config` (Mask2Former), the keys they share.
_MASK_FORMER_SHARED = {
    "MODEL": {
        "MASK_FORMER": {
            "DEEP_SUPERVISION": True, "NO_OBJECT_WEIGHT": 0.1, "DICE_WEIGHT": 1.0, "MASK_WEIGHT": 20.0, "NHEADS": 8,
            "DROPOUT": 0.1, "DIM_FEEDFORWARD": 2048, "ENC_LAYERS": 0, "DEC_LAYERS": 6, "PRE_NORM": False,
            "HIDDEN_DIM": 256, "NUM_OBJECT_QUERIES": 100, "TRANSFORMER_IN_FEATURE": "res5",
            "ENFORCE_INPUT_PROJ": False, "SIZE_DIVISIBILITY": 32,
            "TEST": {"SEMANTIC_ON": True, "PANOPTIC_ON": False, "OBJECT_MASK_THRESHOLD": 0.0,
                     "OVERLAP_THRESHOLD": 0.0, "SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False},
        },
        "SEM_SEG_HEAD": {"MASK_DIM": 256, "TRANSFORMER_ENC_LAYERS": 0, "PIXEL_DECODER_NAME": "BasePixelDecoder"},
    },
}

# `add_maskformer2_config` only.
_MASK2FORMER_ONLY = {
    "MODEL": {
        "MASK_FORMER": {
            "CLASS_WEIGHT": 1.0, "TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
            "TRAIN_NUM_POINTS": 112 * 112, "OVERSAMPLE_RATIO": 3.0, "IMPORTANCE_SAMPLE_RATIO": 0.75,
            "TEST": {"INSTANCE_ON": False},
        },
        "SEM_SEG_HEAD": {"DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"]},
    },
}

_IMAGE_MASK2FORMER = merge_configs(merge_configs(_DETECTRON2_DEFAULTS, _MASK_FORMER_SHARED), _MASK2FORMER_ONLY)

ORIGINAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "maskformer": merge_configs(_DETECTRON2_DEFAULTS, _MASK_FORMER_SHARED),
    "mask2former": _IMAGE_MASK2FORMER,
    # `add_maskformer2_video_config` on top
    "video_mask2former": merge_configs(_IMAGE_MASK2FORMER, {"INPUT": {"SAMPLING_FRAME_NUM": 2}}),
}


def with_original_defaults(cfg: Mapping[str, Any], family: str) -> dict[str, Any]:
    """`cfg` merged over the original code's defaults of `family` (what detectron2 builds from the same YAML)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return merge_configs(ORIGINAL_DEFAULTS[family], cfg)
