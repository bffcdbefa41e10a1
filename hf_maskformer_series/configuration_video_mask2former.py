"""Configuration of the video Mask2Former (`model_type="series_video_mask2former"`).

Every attribute of the image Mask2Former config keeps its name and meaning (an image config's values initialise a
video model); the video adds `num_frames`, the clip length used for training.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from .configuration_mask2former import SeriesMask2FormerConfig


class SeriesVideoMask2FormerConfig(SeriesMask2FormerConfig):
    r"""Configuration of [`SeriesVideoMask2FormerModel`] and [`SeriesVideoMask2FormerForVideoInstanceSegmentation`].

    Accepts every argument of [`SeriesMask2FormerConfig`] (same defaults, the YouTube-VIS configs of the original
    use the same decoder sizes) plus:

    Args:
        num_frames: frames per training clip (the original's `INPUT.SAMPLING_FRAME_NUM`, 2). Inference takes any
            number of frames.
        test_top_k: (query, class) pairs kept per video by the post-processing (10, hard-coded in the original).
    """

    model_type = "series_video_mask2former"
    compatible_model_types = ()  # an image checkpoint initialises it through `from_image_config`

    def __init__(
        self,
        backbone_config: PreTrainedConfig | dict[str, Any] | None = None,
        num_frames: int = 2,
        test_top_k: int = 10,
        **kwargs,
    ):
        if int(num_frames) < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if int(test_top_k) < 1:
            raise ValueError(f"test_top_k must be >= 1, got {test_top_k}")
        self.num_frames = int(num_frames)
        self.test_top_k = int(test_top_k)
        super().__init__(backbone_config=backbone_config, **kwargs)

    @classmethod
    def from_image_config(cls, image_config: SeriesMask2FormerConfig, **kwargs) -> SeriesVideoMask2FormerConfig:
        """A video config with the sizes of an image Mask2Former config (to start from an image checkpoint)."""
        values = image_config.to_dict()
        for key in ("model_type", "architectures", "transformers_version"):
            values.pop(key, None)
        values.update(kwargs)
        return cls(**values)
