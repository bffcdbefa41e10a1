"""Read an original detectron2 config (YAML with its `_BASE_` chain, or a model-zoo entry) and build our model
config, processor settings and labels from it.

The original config is handled as the nested dict of the merged YAML (`{"MODEL": {...}, "INPUT": {...}, ...}`).
Dataset class names and the "thing" flags come from the `datasets` section of the package's `model_zoo.json`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import DetrConfig, PreTrainedConfig

from .keys_backbones import RESNET_BACKBONE_NAMES, SWIN_BACKBONE_NAMES, backbone_config_from_original

MODEL_ZOO_PATH = Path(__file__).resolve().parent.parent / "hf_maskformer_series" / "model_zoo.json"
FAMILIES = ("mask2former", "maskformer", "video_mask2former")


# --------------------------------------------------------------------------------------------------------- YAML files


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
        ValueError: the file (or one of its bases) is missing or not a YAML mapping, or the chain is circular.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"circular _BASE_ chain through {path}")
    if not path.is_file():
        hint = f" (the _BASE_ of {_seen[-1]})" if _seen else ""
        raise ValueError(
            f"original config {path} not found{hint}; give the whole chain of config files, or a merged YAML"
        )
    content = yaml.safe_load(path.read_text())
    if not isinstance(content, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    base_name = content.pop("_BASE_", None)
    if base_name is None:
        return content
    base = load_original_config(path.parent / base_name, (*_seen, path))
    return merge_configs(base, content)


def get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """`get(cfg, "MODEL.MASK_FORMER.HIDDEN_DIM", 256)`: a nested value or `default` when absent."""
    node: Any = cfg
    for name in dotted.split("."):
        if not isinstance(node, Mapping) or name not in node:
            return default
        node = node[name]
    return node


# ------------------------------------------------------------------------------------------------------------ family


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


# ------------------------------------------------------------------------------------------------------------ labels


def load_model_zoo(path: str | Path = MODEL_ZOO_PATH) -> dict[str, Any]:
    """The package's `model_zoo.json`: `{"datasets": {key: {...}}, "models": [{...}, ...]}`."""
    return json.loads(Path(path).read_text())


# detectron2 registered dataset names (DATASETS.TEST[0]) -> key of the `datasets` section of model_zoo.json
DATASET_NAMES = {
    "coco_2017_val_panoptic_with_sem_seg": "coco_panoptic",
    "coco_2017_val_panoptic": "coco_panoptic",
    "coco_2017_val": "coco_instance",
    "coco_2017_test-dev": "coco_instance",
    "ade20k_sem_seg_val": "ade20k",
    "ade20k_panoptic_val": "ade20k",
    "ade20k_instance_val": "ade20k_instance",
    "ade20k_full_sem_seg_val": "ade20k_full",
    "cityscapes_fine_sem_seg_val": "cityscapes",
    "cityscapes_fine_panoptic_val": "cityscapes",
    "cityscapes_fine_instance_seg_val": "cityscapes_instance",
    "ytvis_2019_val": "ytvis_2019",
    "ytvis_2021_val": "ytvis_2021",
    "coco_2017_test_stuff_10k_sem_seg": "coco_stuff",
    "mapillary_vistas_panoptic_val": "mapillary_vistas",
    "mapillary_vistas_sem_seg_val": "mapillary_vistas",
    "pascal_context_59_sem_seg_val": "pascal_context_59",
    "pascal_context_459_sem_seg_val": "pascal_context_459",
}


@dataclass
class DatasetLabels:
    """Class names of a model's label space (contiguous ids 0..K-1) and which classes are things."""

    dataset: str | None
    id2label: dict[int, str]
    thing_ids: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in self.id2label.items()}

    @property
    def stuff_ids(self) -> list[int]:
        things = set(self.thing_ids)
        return [index for index in self.id2label if index not in things]


def dataset_key(cfg: Mapping[str, Any]) -> str | None:
    """Our dataset key for `DATASETS.TEST[0]` (None when unknown)."""
    tests = get(cfg, "DATASETS.TEST", []) or []
    return DATASET_NAMES.get(str(tests[0])) if tests else None


def dataset_labels(
    cfg: Mapping[str, Any], num_labels: int, thing_ids: list[int] | None = None, zoo: Mapping[str, Any] | None = None
) -> DatasetLabels:
    """Labels of the model: the dataset's class names when the dataset is known and has `num_labels` classes,
    otherwise `class_{i}` names. `thing_ids` (when given) overrides the dataset's thing flags.

    Raises:
        ValueError: a thing id outside `[0, num_labels)`.
    """
    zoo = zoo if zoo is not None else load_model_zoo()
    key = dataset_key(cfg)
    entry = zoo["datasets"].get(key) if key else None
    if entry is not None and entry.get("names") and len(entry["names"]) == num_labels:
        id2label = dict(enumerate(entry["names"]))
        things = list(entry.get("thing_ids", []))
        note = f"class names of {entry.get('title', key)}"
    else:
        id2label = {index: f"class_{index}" for index in range(num_labels)}
        things = []
        if entry is None:
            note = f"dataset {get(cfg, 'DATASETS.TEST')} unknown: generic class names"
        elif not entry.get("names"):
            note = f"class names of {key} are not shipped: generic class names"
        else:
            note = f"{key} has {len(entry['names'])} classes but the model {num_labels}: generic class names"
    if thing_ids is not None:
        things = sorted({int(index) for index in thing_ids})
    bad = [index for index in things if not 0 <= index < num_labels]
    if bad:
        raise ValueError(f"thing ids {bad} are outside [0, {num_labels})")
    return DatasetLabels(dataset=key, id2label=id2label, thing_ids=things, note=note)


# ------------------------------------------------------------------------------------------------------ model config


def _common_head(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "hidden_dim": int(get(cfg, "MODEL.MASK_FORMER.HIDDEN_DIM", 256)),
        "num_queries": int(get(cfg, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 100)),
        "num_heads": int(get(cfg, "MODEL.MASK_FORMER.NHEADS", 8)),
        "dim_feedforward": int(get(cfg, "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 2048)),
        "dropout": float(get(cfg, "MODEL.MASK_FORMER.DROPOUT", 0.0)),
        "dec_layers": int(get(cfg, "MODEL.MASK_FORMER.DEC_LAYERS", 10)),
        "pre_norm": bool(get(cfg, "MODEL.MASK_FORMER.PRE_NORM", False)),
        "enforce_input_proj": bool(get(cfg, "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ", False)),
        "deep_supervision": bool(get(cfg, "MODEL.MASK_FORMER.DEEP_SUPERVISION", True)),
        "num_classes": int(get(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")),
        "conv_dim": int(get(cfg, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 256)),
        "mask_dim": int(get(cfg, "MODEL.SEM_SEG_HEAD.MASK_DIM", 256)),
        "norm": str(get(cfg, "MODEL.SEM_SEG_HEAD.NORM", "GN")),
    }


def _check_head(cfg: Mapping[str, Any], head: Mapping[str, Any]) -> None:
    if get(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES") is None:
        raise ValueError("the original config has no MODEL.SEM_SEG_HEAD.NUM_CLASSES")
    if head["norm"] != "GN":
        raise ValueError(f"MODEL.SEM_SEG_HEAD.NORM={head['norm']!r} is not supported (only GN)")
    in_features = list(get(cfg, "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res2", "res3", "res4", "res5"]))
    if in_features != ["res2", "res3", "res4", "res5"]:
        raise ValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES must be res2..res5, got {in_features}")


def _frozen_bn(cfg: Mapping[str, Any]) -> bool:
    return get(cfg, "MODEL.BACKBONE.NAME") in RESNET_BACKBONE_NAMES and get(cfg, "MODEL.RESNETS.NORM") == "FrozenBN"


def _mask2former_kwargs(cfg: Mapping[str, Any], labels: DatasetLabels) -> dict[str, Any]:
    head = _common_head(cfg)
    _check_head(cfg, head)
    encoder_in = list(get(cfg, "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", ["res3", "res4", "res5"]))
    if encoder_in != ["res3", "res4", "res5"]:
        raise ValueError(f"DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES must be res3..res5, got {encoder_in}")
    if get(cfg, "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "multi_scale_pixel_decoder") != "multi_scale_pixel_decoder":
        raise ValueError("Mask2Former needs MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE=multi_scale_pixel_decoder")
    return {
        "backbone_config": backbone_config_from_original(cfg, naming="swin"),
        "feature_size": head["conv_dim"],
        "mask_feature_size": head["mask_dim"],
        "hidden_dim": head["hidden_dim"],
        "encoder_feedforward_dim": 1024,  # hard-coded in the original MSDeformAttnPixelDecoder
        "encoder_layers": int(get(cfg, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 6)),
        "decoder_layers": head["dec_layers"],
        "num_attention_heads": head["num_heads"],
        "encoder_num_points": 4,  # hard-coded in the original (the N_POINTS key is never read)
        "dropout": head["dropout"],
        "dim_feedforward": head["dim_feedforward"],
        "pre_norm": head["pre_norm"],
        "enforce_input_projection": head["enforce_input_proj"],
        "common_stride": int(get(cfg, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4)),
        "ignore_value": int(get(cfg, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 255)),
        "num_queries": head["num_queries"],
        "no_object_weight": float(get(cfg, "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", 0.1)),
        "class_weight": float(get(cfg, "MODEL.MASK_FORMER.CLASS_WEIGHT", 2.0)),
        "mask_weight": float(get(cfg, "MODEL.MASK_FORMER.MASK_WEIGHT", 5.0)),
        "dice_weight": float(get(cfg, "MODEL.MASK_FORMER.DICE_WEIGHT", 5.0)),
        "train_num_points": int(get(cfg, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 12544)),
        "oversample_ratio": float(get(cfg, "MODEL.MASK_FORMER.OVERSAMPLE_RATIO", 3.0)),
        "importance_sample_ratio": float(get(cfg, "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO", 0.75)),
        "use_auxiliary_loss": head["deep_supervision"],
        "freeze_backbone_batch_norm": _frozen_bn(cfg),
    }


def _maskformer_kwargs(cfg: Mapping[str, Any], labels: DatasetLabels) -> dict[str, Any]:
    head = _common_head(cfg)
    _check_head(cfg, head)
    pixel_decoder = get(cfg, "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME")
    types = {"BasePixelDecoder": "fpn", "TransformerEncoderPixelDecoder": "transformer_encoder"}
    if pixel_decoder not in types:
        raise ValueError(f"MaskFormer pixel decoder {pixel_decoder!r} is not supported ({sorted(types)})")
    in_feature = get(cfg, "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "res5")
    expected = "transformer_encoder" if types[pixel_decoder] == "transformer_encoder" else "res5"
    if in_feature != expected:
        raise ValueError(f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={in_feature!r} with {pixel_decoder} is not "
                         f"supported (expected {expected!r})")
    if int(get(cfg, "MODEL.MASK_FORMER.ENC_LAYERS", 0)) != 0:
        raise ValueError("MaskFormer predictors with their own transformer encoder (MASK_FORMER.ENC_LAYERS > 0) "
                         "are not supported")
    decoder_config = DetrConfig(
        d_model=head["hidden_dim"],
        num_queries=head["num_queries"],
        decoder_layers=head["dec_layers"],
        decoder_attention_heads=head["num_heads"],
        decoder_ffn_dim=head["dim_feedforward"],
        dropout=head["dropout"],
        activation_function="relu",
        encoder_layers=0,
    )
    return {
        "backbone_config": backbone_config_from_original(cfg, naming="maskformer_swin"),
        "decoder_config": decoder_config,
        "fpn_feature_size": head["conv_dim"],
        "mask_feature_size": head["mask_dim"],
        "no_object_weight": float(get(cfg, "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", 0.1)),
        "use_auxiliary_loss": head["deep_supervision"],
        "dice_weight": float(get(cfg, "MODEL.MASK_FORMER.DICE_WEIGHT", 1.0)),
        "mask_weight": float(get(cfg, "MODEL.MASK_FORMER.MASK_WEIGHT", 20.0)),
        "cross_entropy_weight": 1.0,
        "pixel_decoder_type": types[pixel_decoder],
        "pixel_decoder_encoder_layers": int(get(cfg, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 6)),
        "pixel_decoder_encoder_attention_heads": head["num_heads"],
        "pixel_decoder_encoder_ffn_dim": head["dim_feedforward"],
        "pixel_decoder_encoder_dropout": head["dropout"],
        "pixel_decoder_pre_norm": head["pre_norm"],
        "pre_norm": head["pre_norm"],
        "enforce_input_projection": head["enforce_input_proj"],
        "freeze_backbone_batch_norm": _frozen_bn(cfg),
        "ignore_value": int(get(cfg, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 255)),
    }


def _video_kwargs(cfg: Mapping[str, Any], labels: DatasetLabels) -> dict[str, Any]:
    kwargs = _mask2former_kwargs(cfg, labels)
    kwargs["num_frames"] = int(get(cfg, "INPUT.SAMPLING_FRAME_NUM", 2))
    kwargs["test_top_k"] = 10  # hard-coded in the original inference_video
    return kwargs


def _test_settings(cfg: Mapping[str, Any], family: str) -> dict[str, Any]:
    """Inference switches of the original (stored in config.json for reference and for post-processing)."""
    settings = {
        "object_mask_threshold": float(get(cfg, "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", 0.8)),
        "overlap_threshold": float(get(cfg, "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", 0.8)),
        "semantic_on": bool(get(cfg, "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", True)),
        "panoptic_on": bool(get(cfg, "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", False)),
        "sem_seg_postprocessing_before_inference": bool(
            get(cfg, "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE", False)
        ),
    }
    if family != "maskformer":
        settings["instance_on"] = bool(get(cfg, "MODEL.MASK_FORMER.TEST.INSTANCE_ON", False))
        settings["test_topk_per_image"] = int(get(cfg, "TEST.DETECTIONS_PER_IMAGE", 100))
    return settings


def build_model_config(
    cfg: Mapping[str, Any], family: str | None = None, thing_ids: list[int] | None = None
) -> tuple[PreTrainedConfig, DatasetLabels]:
    """Our config (`SeriesMask2FormerConfig`, `SeriesMaskFormerConfig` or `SeriesVideoMask2FormerConfig`) for an
    original config, with `id2label` / `label2id`, `thing_ids`, `stuff_ids`, `dataset` and `original_test_settings`.

    Raises:
        ValueError: an unsupported original setting (named in the message).
    """
    family = family or detect_family(cfg)
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    num_labels = get(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")
    if num_labels is None:
        raise ValueError("the original config has no MODEL.SEM_SEG_HEAD.NUM_CLASSES")
    labels = dataset_labels(cfg, int(num_labels), thing_ids)
    extras = {
        "id2label": labels.id2label,
        "label2id": labels.label2id,
        "thing_ids": labels.thing_ids,
        "stuff_ids": labels.stuff_ids,
        "dataset": labels.dataset,
        "original_test_settings": _test_settings(cfg, family),
    }
    if family == "mask2former":
        from hf_maskformer_series import SeriesMask2FormerConfig

        return SeriesMask2FormerConfig(**_mask2former_kwargs(cfg, labels), **extras), labels
    if family == "maskformer":
        from hf_maskformer_series.configuration_maskformer import SeriesMaskFormerConfig

        return SeriesMaskFormerConfig(**_maskformer_kwargs(cfg, labels), **extras), labels
    from hf_maskformer_series.configuration_video_mask2former import SeriesVideoMask2FormerConfig

    return SeriesVideoMask2FormerConfig(**_video_kwargs(cfg, labels), **extras), labels


# -------------------------------------------------------------------------------------------------- processor config


def input_format(cfg: Mapping[str, Any]) -> str:
    """`RGB` or `BGR` (`INPUT.FORMAT`); a BGR model is converted to take RGB (see `convert_original`)."""
    value = str(get(cfg, "INPUT.FORMAT", "BGR"))
    if value not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT={value!r} is not supported (RGB or BGR)")
    return value


def build_processor_kwargs(cfg: Mapping[str, Any], family: str, labels: DatasetLabels) -> dict[str, Any]:
    """Keyword arguments of our image (or video) processor: the original test resize, normalisation (in RGB
    order, scaled to [0, 1] inputs), padding multiple, ignore value and label reduction."""
    mean = [float(v) for v in get(cfg, "MODEL.PIXEL_MEAN", [103.530, 116.280, 123.675])]
    std = [float(v) for v in get(cfg, "MODEL.PIXEL_STD", [57.375, 57.120, 58.395])]
    if input_format(cfg) == "BGR":
        mean, std = mean[::-1], std[::-1]
    size_divisibility = int(get(cfg, "MODEL.MASK_FORMER.SIZE_DIVISIBILITY", 32))
    kwargs: dict[str, Any] = {
        "size": {
            "shortest_edge": int(get(cfg, "INPUT.MIN_SIZE_TEST", 800)),
            "longest_edge": int(get(cfg, "INPUT.MAX_SIZE_TEST", 1333)),
        },
        "image_mean": [m / 255.0 for m in mean],
        "image_std": [s / 255.0 for s in std],
        "size_divisor": size_divisibility if size_divisibility > 0 else 32,
    }
    if family != "video_mask2former":
        kwargs["snap_resize_to_size_divisor"] = False  # detectron2 keeps the aspect ratio and pads
        kwargs["ignore_index"] = int(get(cfg, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 255))
        kwargs["num_labels"] = len(labels.id2label)
        # raw ADE20K maps are 1-based with 0 = "other" (detectron2's preparation script subtracts 1)
        kwargs["do_reduce_labels"] = labels.dataset in ("ade20k", "ade20k_full")
    return kwargs


# ------------------------------------------------------------------------------------------------ model-zoo configs

_SWIN_PRESETS = {
    "swin_tiny": {"EMBED_DIM": 96, "DEPTHS": [2, 2, 6, 2], "NUM_HEADS": [3, 6, 12, 24], "WINDOW_SIZE": 7,
                  "PRETRAIN_IMG_SIZE": 224},
    "swin_small": {"EMBED_DIM": 96, "DEPTHS": [2, 2, 18, 2], "NUM_HEADS": [3, 6, 12, 24], "WINDOW_SIZE": 7,
                   "PRETRAIN_IMG_SIZE": 224},
    "swin_base": {"EMBED_DIM": 128, "DEPTHS": [2, 2, 18, 2], "NUM_HEADS": [4, 8, 16, 32], "WINDOW_SIZE": 12,
                  "PRETRAIN_IMG_SIZE": 384},
    "swin_large": {"EMBED_DIM": 192, "DEPTHS": [2, 2, 18, 2], "NUM_HEADS": [6, 12, 24, 48], "WINDOW_SIZE": 12,
                   "PRETRAIN_IMG_SIZE": 384},
}
_IMAGENET_RGB = {"PIXEL_MEAN": [123.675, 116.280, 103.530], "PIXEL_STD": [58.395, 57.120, 57.375]}


def config_from_zoo_entry(entry: Mapping[str, Any], zoo: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A merged detectron2-style config for a `model_zoo.json` entry, built from the family's released defaults
    and the entry's backbone / dataset / overrides, for converting by name without the original YAML files.

    Raises:
        ValueError: an entry with an unknown family, backbone or dataset.
    """
    zoo = zoo if zoo is not None else load_model_zoo()
    family = entry["family"]
    defaults = zoo.get("family_defaults", {})
    if family not in defaults:
        raise ValueError(f"model-zoo entry {entry.get('name')!r}: unknown family {family!r}")
    cfg = copy.deepcopy(defaults[family])
    setup = zoo.get("setups", {}).get(entry.get("setup"))
    if setup is None:
        raise ValueError(f"model-zoo entry {entry.get('name')!r}: unknown setup {entry.get('setup')!r}")
    if not entry.get("supported", True):
        raise ValueError(f"model-zoo entry {entry['name']!r} cannot be converted: {entry.get('note', 'unsupported')}")
    cfg = merge_configs(cfg, setup)
    backbone = entry["backbone"]
    if backbone in ("R50", "R101"):
        cfg = merge_configs(cfg, {
            "MODEL": {
                "BACKBONE": {"NAME": "build_resnet_backbone"},
                "RESNETS": {"DEPTH": int(backbone[1:]), "STEM_TYPE": "basic", "STEM_OUT_CHANNELS": 64,
                            "RES2_OUT_CHANNELS": 256, "WIDTH_PER_GROUP": 64, "NUM_GROUPS": 1,
                            "STRIDE_IN_1X1": False, "NORM": "FrozenBN",
                            "OUT_FEATURES": ["res2", "res3", "res4", "res5"]},
                **_IMAGENET_RGB,
            },
            "INPUT": {"FORMAT": "RGB"},
        })
    elif backbone in _SWIN_PRESETS:
        cfg = merge_configs(cfg, {
            "MODEL": {
                "BACKBONE": {"NAME": "D2SwinTransformer"},
                "SWIN": {**_SWIN_PRESETS[backbone], "PATCH_SIZE": 4, "MLP_RATIO": 4.0, "QKV_BIAS": True,
                         "QK_SCALE": None, "DROP_RATE": 0.0, "ATTN_DROP_RATE": 0.0, "DROP_PATH_RATE": 0.3,
                         "APE": False, "PATCH_NORM": True, "OUT_FEATURES": ["res2", "res3", "res4", "res5"]},
                **_IMAGENET_RGB,
            },
            "INPUT": {"FORMAT": "RGB"},
        })
    else:
        raise ValueError(f"model-zoo entry {entry.get('name')!r}: unknown backbone {backbone!r}")
    return merge_configs(cfg, entry.get("overrides", {}))


def find_zoo_entry(name: str, zoo: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `model_zoo.json` entry called `name`.

    Raises:
        ValueError: unknown name (with close matches).
    """
    zoo = zoo if zoo is not None else load_model_zoo()
    for entry in zoo["models"]:
        if entry["name"] == name:
            return entry
    import difflib

    close = difflib.get_close_matches(name, [entry["name"] for entry in zoo["models"]], n=5)
    raise ValueError(f"unknown model-zoo name {name!r}" + (f"; did you mean {close}?" if close else ""))


def model_zoo_markdown(zoo: Mapping[str, Any] | None = None) -> str:
    """The model zoo as a Markdown table (for the README): name, family, dataset, metric, config, checkpoint."""
    zoo = zoo if zoo is not None else load_model_zoo()
    lines = ["| name | family | dataset | metric | config | original checkpoint |", "|---|---|---|---|---|---|"]
    for entry in zoo["models"]:
        title = zoo["datasets"][entry["dataset"]]["title"]
        status = "" if entry.get("supported", True) else " (not convertible: " + entry.get("note", "") + ")"
        lines.append(f"| `{entry['name']}`{status} | {entry['family']} | {title} | {entry['metric']} "
                     f"{entry['value']} | `{entry['config']}` | {entry['checkpoint'] or 'unknown'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(model_zoo_markdown())


__all__ = [
    "model_zoo_markdown",
    "DatasetLabels",
    "SWIN_BACKBONE_NAMES",
    "build_model_config",
    "build_processor_kwargs",
    "config_from_zoo_entry",
    "dataset_labels",
    "detect_family",
    "find_zoo_entry",
    "load_model_zoo",
    "load_original_config",
    "merge_configs",
]
