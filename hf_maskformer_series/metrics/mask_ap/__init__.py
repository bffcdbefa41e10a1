"""COCO mask AP: plain functions (``compute_mask_ap``) and the ``evaluate`` module ``mask_ap.py``."""

from .mask_ap_core import BACKENDS, COCO_STAT_NAMES, compute_mask_ap, default_backend

__all__ = ["BACKENDS", "COCO_STAT_NAMES", "compute_mask_ap", "default_backend"]
