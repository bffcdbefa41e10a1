"""YouTube-VIS video AP: plain functions (``compute_video_ap``) and the ``evaluate`` module ``video_ap.py``."""

from .video_ap_core import VIS_STAT_NAMES, YTVIS_AREA_RANGES, compute_video_ap, spatio_temporal_iou

__all__ = ["VIS_STAT_NAMES", "YTVIS_AREA_RANGES", "compute_video_ap", "spatio_temporal_iou"]
