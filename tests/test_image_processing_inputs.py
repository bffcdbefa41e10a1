"""Pre-processing input checks: empty image lists and 2-D (grayscale) arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hf_maskformer_series as hms


def _processor() -> hms.SeriesMask2FormerImageProcessor:
    return hms.SeriesMask2FormerImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}, size_divisor=32)


def test_an_empty_image_list_is_a_clear_error():
    with pytest.raises(ValueError, match="`images` is empty"):
        _processor()(images=[], return_tensors="pt")


@pytest.mark.parametrize("as_tensor", [False, True])
def test_gray_2d_arrays_are_converted_like_their_rgb_copies(as_tensor):
    gray = np.random.default_rng(0).integers(0, 255, (20, 28), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, -1)
    image = torch.from_numpy(gray) if as_tensor else gray
    expected = _processor()(images=[rgb], return_tensors="pt")
    result = _processor()(images=[image], do_convert_rgb=True, return_tensors="pt")
    torch.testing.assert_close(result["pixel_values"], expected["pixel_values"])
    torch.testing.assert_close(result["pixel_mask"], expected["pixel_mask"])


def test_gray_2d_array_without_do_convert_rgb_names_the_option():
    gray = np.zeros((20, 28), dtype=np.uint8)
    with pytest.raises(ValueError, match="do_convert_rgb=True"):
        _processor()(images=[gray], do_convert_rgb=False, return_tensors="pt")
