"""Panoptic quality: plain functions (``compute_pq``) and the ``evaluate`` module ``panoptic_quality.py``."""

from .pq_core import OFFSET, PanopticQualityAccumulator, compute_pq

__all__ = ["OFFSET", "PanopticQualityAccumulator", "compute_pq"]
