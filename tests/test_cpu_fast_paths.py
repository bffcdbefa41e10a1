"""CPU fast paths: oneDNN linear / convolution layers, channels-last backbone maps, the banded resize and the
exact bool counts of post-processing. Each must give the plain PyTorch result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_maskformer_series.onednn_layers import OneDnnConv2d, OneDnnLinear, use_onednn_layers, uses_onednn
from hf_maskformer_series.post_processing import (
    MaskGeometry,
    _count_true,
    _mask_score_upper_bounds,
    _mask_sums,
    _operator_taps,
    _resize_operators,
    instance_inference,
    resize_mask_logits,
    resized_mask_logit_blocks,
    upsample_crop_resize,
)


def _linear(in_features: int = 24, out_features: int = 40, bias: bool = True) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    plain = nn.Linear(in_features, out_features, bias=bias)
    fast = nn.Linear(in_features, out_features, bias=bias)
    fast.load_state_dict(plain.state_dict())
    use_onednn_layers(fast)
    return plain, fast


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 24), (2, 5, 24), (3, 2, 4, 24), (0, 24)])
def test_onednn_linear_equals_linear(shape, bias):
    plain, fast = _linear(bias=bias)
    assert type(fast) is OneDnnLinear
    x = torch.randn(shape)
    with torch.no_grad():
        assert uses_onednn(x, fast.weight) == (x.numel() > 0)
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
        # a transposed (non-contiguous) input
        xt = torch.randn(24, 9).t()
        torch.testing.assert_close(fast(xt), plain(xt), rtol=1e-5, atol=1e-5)


def test_onednn_linear_trains_and_keeps_other_dtypes_exact():
    plain, fast = _linear()
    x = torch.randn(6, 24)
    assert not uses_onednn(x.requires_grad_(), fast.weight)  # gradients needed: F.linear
    fast(x).square().sum().backward()
    plain(x).square().sum().backward()
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad)
    with torch.no_grad():
        bf16 = x.detach().bfloat16()
        plain.bfloat16(), fast.bfloat16()
        assert torch.equal(fast(bf16), plain(bf16))


@pytest.mark.parametrize(
    "kwargs",
    [dict(kernel_size=1), dict(kernel_size=3, padding=1), dict(kernel_size=3, padding=(0, 1), stride=2),
     dict(kernel_size=3, padding=2, dilation=2, groups=2, bias=False), dict(kernel_size=3, padding="same")],
)
def test_onednn_conv_equals_conv(kwargs):
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 16, **kwargs)
    fast = nn.Conv2d(8, 16, **kwargs)
    fast.load_state_dict(plain.state_dict())
    use_onednn_layers(fast)
    assert type(fast) is OneDnnConv2d
    x = torch.randn(2, 8, 11, 13)
    with torch.no_grad():
        expected = plain(x)
        torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
        channels_last = fast(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(channels_last, expected, rtol=1e-5, atol=1e-5)


def test_models_keep_their_state_dict_and_agree_with_the_plain_layers():
    """The swap is class-only: same keys and tensors; outputs equal those of the same model with plain layers."""
    from hf_maskformer_series import SeriesMask2FormerConfig, SeriesMask2FormerForUniversalSegmentation
    from tests._tiny_configs import tiny_mask2former_kwargs, tiny_resnet

    torch.manual_seed(0)
    config = SeriesMask2FormerConfig(**tiny_mask2former_kwargs(tiny_resnet()))
    model = SeriesMask2FormerForUniversalSegmentation(config).eval()
    classes = {type(module) for module in model.modules()}
    assert OneDnnLinear in classes and OneDnnConv2d in classes and nn.Linear not in classes
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fast = model(pixel_values=pixel_values)
        for module in model.modules():  # back to the plain classes
            if type(module) in (OneDnnLinear, OneDnnConv2d):
                module.__class__ = type(module).__mro__[1]
        plain = model(pixel_values=pixel_values)
    torch.testing.assert_close(fast.masks_queries_logits, plain.masks_queries_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.class_queries_logits, plain.class_queries_logits, rtol=1e-4, atol=1e-4)
    keys = set(model.state_dict())
    use_onednn_layers(model)
    assert set(model.state_dict()) == keys


def test_tracing_takes_the_plain_ops():
    plain, fast = _linear()
    traced = torch.jit.trace(fast, torch.randn(3, 24))
    assert "mkldnn" not in str(traced.graph)
    torch.testing.assert_close(traced(torch.ones(2, 24)), plain(torch.ones(2, 24)))


@pytest.mark.parametrize("columns", [1, 3, 20, 37, 64, 100, 200])
def test_count_true_is_exact(columns):
    generator = torch.Generator().manual_seed(columns)
    for pixels in (0, 1, 5, 1000, 70001):
        flags = torch.rand(pixels, columns, generator=generator) > 0.4
        assert torch.equal(_count_true(flags), flags.sum(0))
    transposed = torch.rand(columns, 999, generator=generator).t() > 0.5  # not contiguous
    assert torch.equal(_count_true(transposed), transposed.sum(0))


def test_resize_blocks_cover_the_output_and_equal_the_original_chain():
    geometry = MaskGeometry(padded=(96, 128), crop=(90, 121), output=(107, 150))
    logits = torch.randn(5, 24, 32)
    expected = upsample_crop_resize(logits, geometry.padded, geometry.crop, geometry.output)
    torch.testing.assert_close(resize_mask_logits(logits, geometry), expected, rtol=1e-5, atol=1e-5)
    rows = []
    for start, stop, block in resized_mask_logit_blocks(logits, geometry):
        assert block.shape == (stop - start, 150, 5)
        torch.testing.assert_close(block.permute(2, 0, 1), expected[:, start:stop], rtol=1e-5, atol=1e-5)
        rows.extend(range(start, stop))
    assert rows == list(range(107))


@pytest.mark.parametrize("geometry", [
    MaskGeometry(padded=(64, 96), crop=(60, 90), output=(13, 21)),  # downsampling: long bands
    MaskGeometry(padded=(96, 128), crop=(96, 128), output=(96, 128)),  # the identity per axis
])
def test_resize_blocks_equal_the_original_chain_when_shrinking_or_at_equal_size(geometry):
    logits = torch.randn(3, 24, 32)
    expected = upsample_crop_resize(logits, geometry.padded, geometry.crop, geometry.output)
    torch.testing.assert_close(resize_mask_logits(logits, geometry), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_threshold", [0.5, 0.3, 0.8])
@pytest.mark.parametrize("with_scratch", [False, True])
def test_mask_sums_equal_the_direct_computation(mask_threshold, with_scratch):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3000, 7, generator=generator) * 4
    threshold_logit = torch.logit(torch.tensor(mask_threshold, dtype=torch.float64)).float()
    logits[:50] = 0.0  # exactly at 0.5's logit
    logits[50:100] = threshold_logit  # exactly at the threshold's logit (not inside: strict)
    logits[:, 5] = -3.0  # an empty mask
    logits[:, 6] = 1e-30  # inside everywhere at 0.5 (a positive value whose sigmoid rounds to 0.5)
    inside = logits > threshold_logit
    expected_sum = (logits.double().sigmoid() * inside).sum(0)
    binary = torch.empty(logits.shape, dtype=torch.bool)
    scratch = torch.empty(logits.shape) if with_scratch else None
    inside_sum, areas = _mask_sums(logits.clone(), mask_threshold, binary, scratch)
    assert torch.equal(binary, inside)
    assert torch.equal(areas, inside.sum(0))
    torch.testing.assert_close(inside_sum, expected_sum, rtol=1e-4, atol=1e-3)  # float32 sums, as the original's
    assert inside_sum[5] == 0 and areas[5] == 0


def test_instance_inference_without_candidates_at_the_output_resolution():
    geometry = MaskGeometry(padded=(32, 32), crop=(30, 29), output=(45, 40))
    class_logits = torch.full((4, 3), -10.0)
    class_logits[:, -1] = 10.0  # every query is "no object"
    found = instance_inference(class_logits, torch.randn(4, 8, 8), top_k=4, geometry=geometry, threshold=0.5)
    assert found["masks"].shape == (0, 45, 40) and found["scores"].numel() == 0


def test_operator_taps_rebuild_the_operator():
    operators = _resize_operators((24, 32), MaskGeometry(padded=(96, 128), crop=(90, 121), output=(107, 150)))
    for operator in (operators.rows, operators.columns):
        index, weight = _operator_taps(operator)
        assert index.shape[1] <= 4  # upsampling x4 then resizing: a few inputs per output
        rebuilt = torch.zeros_like(operator).scatter_add_(1, index, weight)
        assert torch.equal(rebuilt, operator)


def _near_identical_masks(count: int, seed: int, spread: float = 0.01) -> torch.Tensor:
    """``[count, 24, 32]`` mask logits within `spread` of a common mask of spatial std ~3 (an untrained model's)."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.nn.functional.interpolate(torch.randn(1, 1, 6, 8, generator=generator) * 3, size=(24, 32),
                                             mode="bilinear", align_corners=False)[0, 0]
    return common + (torch.rand(count, 24, 32, generator=generator) * 2 - 1) * spread


def _exact_mask_scores(mask_logits: torch.Tensor, geometry: MaskGeometry, mask_threshold: float) -> torch.Tensor:
    resized = upsample_crop_resize(mask_logits.double(), geometry.padded, geometry.crop, geometry.output)
    inside = resized > torch.logit(torch.tensor(mask_threshold, dtype=torch.float64))
    return (resized.sigmoid() * inside).flatten(1).sum(1) / inside.flatten(1).sum(1)


@pytest.mark.parametrize("mask_threshold", [0.5, 0.7])
@pytest.mark.parametrize("geometry", [
    MaskGeometry(padded=(96, 128), crop=(90, 121), output=(107, 150)),
    MaskGeometry(padded=(96, 128), crop=(96, 128), output=(60, 80)),  # shrinking
])
def test_mean_mask_bounds_are_upper_bounds(mask_threshold, geometry):
    masks = _near_identical_masks(40, seed=3)
    bounds = _mask_score_upper_bounds(masks, geometry, mask_threshold)
    exact = _exact_mask_scores(masks, geometry, mask_threshold)
    assert bounds is not None and bounds.dtype == torch.float64
    slack = bounds - exact
    assert float(slack.min()) >= -1e-7  # an upper bound, to float rounding
    assert float(slack.max()) < 1e-4  # and a tight one: the masks differ by 0.01


def test_mean_mask_bounds_step_aside_when_they_cannot_help():
    geometry = MaskGeometry(padded=(96, 128), crop=(90, 121), output=(107, 150))
    assert _mask_score_upper_bounds(_near_identical_masks(40, seed=3), geometry, 0.3) is None  # not concave there
    assert _mask_score_upper_bounds(_near_identical_masks(1, seed=3), geometry, 0.5) is None
    far_apart = torch.randn(40, 24, 32, generator=torch.Generator().manual_seed(0)) * 3  # a trained model's
    assert _mask_score_upper_bounds(far_apart, geometry, 0.5) is None
    empty = _near_identical_masks(5, seed=4) - 100.0  # every mask empty: no bound
    assert torch.isinf(_mask_score_upper_bounds(empty, geometry, 0.5)).all()


def test_instance_threshold_on_near_identical_masks_keeps_exactly_the_full_computation():
    """An untrained model: near-uniform classes and near-identical masks, every score within a hair of the others;
    the mean-mask bounds drop pairs, and what is kept is exactly what the full computation keeps."""
    geometry = MaskGeometry(padded=(96, 128), crop=(90, 121), output=(107, 150))
    masks = _near_identical_masks(50, seed=5)
    class_logits = torch.randn(50, 8, generator=torch.Generator().manual_seed(6)) * 0.05
    full = instance_inference(class_logits, masks, top_k=50, geometry=geometry)
    scores = full["scores"]
    for kept in (5, 20, 35):
        threshold = float(scores[kept - 1] + scores[kept]) / 2
        found = instance_inference(class_logits, masks, top_k=50, geometry=geometry, threshold=threshold)
        assert torch.equal(found["query_indices"], full["query_indices"][:kept])
        assert torch.equal(found["labels"], full["labels"][:kept])
        assert torch.equal(found["masks"], full["masks"][:kept])
        torch.testing.assert_close(found["scores"], scores[:kept])
    # the bounds did the dropping: far fewer candidates than pairs were left for the exact pass
    bounds = _mask_score_upper_bounds(masks, geometry, 0.5)
    class_scores = class_logits.softmax(-1)[:, :-1]
    assert int((class_scores * bounds[:, None] >= threshold).sum()) < class_scores.numel() // 2


def test_resized_mask_scores_in_chunks_equal_the_direct_computation():
    """More masks than one chunk of the scoring pass: binary masks, areas and scores as computed directly."""
    from hf_maskformer_series.post_processing import _SCORE_CHUNK, _resized_mask_scores

    geometry = MaskGeometry(padded=(96, 128), crop=(90, 121), output=(107, 150))
    logits = torch.randn(2 * _SCORE_CHUNK + 5, 24, 32, generator=torch.Generator().manual_seed(8)) * 3
    binary, scores, areas = _resized_mask_scores(logits, geometry, 0.5)
    resized = upsample_crop_resize(logits, geometry.padded, geometry.crop, geometry.output)
    assert torch.equal(binary, resized > 0)
    assert torch.equal(areas, (resized > 0).flatten(1).sum(1))
    torch.testing.assert_close(scores, _exact_mask_scores(logits, geometry, 0.5).float(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("rows", [0, 1, 127, 128, 20480, 20481])
def test_column_sums_stay_near_float32_rounding(rows):
    """Many similar values (a block of a scoring pass): the grouped sums keep the float64 sum to ~1e-7."""
    from hf_maskformer_series.post_processing import _column_sums

    values = 0.49 + 0.01 * torch.rand(rows, 7, generator=torch.Generator().manual_seed(rows))
    expected = values.double().sum(0)
    sums = _column_sums(values)
    assert sums.dtype == torch.float64 and sums.shape == (7,)
    torch.testing.assert_close(sums, expected, rtol=1e-6, atol=1e-9)
