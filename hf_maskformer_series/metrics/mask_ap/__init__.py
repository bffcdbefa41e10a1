"""COCO mask AP: plain functions (``compute_mask_ap``) and the ``evaluate`` module ``mask_ap.py``."""

from .mask_ap_core import COCO_STAT_NAMES, compute_mask_ap, mask_to_rle

__all__ = ["COCO_STAT_NAMES", "compute_mask_ap", "mask_to_rle"]
