"""The package's model zoo (`hf_maskformer_series/model_zoo.json`, read through `importlib.resources` so that it is
found in an installed wheel too): released models, their datasets' class names and thing flags, and detectron2-style
configs built from a zoo entry for converting by name without the original YAML files.

    python -m conversion.model_zoo      # the zoo as a Markdown table
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .detectron2_config import get, merge_configs

__all__ = [
    "DATASET_NAMES",
    "DatasetLabels",
    "config_from_zoo_entry",
    "dataset_key",
    "dataset_labels",
    "find_zoo_entry",
    "load_model_zoo",
    "model_zoo_markdown",
]


def load_model_zoo() -> dict[str, Any]:
    """The package's `model_zoo.json`: `{"datasets": {key: {...}}, "family_defaults": {...}, "setups": {...},
    "models": [{...}, ...]}`."""
    return json.loads(resources.files("hf_maskformer_series").joinpath("model_zoo.json").read_text())


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
