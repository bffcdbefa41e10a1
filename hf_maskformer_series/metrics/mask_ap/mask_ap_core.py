"""COCO mask average precision: pycocotools' ``COCOeval(iouType="segm")``, or the same evaluation by a faster library.

Ground truth and predictions are given per image in memory; this module builds the two ``COCO`` datasets exactly as
``COCO(annotation_file)`` and ``COCO.loadRes(results)`` would (areas and boxes from the RLE, 1-based ids) and runs
``evaluate() / accumulate() / summarize()`` of a backend: ``hotcoco`` (Rust) or ``faster_coco_eval`` (C++) when
installed, else ``pycocotools``. All three give pycocotools' numbers (the tests check each to 1e-12); at COCO val's
size hotcoco's step is ~50x faster (``benchmarks/bench_metrics.py``). The twelve COCO numbers are returned as fractions in [0, 1]
(-1 where undefined, e.g. no ground truth in an area range), named AP, AP50, AP75, APs, APm, APl, AR1, AR10,
AR100, ARs, ARm, ARl.

This file is self-contained (numpy + pycocotools; hotcoco / faster-coco-eval optional) so that the ``evaluate`` module
next to it can be copied as is.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["BACKENDS", "COCO_STAT_NAMES", "compute_mask_ap", "default_backend"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("hotcoco", "faster_coco_eval", "pycocotools")


def _check_size(size: tuple[int, int], height: int | None, width: int | None, what: str) -> None:
    if height is not None and (size[0], size[1]) != (height, width):
        raise ValueError(f"{what}: its mask is {size[0]}x{size[1]} (height x width) but the image's other masks (or "
                         f"image_sizes) are {height}x{width}; predictions and references must have the same size.")


def _as_rle(segmentation, height: int | None, width: int | None, what: str) -> dict:
    """Any COCO segmentation (bool mask, polygons, uncompressed or compressed RLE) -> compressed RLE (bytes).

    A mask or RLE whose size is not ``height x width`` raises ``ValueError`` naming both sizes."""
    if isinstance(segmentation, np.ndarray):
        if segmentation.ndim != 2:
            raise ValueError(f"{what}: a mask must be [height, width]; got shape {tuple(segmentation.shape)}.")
        _check_size(segmentation.shape, height, width, what)
        return mask_utils.encode(np.asfortranarray(segmentation.astype(np.uint8)))
    if isinstance(segmentation, list):
        if height is None or width is None:
            raise ValueError(f"{what}: polygons need the image size; pass image_sizes.")
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(s) for s in segmentation["size"]]
        _check_size(size, height, width, what)
        counts = segmentation["counts"]
        if isinstance(counts, list):
            return mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise ValueError(f"{what}: a segmentation must be a bool mask, polygons or RLE; got {type(segmentation).__name__}.")


def _image_size(index: int, objects: Sequence[dict], image_sizes) -> tuple[int | None, int | None]:
    if image_sizes is not None:
        return int(image_sizes[index][0]), int(image_sizes[index][1])
    for obj in objects:
        segmentation = obj["segmentation"]
        if isinstance(segmentation, np.ndarray):
            return int(segmentation.shape[0]), int(segmentation.shape[1])
        if isinstance(segmentation, dict) and "size" in segmentation:
            return int(segmentation["size"][0]), int(segmentation["size"][1])
    return None, None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def default_backend() -> str:
    """The fastest installed backend: ``hotcoco``, else ``faster_coco_eval``, else ``pycocotools``."""
    return next(name for name in BACKENDS if name == "pycocotools" or _installed(name))


def _evaluate(backend: str, gt_dataset: dict, dt_dataset: dict):
    """Run COCOeval(iouType="segm") of ``backend`` on two COCO dataset dicts; the finished evaluator (``stats``,
    ``eval["precision"]`` ``[T, R, K, A, M]``, ``params.catIds``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "hotcoco":
            import hotcoco

            evaluator = hotcoco.COCOeval(hotcoco.COCO(gt_dataset), hotcoco.COCO(dt_dataset), "segm")
        elif backend == "faster_coco_eval":
            import faster_coco_eval

            evaluator = faster_coco_eval.COCOeval_faster(
                faster_coco_eval.COCO(gt_dataset), faster_coco_eval.COCO(dt_dataset), "segm")
        else:
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset, coco_dt.dataset = gt_dataset, dt_dataset
            coco_gt.createIndex()
            coco_dt.createIndex()
            evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def compute_mask_ap(
    predictions: Sequence[Sequence[dict]],
    references: Sequence[Sequence[dict]],
    categories: Sequence[int | dict] | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    per_class: bool = False,
    backend: str | None = None,
) -> dict:
    """COCO mask AP (``COCOeval(iouType="segm")``, default parameters: IoU 0.50:0.95, 101 recall points,
    max 1/10/100 detections, areas small < 32^2 <= medium < 96^2 <= large).

    Args:
        predictions: per image, ``[{"segmentation", "score", "category_id"}]``; a segmentation is a ``[H, W]`` bool
            mask or an RLE.
        references: per image, ``[{"segmentation", "category_id", "iscrowd" (optional), "area" (optional)}]``;
            a segmentation is a bool mask, polygons or RLE. ``area`` defaults to the mask area. Every mask of an
            image (predicted or not) must have the same size, else ``ValueError`` naming both sizes.
        categories: category ids (or ``{"id"}`` dicts) to evaluate; default: every category in ``references``.
        image_sizes: per image ``(height, width)``; needed only for polygons without another sized object.
        per_class: also return ``per_class_AP`` (``{category_id: AP}``, -1 for a class without ground truth).
        backend: the COCOeval implementation, one of ``BACKENDS``; all give pycocotools' numbers (checked to 1e-12
            in the tests). Default: ``default_backend()``, the fastest installed (hotcoco is ~50x faster than
            pycocotools at COCO val's size, see ``benchmarks/bench_metrics.py``).

    Returns:
        ``{"AP": ..., "AP50": ..., ..., "ARl": ...}`` (``COCO_STAT_NAMES``), plus ``per_class_AP`` if asked.
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend '{backend}'; expected one of {BACKENDS}.")
    if len(predictions) != len(references):
        raise ValueError(f"Got predictions for {len(predictions)} images and references for {len(references)}.")
    if image_sizes is not None and len(image_sizes) != len(references):
        raise ValueError(f"Got {len(image_sizes)} image sizes for {len(references)} images.")
    images, gt_annotations, dt_annotations = [], [], []
    for index, (image_predictions, image_references) in enumerate(zip(predictions, references)):
        height, width = _image_size(index, list(image_references) + list(image_predictions), image_sizes)
        image_id = index + 1
        images.append({"id": image_id, "height": height or 0, "width": width or 0})  # 0: no object, size unknown
        for objects, converted, what in ((image_references, gt_annotations, "reference"),
                                         (image_predictions, dt_annotations, "prediction")):
            if not objects:
                continue
            rles = [_as_rle(obj["segmentation"], height, width, f"{what} {len(converted) + k} of image {index}")
                    for k, obj in enumerate(objects)]
            areas, boxes = mask_utils.area(rles).tolist(), mask_utils.toBbox(rles).tolist()
            for obj, rle, area, box in zip(objects, rles, areas, boxes):
                annotation = {"id": len(converted) + 1, "image_id": image_id, "category_id": int(obj["category_id"]),
                              "segmentation": rle, "bbox": box, "area": float(area), "iscrowd": 0}
                if what == "reference":
                    annotation["iscrowd"] = int(obj.get("iscrowd") or 0)
                    if obj.get("area") is not None:
                        annotation["area"] = float(obj["area"])
                else:
                    annotation["score"] = float(obj["score"])
                converted.append(annotation)
    if categories is None:
        category_ids = sorted({a["category_id"] for a in gt_annotations})
    else:
        category_ids = sorted(int(c["id"]) if isinstance(c, dict) else int(c) for c in categories)
    if not category_ids:
        raise ValueError("No categories to evaluate: the references hold no object and no categories were given.")
    category_list = [{"id": c, "name": str(c)} for c in category_ids]
    evaluator = _evaluate(backend, {"images": images, "annotations": gt_annotations, "categories": category_list},
                          {"images": images, "annotations": dt_annotations, "categories": category_list})
    report = {name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats)}
    if per_class:
        precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]  # [T, R, K] at area "all", maxDets 100
        report["per_class_AP"] = {}
        for k, category_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k]
            values = values[values > -1]
            report["per_class_AP"][int(category_id)] = float(values.mean()) if values.size else -1.0
    return report
