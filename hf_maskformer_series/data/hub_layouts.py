"""Hub dataset layouts for ``--dataset_name``: detect the layout from the columns, convert to our readers' columns.

The training and evaluation code reads rows with the columns of the local readers (``coco_panoptic.py``,
``coco_instance.py``, ``semantic.py``). Hub datasets come in a few other layouts; ``prepare_hub_dataset`` detects
which one a dataset has and returns the same rows in the reader's columns for a task:

============================  =====================================================  ================================
layout                        columns                                                tasks
============================  =====================================================  ================================
``coco_panoptic``             ``image``, an RGB panoptic PNG (``panoptic_image``,    panoptic
                              or any other image column), ``segments_info``
                              (COCO-panoptic parquet; our panoptic reader)
``coco_instances``            ``image``, ``objects`` (our instance reader)           instance
``class_instance_png``        ``image``, ``annotation`` RGB: R = semantic class,     instance, panoptic, semantic
                              G = instance id, B unused (``qubvel-hf/ade20k-mini``,
                              transformers' instance-segmentation example)
``label_png``                 ``image``, single-channel ``annotation`` (scene-parsing  semantic
                              style; our semantic reader)
============================  =====================================================  ================================

Conventions of ``class_instance_png`` (those of ADE20K and of transformers' ``do_reduce_labels``): class value 0 is
background, i.e. void; a pixel with instance id 0 belongs to no instance. For ``instance`` the objects are the
(class, instance id) pairs with instance id != 0; for ``panoptic`` every non-background (class, instance id) pair is
one segment (instance id 0: the class's stuff region); for ``semantic`` the annotation is the R channel.
"""

from __future__ import annotations

import json

import datasets
import numpy as np
from PIL import Image

from .coco_instance import INSTANCE_FEATURES
from .coco_panoptic import PANOPTIC_FEATURES
from .masks import encode_mask, id_to_rgb

__all__ = ["HUB_LAYOUTS", "detect_hub_layout", "hub_categories", "prepare_hub_dataset"]

HUB_LAYOUTS = {
    "coco_panoptic": ("panoptic",),
    "coco_instances": ("instance",),
    "class_instance_png": ("instance", "panoptic", "semantic"),
    "label_png": ("semantic",),
}
_TASKS = ("panoptic", "instance", "semantic")


def _image_columns(dataset: datasets.Dataset) -> list[str]:
    return [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]


def _panoptic_png_column(dataset: datasets.Dataset) -> str | None:
    if "panoptic_image" in dataset.column_names:
        return "panoptic_image"
    others = [name for name in _image_columns(dataset) if name != "image"]
    return others[0] if len(others) == 1 else None


def detect_hub_layout(dataset: datasets.Dataset, name: str = "dataset") -> str:
    """The layout of ``dataset`` (a key of ``HUB_LAYOUTS``), from its columns and, for ``annotation``, the number of
    channels of the first annotation image.

    Raises:
        ValueError: no ``image`` column, an unknown schema, or an empty dataset whose annotation cannot be inspected;
            the message lists the columns and the layouts understood.
    """
    columns = dataset.column_names
    known = ("image + panoptic PNG + segments_info (COCO panoptic); image + objects (COCO instances); image + RGB "
             "annotation (R = class, G = instance id); image + single-channel annotation (scene parsing)")
    if "image" in columns and "segments_info" in columns:
        if _panoptic_png_column(dataset) is not None:
            return "coco_panoptic"
        raise ValueError(f"Dataset {name}: has segments_info but no single panoptic PNG image column besides 'image' "
                         f"(image columns: {_image_columns(dataset)}). Understood layouts: {known}.")
    if "image" in columns and "objects" in columns:
        return "coco_instances"
    if "image" in columns and "annotation" in columns:
        if len(dataset) == 0:
            raise ValueError(f"Dataset {name} is empty: cannot tell an RGB from a single-channel annotation.")
        annotation = dataset[0]["annotation"]
        if not isinstance(annotation, Image.Image):
            raise ValueError(f"Dataset {name}: 'annotation' must be an image column; got "
                             f"{type(annotation).__name__}.")
        if annotation.mode in ("L", "P", "I", "I;16"):
            return "label_png"
        if annotation.mode in ("RGB", "RGBA"):
            return "class_instance_png"
        raise ValueError(f"Dataset {name}: annotation images of mode {annotation.mode} are not understood (need a "
                         "single-channel label map or RGB with R = class, G = instance id).")
    raise ValueError(f"Dataset {name}: unknown layout, columns {columns}. Understood layouts: {known}.")


def hub_categories(dataset: datasets.Dataset, task: str) -> list[dict] | None:
    """Categories ``[{id, name, isthing}]`` the dataset declares, or ``None`` (then pass a categories file).

    Read from a ``semantic_class_to_id`` column (``{name: id}``, as in transformers' instance-segmentation example;
    a ``background`` entry is void and left out) or from a ``ClassLabel`` ``annotation`` feature (ids 1..K).
    Neither says which classes are things: ``isthing`` is 0 for ``semantic``, else 1 (edit it for panoptic stuff).
    """
    if task not in _TASKS:
        raise ValueError(f"Unknown task '{task}'; expected one of {_TASKS}.")
    isthing = 0 if task == "semantic" else 1
    if "semantic_class_to_id" in dataset.column_names and len(dataset):
        mapping = dataset[0]["semantic_class_to_id"]
        if isinstance(mapping, str):
            mapping = json.loads(mapping)
        return sorted(({"id": int(i), "name": str(n), "isthing": isthing} for n, i in mapping.items()
                       if i is not None and not (int(i) == 0 and str(n).lower() == "background")),
                      key=lambda c: c["id"])
    feature = dataset.features.get("annotation")
    if isinstance(feature, datasets.ClassLabel):
        return [{"id": k + 1, "name": label, "isthing": isthing} for k, label in enumerate(feature.names)]
    return None


def _class_instance_pairs(annotation: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes [H, W], instances [H, W], pairs [P, 2])``: the distinct (class, instance) pairs, background out."""
    rgb = np.asarray(annotation.convert("RGB")).astype(np.int64)
    classes, instances = rgb[..., 0], rgb[..., 1]
    pairs = np.unique(np.stack([classes, instances], -1).reshape(-1, 2), axis=0)
    return classes, instances, pairs[pairs[:, 0] != 0]


def _bbox(mask: np.ndarray) -> list[float]:
    """COCO box ``[x, y, width, height]`` of a non-empty ``[H, W]`` bool mask."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _objects_from_annotation(annotation: Image.Image) -> list[dict]:
    classes, instances, pairs = _class_instance_pairs(annotation)
    objects = []
    for category_id, instance_id in pairs[pairs[:, 1] != 0].tolist():
        mask = (classes == category_id) & (instances == instance_id)
        objects.append({"id": len(objects) + 1, "category_id": category_id, "iscrowd": 0, "area": float(mask.sum()),
                        "bbox": _bbox(mask), "segmentation": json.dumps(encode_mask(mask))})
    return objects


def _panoptic_from_annotation(annotation: Image.Image) -> tuple[np.ndarray, list[dict]]:
    classes, instances, pairs = _class_instance_pairs(annotation)
    segment_map = np.zeros(classes.shape, dtype=np.int64)
    segments = []
    for category_id, instance_id in pairs.tolist():
        mask = (classes == category_id) & (instances == instance_id)
        segment_map[mask] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "category_id": category_id, "area": int(mask.sum()),
                         "bbox": _bbox(mask), "iscrowd": 0})
    return segment_map, segments


def _output_features(dataset: datasets.Dataset, removed: set[str], reader: datasets.Features,
                     new: tuple[str, ...]) -> datasets.Features:
    """The dataset's features for the columns kept, the reader's for the ``new`` columns."""
    kept = {name: feature for name, feature in dataset.features.items() if name not in removed}
    return datasets.Features({**kept, **{name: reader[name] for name in new}})


def prepare_hub_dataset(dataset: datasets.Dataset, task: str, name: str = "dataset") -> datasets.Dataset:
    """``dataset`` (any layout of the module docstring) with the columns our local reader gives for ``task``.

    - panoptic: ``image``, ``panoptic_image`` (RGB-encoded segment ids), ``segments_info``;
    - instance: ``image``, ``objects`` (``{id, category_id, iscrowd, area, bbox, segmentation}``, segmentation a
      JSON string of a compressed RLE), ``image_id`` (the row index when the dataset has none), ``height``, ``width``;
    - semantic: ``image``, ``annotation`` (single-channel, 0 = void, k = class k).

    Datasets already in the reader's layout are returned unchanged; the others are converted with ``map`` (cached
    by ``datasets`` for Hub datasets). Every other column is kept.

    Raises:
        ValueError: unknown layout (see ``detect_hub_layout``) or a layout that cannot serve ``task`` (e.g. a
            single-channel label map for instance segmentation: it has no instance ids).
    """
    if task not in _TASKS:
        raise ValueError(f"Unknown task '{task}'; expected one of {_TASKS}.")
    layout = detect_hub_layout(dataset, name)
    if task not in HUB_LAYOUTS[layout]:
        raise ValueError(f"Dataset {name} has the '{layout}' layout (columns {dataset.column_names}), which cannot "
                         f"serve {task} segmentation; it serves: {', '.join(HUB_LAYOUTS[layout])}.")
    if layout == "coco_panoptic":
        column = _panoptic_png_column(dataset)
        return dataset if column == "panoptic_image" else dataset.rename_column(column, "panoptic_image")
    if layout in ("coco_instances", "label_png"):
        return dataset

    # class_instance_png: decode only the annotation column; the images pass through untouched.
    if task == "semantic":
        def to_label_map(annotation):
            classes = np.asarray(annotation.convert("RGB"))[..., 0]
            return {"annotation": Image.fromarray(np.ascontiguousarray(classes), mode="L")}

        return dataset.map(to_label_map, input_columns="annotation", desc="R channel -> label map")
    if task == "instance":
        def to_objects(annotation, index):
            return {"objects": _objects_from_annotation(annotation), "image_id": index,
                    "height": annotation.height, "width": annotation.width}

        new = ("objects", "image_id", "height", "width")
        removed = {"annotation", *new} & set(dataset.column_names)
        features = _output_features(dataset, removed, INSTANCE_FEATURES, new)
        return dataset.map(to_objects, input_columns="annotation", with_indices=True, remove_columns=sorted(removed),
                           features=features, desc="R/G annotation -> instance objects")

    def to_panoptic(annotation):
        segment_map, segments = _panoptic_from_annotation(annotation)
        return {"panoptic_image": Image.fromarray(id_to_rgb(segment_map)), "segments_info": segments}

    new = ("panoptic_image", "segments_info")
    removed = {"annotation", *new} & set(dataset.column_names)
    features = _output_features(dataset, removed, PANOPTIC_FEATURES, new)
    return dataset.map(to_panoptic, input_columns="annotation", remove_columns=sorted(removed), features=features,
                       desc="R/G annotation -> panoptic PNG")
