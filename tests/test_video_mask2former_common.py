"""The shared model tests (`tests/_model_tester.py`) for the video Mask2Former."""

from __future__ import annotations

import pytest
import torch

import hf_maskformer_series as hms
from tests._model_tester import ModelTesterMixin
from tests._tiny_configs import tiny_mask2former_kwargs


class TestVideoMask2Former(ModelTesterMixin):
    config_class = hms.SeriesVideoMask2FormerConfig
    model_class = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation
    base_model_class = hms.SeriesVideoMask2FormerModel
    input_name = "pixel_values_videos"
    frames = 2
    num_decoder_layers = 4

    def config_kwargs(self, **overrides):
        return tiny_mask2former_kwargs(**overrides)

    def test_frame_pixel_mask_is_accepted_and_checked(self):
        model = self.model()
        inputs = self.inputs()
        per_frame = inputs["pixel_mask"][:, None].expand(-1, self.frames, -1, -1)
        with torch.no_grad():
            outputs = model(inputs["pixel_values_videos"], pixel_mask=per_frame)
        assert outputs.image_sizes.tolist() == [[64, 96], [40, 50]]
        with pytest.raises(ValueError, match=r"\[batch, H, W\] or \[batch, frames, H, W\]"):
            model(inputs["pixel_values_videos"], pixel_mask=per_frame[:, :, :32])


def test_video_output_dataclass_is_importable_from_the_model_module():
    from hf_maskformer_series import modeling_outputs, modeling_video_mask2former

    assert modeling_video_mask2former.SeriesVideoInstanceSegmentationOutput is (
        modeling_outputs.SeriesVideoInstanceSegmentationOutput
    ) is hms.SeriesVideoInstanceSegmentationOutput
