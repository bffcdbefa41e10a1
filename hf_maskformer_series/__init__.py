"""hf-maskformer-series: MaskFormer, Mask2Former and video Mask2Former as Hugging Face models.

Importing the package registers every model with transformers' Auto classes.
"""

from .configuration_mask2former import SeriesMask2FormerConfig
from .modeling_mask2former import (
    SeriesMask2FormerForUniversalSegmentation,
    SeriesMask2FormerModel,
    SeriesMask2FormerPreTrainedModel,
)
from .modeling_outputs import SeriesSegmentationModelOutput, SeriesUniversalSegmentationOutput
from .registration import register_auto_classes

register_auto_classes()

__version__ = "0.1.0"

__all__ = [
    "SeriesMask2FormerConfig",
    "SeriesMask2FormerForUniversalSegmentation",
    "SeriesMask2FormerModel",
    "SeriesMask2FormerPreTrainedModel",
    "SeriesSegmentationModelOutput",
    "SeriesUniversalSegmentationOutput",
    "register_auto_classes",
]
