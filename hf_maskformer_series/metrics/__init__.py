"""Segmentation metrics as plain functions and as ``evaluate`` modules that load offline from a local path.

- ``panoptic_quality``: PQ / SQ / RQ (all, things, stuff, per class), panopticapi semantics.
- ``mean_iou``: mean IoU, per-class IoU and accuracy, pixel accuracy.
- ``mask_ap``: COCO mask AP (pycocotools' COCOeval, run by hotcoco / faster-coco-eval when installed).
- ``video_ap``: YouTube-VIS video AP (spatio-temporal mask IoU).

``load_metric(name)`` returns ``evaluate.load(metric_path(name))``; the core functions need no ``evaluate``. Encode a
bool mask as the compressed RLE the mask and video AP take with ``hf_maskformer_series.data.encode_mask``.
"""

from __future__ import annotations

from pathlib import Path

from .mask_ap import BACKENDS as MASK_AP_BACKENDS
from .mask_ap import COCO_STAT_NAMES, compute_mask_ap
from .mean_iou import MeanIoUAccumulator, compute_mean_iou
from .panoptic_quality import PanopticQualityAccumulator, compute_pq
from .video_ap import VIS_STAT_NAMES, compute_video_ap, spatio_temporal_iou

__all__ = [
    "MASK_AP_BACKENDS",
    "COCO_STAT_NAMES",
    "METRIC_NAMES",
    "VIS_STAT_NAMES",
    "MeanIoUAccumulator",
    "PanopticQualityAccumulator",
    "compute_mask_ap",
    "compute_mean_iou",
    "compute_pq",
    "compute_video_ap",
    "load_metric",
    "metric_path",
    "spatio_temporal_iou",
]

METRIC_NAMES = ("panoptic_quality", "mean_iou", "mask_ap", "video_ap")


def metric_path(name: str) -> str:
    """Folder of the ``evaluate`` module ``name`` (one of ``METRIC_NAMES``), for ``evaluate.load``."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric '{name}'; available: {', '.join(METRIC_NAMES)}.")
    return str(Path(__file__).resolve().parent / name)


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of one of our metric modules from its local folder (works offline)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
