"""Registration of the package's models with transformers' Auto classes (idempotent)."""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageSegmentation,
    AutoModelForInstanceSegmentation,
    AutoModelForUniversalSegmentation,
    AutoVideoProcessor,
)

from .configuration_mask2former import SeriesMask2FormerConfig
from .configuration_maskformer import SeriesMaskFormerConfig
from .configuration_video_mask2former import SeriesVideoMask2FormerConfig
from .image_processing import SeriesMask2FormerImageProcessor, SeriesMaskFormerImageProcessor
from .modeling_mask2former import SeriesMask2FormerForUniversalSegmentation, SeriesMask2FormerModel
from .modeling_maskformer import SeriesMaskFormerForInstanceSegmentation, SeriesMaskFormerModel
from .modeling_video_mask2former import (
    SeriesVideoMask2FormerForVideoInstanceSegmentation,
    SeriesVideoMask2FormerModel,
)
from .video_processing import SeriesVideoMask2FormerVideoProcessor


def _register(auto_class, config_class, model_class) -> None:
    auto_class.register(config_class, model_class, exist_ok=True)


def _register_image_processor(config_class, processor_class) -> None:
    # the processors are torchvision-backed; AutoImageProcessor resolves them by class name from
    # preprocessor_config.json, and by model type for folders without one
    AutoImageProcessor.register(config_class, image_processor_classes={"torchvision": processor_class}, exist_ok=True)


def _carry_code_in_checkpoints() -> None:
    """Make `save_pretrained` copy the model and processor code into the folder and write `auto_map`, so a saved
    folder loads with `trust_remote_code=True` where this package is not installed."""
    for config_class in (SeriesMask2FormerConfig, SeriesMaskFormerConfig, SeriesVideoMask2FormerConfig):
        config_class.register_for_auto_class("AutoConfig")
    for model_class in (SeriesMask2FormerForUniversalSegmentation, SeriesMaskFormerForInstanceSegmentation,
                        SeriesVideoMask2FormerForVideoInstanceSegmentation):
        model_class.register_for_auto_class("AutoModelForUniversalSegmentation")
    SeriesMask2FormerImageProcessor.register_for_auto_class("AutoImageProcessor")
    SeriesMaskFormerImageProcessor.register_for_auto_class("AutoImageProcessor")
    SeriesVideoMask2FormerVideoProcessor.register_for_auto_class("AutoVideoProcessor")


def _declare_for_image_segmentation_pipeline() -> None:
    """`pipeline("image-segmentation")` checks model classes against transformers' static name tables, which
    `register` does not extend; without this it logs that our models are "not supported" (they work)."""
    from transformers.models.auto import modeling_auto

    names = modeling_auto.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES
    names.setdefault(SeriesMask2FormerConfig.model_type, SeriesMask2FormerForUniversalSegmentation.__name__)
    names.setdefault(SeriesMaskFormerConfig.model_type, SeriesMaskFormerForInstanceSegmentation.__name__)


def register_auto_classes() -> None:
    """Register configs, models and processors of every family (safe to call more than once)."""
    _carry_code_in_checkpoints()
    _declare_for_image_segmentation_pipeline()
    AutoConfig.register(SeriesMask2FormerConfig.model_type, SeriesMask2FormerConfig, exist_ok=True)
    _register(AutoModel, SeriesMask2FormerConfig, SeriesMask2FormerModel)
    _register(AutoModelForUniversalSegmentation, SeriesMask2FormerConfig, SeriesMask2FormerForUniversalSegmentation)
    _register(AutoModelForImageSegmentation, SeriesMask2FormerConfig, SeriesMask2FormerForUniversalSegmentation)
    _register_image_processor(SeriesMask2FormerConfig, SeriesMask2FormerImageProcessor)
    # MaskFormer (registered where transformers registers MaskFormerForInstanceSegmentation, too)
    AutoConfig.register(SeriesMaskFormerConfig.model_type, SeriesMaskFormerConfig, exist_ok=True)
    _register(AutoModel, SeriesMaskFormerConfig, SeriesMaskFormerModel)
    for auto_class in (AutoModelForUniversalSegmentation, AutoModelForImageSegmentation,
                       AutoModelForInstanceSegmentation):
        _register(auto_class, SeriesMaskFormerConfig, SeriesMaskFormerForInstanceSegmentation)
    _register_image_processor(SeriesMaskFormerConfig, SeriesMaskFormerImageProcessor)
    # video Mask2Former
    AutoConfig.register(SeriesVideoMask2FormerConfig.model_type, SeriesVideoMask2FormerConfig, exist_ok=True)
    _register(AutoModel, SeriesVideoMask2FormerConfig, SeriesVideoMask2FormerModel)
    _register(AutoModelForUniversalSegmentation, SeriesVideoMask2FormerConfig,
              SeriesVideoMask2FormerForVideoInstanceSegmentation)
    AutoVideoProcessor.register(SeriesVideoMask2FormerConfig, SeriesVideoMask2FormerVideoProcessor, exist_ok=True)
    from .pipeline_video import register_video_pipeline

    register_video_pipeline()
