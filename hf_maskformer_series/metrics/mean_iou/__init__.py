"""Mean IoU: plain functions (``compute_mean_iou``) and the ``evaluate`` module ``mean_iou.py``."""

from .miou_core import MeanIoUAccumulator, compute_mean_iou

__all__ = ["MeanIoUAccumulator", "compute_mean_iou"]
