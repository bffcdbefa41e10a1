"""Mean intersection-over-union for semantic segmentation (the semantics of ``evaluate``'s ``mean_iou``).

Intersections, unions, predicted and ground-truth areas are summed per class over the whole dataset; then
``IoU_c = intersection_c / union_c`` and ``accuracy_c = intersection_c / ground_truth_area_c`` (NaN for a class
that never occurs), ``mean_iou`` and ``mean_accuracy`` are NaN-skipping means over classes, and
``overall_accuracy = sum(intersection) / sum(ground_truth_area)`` (pixel accuracy). Pixels whose ground truth is
``ignore_index`` are left out entirely. ``reduce_labels=True`` maps ground-truth 0 (background) to
``ignore_index`` and shifts the other labels down by one (ADE20K's convention); ``label_map`` renames
ground-truth labels first.

This file is self-contained (numpy only) so that the ``evaluate`` module next to it can be copied as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MeanIoUAccumulator", "compute_mean_iou"]


class MeanIoUAccumulator:
    """Per-class area sums, image by image; ``compute()`` gives the report.

    Args:
        num_labels: number of classes; labels are ``0 .. num_labels - 1``.
        ignore_index: ground-truth value to leave out.
        reduce_labels: ground truth 0 -> ``ignore_index``, others -1.
        label_map: ``{old: new}`` applied to the ground truth before ``reduce_labels``.
    """

    def __init__(self, num_labels: int, ignore_index: int = 255, reduce_labels: bool = False,
                 label_map: dict[int, int] | None = None):
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1; got {num_labels}.")
        self.num_labels = int(num_labels)
        self.ignore_index = int(ignore_index)
        self.reduce_labels = reduce_labels
        self.label_map = label_map
        self.area_intersect = np.zeros(self.num_labels, dtype=np.int64)
        self.area_union = np.zeros(self.num_labels, dtype=np.int64)
        self.area_prediction = np.zeros(self.num_labels, dtype=np.int64)
        self.area_label = np.zeros(self.num_labels, dtype=np.int64)
        self.num_images = 0

    def update(self, prediction: np.ndarray, reference: np.ndarray) -> None:
        """Add one image: ``prediction`` and ``reference`` are ``[height, width]`` integer label maps."""
        name = f"image {self.num_images}"
        prediction = np.asarray(prediction).astype(np.int64)
        label = np.asarray(reference).astype(np.int64)
        if prediction.shape != label.shape:
            raise ValueError(f"{name}: prediction shape {tuple(prediction.shape)} differs from reference shape "
                             f"{tuple(label.shape)}.")
        if self.label_map:
            mapped = label.copy()
            for old, new in self.label_map.items():
                mapped[label == old] = new
            label = mapped
        if self.reduce_labels:
            background = label == 0
            label = label - 1
            label[background | (label == self.ignore_index - 1)] = self.ignore_index
        valid = label != self.ignore_index
        prediction, label = prediction[valid], label[valid]
        if label.size and (label.min() < 0 or label.max() >= self.num_labels):
            bad = np.unique(label[(label < 0) | (label >= self.num_labels)])
            raise ValueError(f"{name}: reference labels {bad.tolist()} are outside [0, {self.num_labels}) and are not "
                             f"ignore_index={self.ignore_index}.")
        if prediction.size and (prediction.min() < 0 or prediction.max() >= self.num_labels):
            bad = np.unique(prediction[(prediction < 0) | (prediction >= self.num_labels)])
            raise ValueError(f"{name}: predicted labels {bad.tolist()} are outside [0, {self.num_labels}).")
        intersect = np.bincount(label[prediction == label], minlength=self.num_labels)
        area_prediction = np.bincount(prediction, minlength=self.num_labels)
        area_label = np.bincount(label, minlength=self.num_labels)
        self.area_intersect += intersect
        self.area_prediction += area_prediction
        self.area_label += area_label
        self.area_union += area_prediction + area_label - intersect
        self.num_images += 1

    def compute(self, nan_to_num: float | None = None) -> dict:
        """``mean_iou``, ``mean_accuracy``, ``overall_accuracy``, ``per_category_iou`` and ``per_category_accuracy``
        (``[num_labels]`` arrays, NaN for absent classes unless ``nan_to_num`` is given)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.area_intersect / self.area_union
            accuracy = self.area_intersect / self.area_label
            overall = self.area_intersect.sum() / self.area_label.sum() if self.area_label.sum() else float("nan")
        report = {
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
            "overall_accuracy": float(overall),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
        if nan_to_num is not None:
            report = {key: np.nan_to_num(value, nan=nan_to_num) if isinstance(value, np.ndarray)
                      else (nan_to_num if value != value else value) for key, value in report.items()}
        return report


def compute_mean_iou(predictions: Sequence[np.ndarray], references: Sequence[np.ndarray], num_labels: int,
                     ignore_index: int = 255, reduce_labels: bool = False, label_map: dict[int, int] | None = None,
                     nan_to_num: float | None = None) -> dict:
    """Mean IoU over a list of ``[height, width]`` label maps (see the module docstring)."""
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions for {len(references)} references.")
    accumulator = MeanIoUAccumulator(num_labels, ignore_index, reduce_labels, label_map)
    for prediction, reference in zip(predictions, references):
        accumulator.update(prediction, reference)
    return accumulator.compute(nan_to_num)
