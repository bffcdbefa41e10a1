"""hf-maskformer-series: MaskFormer, Mask2Former and video Mask2Former as Hugging Face models.

Importing the package registers every model with transformers' Auto classes.
"""

from .configuration_mask2former import SeriesMask2FormerConfig
from .configuration_maskformer import SeriesMaskFormerConfig
from .configuration_video_mask2former import SeriesVideoMask2FormerConfig
from .image_processing import SeriesMask2FormerImageProcessor, SeriesMaskFormerImageProcessor
from .modeling_mask2former import (
    SeriesMask2FormerForUniversalSegmentation,
    SeriesMask2FormerModel,
    SeriesMask2FormerPreTrainedModel,
)
from .modeling_maskformer import (
    SeriesMaskFormerForInstanceSegmentation,
    SeriesMaskFormerModel,
    SeriesMaskFormerPreTrainedModel,
)
from .modeling_outputs import (
    SeriesSegmentationModelOutput,
    SeriesUniversalSegmentationOutput,
    SeriesVideoInstanceSegmentationOutput,
)
from .modeling_video_mask2former import (
    SeriesVideoMask2FormerForVideoInstanceSegmentation,
    SeriesVideoMask2FormerModel,
    SeriesVideoMask2FormerPreTrainedModel,
)
from .registration import register_auto_classes
from .video_processing import SeriesVideoMask2FormerVideoProcessor
from .video_tracking import windowed_video_inference

register_auto_classes()

__version__ = "0.1.0"

__all__ = [
    "SeriesMask2FormerConfig",
    "SeriesMask2FormerForUniversalSegmentation",
    "SeriesMask2FormerImageProcessor",
    "SeriesMask2FormerModel",
    "SeriesMask2FormerPreTrainedModel",
    "SeriesMaskFormerConfig",
    "SeriesMaskFormerForInstanceSegmentation",
    "SeriesMaskFormerImageProcessor",
    "SeriesMaskFormerModel",
    "SeriesMaskFormerPreTrainedModel",
    "SeriesSegmentationModelOutput",
    "SeriesUniversalSegmentationOutput",
    "SeriesVideoInstanceSegmentationOutput",
    "SeriesVideoMask2FormerConfig",
    "SeriesVideoMask2FormerForVideoInstanceSegmentation",
    "SeriesVideoMask2FormerModel",
    "SeriesVideoMask2FormerPreTrainedModel",
    "SeriesVideoMask2FormerVideoProcessor",
    "windowed_video_inference",
    "register_auto_classes",
]
