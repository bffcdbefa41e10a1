"""YouTube-VIS video AP: COCOeval's matching and 101-point AP over spatio-temporal mask IoU.

Built on pycocotools' ``COCOeval`` with the two changes the YouTube-VIS API (``ytvoseval.py``) makes:

- the IoU of a predicted and a ground-truth track is ``sum_t |P_t & G_t| / sum_t |P_t | G_t|`` over the frames,
  where a frame in which one of them is absent (``None``) adds the other's area to the union only;
- a track's area is the mean of its non-zero per-frame areas, and the area ranges are small < 128^2 <= medium
  < 256^2 <= large.

Everything else (IoU thresholds 0.50:0.95, 101 recall points, max 1/10/100 detections per video, crowd handling,
greedy matching by score) is COCOeval's own code. The twelve numbers are returned as fractions in [0, 1]
(-1 where undefined): AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl.

This file is self-contained (numpy + pycocotools) so that the ``evaluate`` module next to it can be copied as is.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

__all__ = ["VIS_STAT_NAMES", "YTVIS_AREA_RANGES", "compute_video_ap", "spatio_temporal_iou"]

VIS_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
YTVIS_AREA_RANGES = [[0**2, 1e5**2], [0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]]


def _as_rle(segmentation, what: str):
    """A frame's segmentation (None, bool mask, uncompressed or compressed RLE) -> compressed RLE or None."""
    if segmentation is None:
        return None
    if isinstance(segmentation, np.ndarray):
        if segmentation.ndim != 2:
            raise ValueError(f"{what}: a frame mask must be [height, width]; got shape {tuple(segmentation.shape)}.")
        return mask_utils.encode(np.asfortranarray(segmentation.astype(np.uint8)))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(s) for s in segmentation["size"]]
        counts = segmentation["counts"]
        if isinstance(counts, list):
            return mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise ValueError(f"{what}: a frame segmentation must be None, a bool mask or RLE; got "
                     f"{type(segmentation).__name__}.")


def spatio_temporal_iou(prediction: Sequence, reference: Sequence) -> float:
    """IoU of two tracks given as per-frame compressed RLE (``None`` = absent): summed intersections over summed
    unions (0 when both are empty everywhere)."""
    if len(prediction) != len(reference):
        raise ValueError(f"Tracks of different lengths: {len(prediction)} and {len(reference)} frames.")
    intersection, union = 0.0, 0.0
    for p, g in zip(prediction, reference):
        if p is not None and g is not None:
            intersection += float(mask_utils.area(mask_utils.merge([p, g], intersect=True)))
            union += float(mask_utils.area(mask_utils.merge([p, g], intersect=False)))
        elif g is not None:
            union += float(mask_utils.area(g))
        elif p is not None:
            union += float(mask_utils.area(p))
    return intersection / union if union > 0 else 0.0


def _mean_area(track: Sequence) -> float:
    areas = [float(mask_utils.area(r)) for r in track if r is not None]
    areas = [a for a in areas if a]
    return float(np.mean(areas)) if areas else 0.0


class VideoCOCOeval(COCOeval):
    """``COCOeval`` over videos: "images" are videos, objects are tracks, IoU is ``spatio_temporal_iou``."""

    def __init__(self, gt_tracks: list[dict], dt_tracks: list[dict], video_ids: list[int], category_ids: list[int]):
        super().__init__(None, None, iouType="segm")
        self.params.imgIds = sorted(video_ids)
        self.params.catIds = sorted(category_ids)
        self.params.areaRng = [list(r) for r in YTVIS_AREA_RANGES]
        self._gt_tracks = gt_tracks
        self._dt_tracks = dt_tracks

    def _prepare(self):
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for track in self._gt_tracks:
            track["ignore"] = int(track.get("iscrowd", 0))
            self._gts[track["image_id"], track["category_id"]].append(track)
        for track in self._dt_tracks:
            self._dts[track["image_id"], track["category_id"]].append(track)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId, catId):  # noqa: N802, N803 (COCOeval's names)
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        ious = np.zeros((len(dt), len(gt)))
        for i, j in np.ndindex(ious.shape):
            ious[i, j] = spatio_temporal_iou(dt[i]["segmentations"], gt[j]["segmentations"])
        return ious


def compute_video_ap(predictions: Sequence[Sequence[dict]], references: Sequence[Sequence[dict]],
                     categories: Sequence[int | dict] | None = None, per_class: bool = False) -> dict:
    """YouTube-VIS AP (see the module docstring).

    Args:
        predictions: per video, ``[{"score", "category_id", "segmentations": [per frame: RLE, bool mask or None]}]``.
        references: per video, ``[{"category_id", "iscrowd" (optional), "segmentations": [...]}]``.
        categories: category ids (or ``{"id"}`` dicts) to evaluate; default: those in the references.
        per_class: also return ``per_class_AP`` (``{category_id: AP}``).
    """
    if len(predictions) != len(references):
        raise ValueError(f"Got predictions for {len(predictions)} videos and references for {len(references)}.")
    gt_tracks, dt_tracks = [], []
    for index, (video_predictions, video_references) in enumerate(zip(predictions, references)):
        video_id = index + 1
        lengths = set()
        for kind, source, sink in (("reference", video_references, gt_tracks),
                                   ("prediction", video_predictions, dt_tracks)):
            for obj in source:
                what = f"{kind} {len(sink)} of video {index}"
                track = [_as_rle(s, what) for s in obj["segmentations"]]
                lengths.add(len(track))
                entry = {"id": len(sink) + 1, "image_id": video_id, "category_id": int(obj["category_id"]),
                         "segmentations": track, "area": _mean_area(track),
                         "iscrowd": int(obj.get("iscrowd", 0)) if kind == "reference" else 0}
                if kind == "prediction":
                    entry["score"] = float(obj["score"])
                sink.append(entry)
        if len(lengths) > 1:
            raise ValueError(f"Video {index}: tracks have different numbers of frames {sorted(lengths)}.")
    if categories is None:
        category_ids = sorted({t["category_id"] for t in gt_tracks})
    else:
        category_ids = sorted(int(c["id"]) if isinstance(c, dict) else int(c) for c in categories)
    if not category_ids:
        raise ValueError("No categories to evaluate: the references hold no track and no categories were given.")
    evaluator = VideoCOCOeval(gt_tracks, dt_tracks, list(range(1, len(references) + 1)), category_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    report = {name: float(value) for name, value in zip(VIS_STAT_NAMES, evaluator.stats)}
    if per_class:
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        report["per_class_AP"] = {}
        for k, category_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k]
            values = values[values > -1]
            report["per_class_AP"][int(category_id)] = float(values.mean()) if values.size else -1.0
    return report
