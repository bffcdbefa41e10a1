"""Registration of the package's models with transformers' Auto classes (idempotent)."""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageSegmentation,
    AutoModelForUniversalSegmentation,
)

from .configuration_mask2former import SeriesMask2FormerConfig
from .modeling_mask2former import SeriesMask2FormerForUniversalSegmentation, SeriesMask2FormerModel


def _register(auto_class, config_class, model_class) -> None:
    auto_class.register(config_class, model_class, exist_ok=True)


def register_auto_classes() -> None:
    """Register configs, models and processors of every family (safe to call more than once)."""
    AutoConfig.register(SeriesMask2FormerConfig.model_type, SeriesMask2FormerConfig, exist_ok=True)
    _register(AutoModel, SeriesMask2FormerConfig, SeriesMask2FormerModel)
    _register(AutoModelForUniversalSegmentation, SeriesMask2FormerConfig, SeriesMask2FormerForUniversalSegmentation)
    _register(AutoModelForImageSegmentation, SeriesMask2FormerConfig, SeriesMask2FormerForUniversalSegmentation)
