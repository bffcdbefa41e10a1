"""Panoptic quality (PQ, SQ, RQ) with the semantics of panopticapi's ``pq_compute``.

Per image, a predicted and a ground-truth segment of the same category match when their IoU is > 0.5, where the
union leaves out the predicted pixels that fall on void (id 0) in the ground truth. Crowd ground-truth segments
(``iscrowd=1``) are never matched; an unmatched predicted segment is not a false positive when more than half of
its area lies on void or on a crowd region of its category. Then, per category,
``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)``, ``SQ = sum(IoU) / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``, and
the reported PQ/SQ/RQ are means over the categories that occur (TP + FP + FN > 0): all, things, stuff.

Differences from panopticapi, all on inputs it rejects or does not handle: ground-truth areas are counted from the
map (panopticapi reads them from the JSON, which agrees for valid files); negative ids in a prediction map are void
(transformers' post-processing marks unassigned pixels with -1); a group with no occurring category scores 0
instead of raising ``ZeroDivisionError``. Values are fractions in [0, 1].

This file is self-contained (numpy only) so that the ``evaluate`` module next to it can be copied as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["OFFSET", "PanopticQualityAccumulator", "compute_pq"]

OFFSET = 256 * 256 * 256
VOID = 0


class PanopticQualityAccumulator:
    """Accumulates per-category TP / FP / FN / IoU sums image by image; ``compute()`` gives the PQ report.

    Args:
        categories: ``[{"id": int, "isthing": 0/1, "name": str (optional)}, ...]`` of the ground truth.
    """

    def __init__(self, categories: Sequence[dict]):
        if not categories:
            raise ValueError("PQ needs the list of categories ({'id', 'isthing'}).")
        self.categories = {int(c["id"]): c for c in categories}
        self.iou = {cid: 0.0 for cid in self.categories}
        self.tp = {cid: 0 for cid in self.categories}
        self.fp = {cid: 0 for cid in self.categories}
        self.fn = {cid: 0 for cid in self.categories}
        self.num_images = 0

    def update(self, prediction: np.ndarray, prediction_segments: Iterable[dict], reference: np.ndarray,
               reference_segments: Iterable[dict], image_name: str | None = None) -> None:
        """Add one image.

        Args:
            prediction: ``[height, width]`` int predicted segment ids (0 or negative = void).
            prediction_segments: ``[{"id", "category_id"}]`` for every predicted segment id in ``prediction``
                (``label_id`` is accepted for ``category_id``, as in transformers' post-processing output; it must
                then be in the same id space as the reference categories).
            reference: ``[height, width]`` int ground-truth segment ids (0 = void).
            reference_segments: ``[{"id", "category_id", "iscrowd" (optional)}]``.
            image_name: used in error messages.
        """
        name = image_name if image_name is not None else f"image {self.num_images}"
        prediction = np.asarray(prediction, dtype=np.int64)
        reference = np.asarray(reference, dtype=np.int64)
        if prediction.shape != reference.shape or prediction.ndim != 2:
            raise ValueError(f"{name}: prediction {tuple(prediction.shape)} and reference {tuple(reference.shape)} "
                             "must be 2-D maps of the same shape.")
        prediction = np.maximum(prediction, VOID)  # negative ids are void
        if reference.min(initial=0) < 0 or reference.max(initial=0) >= OFFSET or prediction.max(initial=0) >= OFFSET:
            raise ValueError(f"{name}: segment ids must lie in [0, 256**3).")
        pred_segments = {int(s["id"]): int(s["category_id"] if "category_id" in s else s["label_id"])
                         for s in prediction_segments}
        gt_segments = {int(s["id"]): (int(s["category_id"]), int(s.get("iscrowd", 0))) for s in reference_segments}
        for segment_id, category_id in list(pred_segments.items()) + [(k, v[0]) for k, v in gt_segments.items()]:
            if category_id not in self.categories:
                raise ValueError(f"{name}: segment {segment_id} has unknown category_id {category_id}; known ids: "
                                 f"{sorted(self.categories)}.")

        # One pass over the pixels: the (ground truth, prediction) id pairs and their counts; areas are their sums.
        pairs, intersections = np.unique(reference * OFFSET + prediction, return_counts=True)
        overlap = dict(zip(zip((pairs // OFFSET).tolist(), (pairs % OFFSET).tolist()), intersections.tolist()))
        pred_area, gt_area = {}, {}
        for (gt_id, pred_id), count in overlap.items():
            pred_area[pred_id] = pred_area.get(pred_id, 0) + count
            gt_area[gt_id] = gt_area.get(gt_id, 0) + count
        pred_area.pop(VOID, None)
        unlisted = sorted(set(pred_area) - set(pred_segments))
        if unlisted:
            raise ValueError(f"{name}: predicted segment id {unlisted[0]} is in the map but not in the prediction's "
                             "segments_info.")
        missing = sorted(set(pred_segments) - set(pred_area))
        if missing:
            raise ValueError(f"{name}: predicted segment ids {missing} are in segments_info but not in the map.")

        gt_matched, pred_matched = set(), set()
        for (gt_id, pred_id), intersection in overlap.items():
            if gt_id not in gt_segments or pred_id not in pred_segments:
                continue
            gt_category, gt_crowd = gt_segments[gt_id]
            if gt_crowd or gt_category != pred_segments[pred_id]:
                continue
            union = pred_area[pred_id] + gt_area[gt_id] - intersection - overlap.get((VOID, pred_id), 0)
            iou = intersection / union
            if iou > 0.5:
                self.tp[gt_category] += 1
                self.iou[gt_category] += iou
                gt_matched.add(gt_id)
                pred_matched.add(pred_id)

        crowd_by_category = {}
        for gt_id, (category_id, crowd) in gt_segments.items():
            if gt_id in gt_matched:
                continue
            if crowd:
                crowd_by_category[category_id] = gt_id
                continue
            self.fn[category_id] += 1

        for pred_id, category_id in pred_segments.items():
            if pred_id in pred_matched:
                continue
            ignored = overlap.get((VOID, pred_id), 0)
            if category_id in crowd_by_category:
                ignored += overlap.get((crowd_by_category[category_id], pred_id), 0)
            if ignored / pred_area[pred_id] > 0.5:
                continue
            self.fp[category_id] += 1
        self.num_images += 1

    def _average(self, isthing: bool | None) -> tuple[dict, dict]:
        totals = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        count = 0
        per_class = {}
        for category_id, category in self.categories.items():
            if isthing is not None and bool(category.get("isthing", 0)) != isthing:
                continue
            tp, fp, fn, iou = self.tp[category_id], self.fp[category_id], self.fn[category_id], self.iou[category_id]
            if tp + fp + fn == 0:
                per_class[category_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
                continue
            denominator = tp + 0.5 * fp + 0.5 * fn
            scores = {"pq": iou / denominator, "sq": iou / tp if tp else 0.0, "rq": tp / denominator}
            per_class[category_id] = {**scores, "tp": tp, "fp": fp, "fn": fn}
            for key in totals:
                totals[key] += scores[key]
            count += 1
        return ({key: (value / count if count else 0.0) for key, value in totals.items()} | {"n": count}), per_class

    def compute(self) -> dict:
        """The report: ``pq, sq, rq, n`` (all categories), ``pq_things, sq_things, rq_things, n_things``,
        ``pq_stuff, sq_stuff, rq_stuff, n_stuff`` and ``per_class`` (``{category_id: {pq, sq, rq, tp, fp, fn}}``)."""
        report = {}
        everything, per_class = self._average(None)
        report.update(everything)
        for suffix, isthing in (("things", True), ("stuff", False)):
            group, _ = self._average(isthing)
            report.update({f"{key}_{suffix}": value for key, value in group.items()})
        report["per_class"] = per_class
        return report


def compute_pq(predictions: Sequence[np.ndarray], references: Sequence[np.ndarray],
               prediction_segments_info: Sequence[Iterable[dict]], reference_segments_info: Sequence[Iterable[dict]],
               categories: Sequence[dict]) -> dict:
    """Panoptic quality over a list of images (see the module docstring and ``PanopticQualityAccumulator``).

    The arguments come in the order of the ``evaluate`` module's ``add`` / ``compute`` (maps first, then their
    segments). Version 0.1.0 took ``(predictions, prediction_segments_info, references, reference_segments_info,
    categories)``; a call in that order now raises ``ValueError`` (a list of segment dicts is not a map).

    Args:
        predictions: per image, ``[height, width]`` predicted segment ids (0 or negative = void).
        references: per image, ``[height, width]`` ground-truth segment ids (0 = void).
        prediction_segments_info: per image, ``[{"id", "category_id"}]``.
        reference_segments_info: per image, ``[{"id", "category_id", "iscrowd" (optional, default 0)}]``.
        categories: ``[{"id", "isthing"}]``.
    """
    lengths = {len(predictions), len(prediction_segments_info), len(references), len(reference_segments_info)}
    if len(lengths) != 1:
        raise ValueError("predictions, references, prediction_segments_info and reference_segments_info must have "
                         "one entry per image.")
    for argument, maps in (("predictions", predictions), ("references", references)):
        for index, segment_map in enumerate(maps):
            if isinstance(segment_map, dict) or (isinstance(segment_map, (list, tuple))
                                                 and (not segment_map or isinstance(segment_map[0], dict))):
                raise ValueError(f"{argument}[{index}] must be a [height, width] segment-id array, got "
                                 f"{type(segment_map).__name__}; the order is compute_pq(predictions, references, "
                                 "prediction_segments_info, reference_segments_info, categories).")
    accumulator = PanopticQualityAccumulator(categories)
    for prediction, reference, pred_info, gt_info in zip(predictions, references, prediction_segments_info,
                                                         reference_segments_info):
        accumulator.update(prediction, pred_info, reference, gt_info)
    return accumulator.compute()
