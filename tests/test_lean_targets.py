"""Lean training targets: the loss gives the same matching and losses from a segment map as from one-hot masks."""

from __future__ import annotations

import pytest
import torch

import hf_maskformer_series as hms
from hf_maskformer_series.point_sampling import point_sample, point_sample_segment_map, point_sample_segment_maps
from hf_maskformer_series.target_encoding import segment_map_to_one_hot
from tests._tiny_configs import tiny_mask2former_kwargs, tiny_swin


def _random_segment_map(shape, num_targets, seed, valid=None):
    """Blocky random ids in [-1, num_targets) (every target present), `-1` outside `valid` (the padding)."""
    generator = torch.Generator().manual_seed(seed)
    *frames, height, width = shape
    coarse = torch.randint(-1, num_targets, (*frames, 1, height // 4, width // 4), generator=generator)
    segment_map = torch.nn.functional.interpolate(coarse.float().flatten(0, -3).unsqueeze(0), size=(height, width),
                                                  mode="nearest")[0].view(shape)
    noise = torch.randint(-1, num_targets, shape, generator=generator)  # single-pixel segments too
    segment_map = torch.where(torch.rand(shape, generator=generator) < 0.1, noise.float(), segment_map)
    flat = segment_map.view(-1)
    flat[:num_targets] = torch.arange(num_targets, dtype=flat.dtype)
    if valid is not None:
        segment_map[..., valid[0]:, :] = -1
        segment_map[..., :, valid[1]:] = -1
    return segment_map.to(torch.int32)


def test_point_sampling_from_maps_equals_sampling_one_hot_masks():
    segment_map = _random_segment_map((3, 29, 41), 5, seed=0)
    one_hot = segment_map_to_one_hot(segment_map, 5)  # [5, 3, H, W]
    points = torch.rand(700, 2)
    points[:8] = torch.tensor([[0, 0], [1, 1], [0, 1], [1, 0], [0.001, 0.5], [0.999, 0.5], [0.5, 0], [0.5, 1]])
    expected = point_sample(one_hot, points.expand(5, -1, -1))
    assert torch.equal(point_sample_segment_map(segment_map, points, 5), expected)
    map_index, target_ids = torch.tensor([0, 2, 1, 2]), torch.tensor([4, 0, 3, 3])
    row_points = torch.rand(4, 300, 2)
    expected = point_sample(one_hot[target_ids, map_index].unsqueeze(1), row_points).squeeze(1)
    assert torch.equal(point_sample_segment_maps(segment_map, map_index, target_ids, row_points), expected)


def _assert_same_matching_and_losses(model, pixel_values, segment_maps, class_labels):
    """Same seeds, both target forms (video one-hot masks are `[targets, frames, H, W]`, as the map's one-hot)."""
    one_hot = [segment_map_to_one_hot(segment_map, len(labels)) for segment_map, labels in zip(segment_maps,
                                                                                               class_labels)]
    results = []
    for mask_labels in (one_hot, segment_maps):
        torch.manual_seed(11)
        with torch.no_grad():
            outputs = model(pixel_values, mask_labels=mask_labels, class_labels=class_labels)
        torch.manual_seed(12)
        indices = model.criterion.matcher(outputs.class_queries_logits, outputs.masks_queries_logits, mask_labels,
                                          class_labels)
        results.append((outputs, indices))
    (one_hot_outputs, one_hot_indices), (map_outputs, map_indices) = results
    for (queries, targets), (map_queries, map_targets) in zip(one_hot_indices, map_indices):
        assert torch.equal(queries, map_queries) and torch.equal(targets, map_targets)
    assert one_hot_outputs.loss_dict.keys() == map_outputs.loss_dict.keys()
    for name, value in one_hot_outputs.loss_dict.items():
        torch.testing.assert_close(map_outputs.loss_dict[name], value, rtol=1e-6, atol=0, msg=name)
    torch.testing.assert_close(map_outputs.loss, one_hot_outputs.loss, rtol=1e-6, atol=0)


def test_mask2former_point_sampled_losses_are_the_same_from_segment_maps():
    torch.manual_seed(0)
    model = hms.SeriesMask2FormerForUniversalSegmentation(
        hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs(train_num_points=400))
    ).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    segment_maps = [_random_segment_map((64, 96), 4, seed=1), _random_segment_map((64, 96), 9, seed=2, valid=(50, 70))]
    class_labels = [torch.tensor([0, 3, 1, 1]), torch.tensor([2, 0, 1, 3, 3, 2, 1, 0, 2])]
    _assert_same_matching_and_losses(model, pixel_values, segment_maps, class_labels)


@pytest.mark.parametrize("pixel_decoder_type", ["fpn", "transformer_encoder"])
def test_maskformer_full_resolution_losses_are_the_same_from_segment_maps(pixel_decoder_type):
    torch.manual_seed(0)
    config = hms.SeriesMaskFormerConfig(
        backbone_config=tiny_swin(), num_labels=4, pixel_decoder_type=pixel_decoder_type, fpn_feature_size=32,
        mask_feature_size=32, pixel_decoder_encoder_layers=1, pixel_decoder_encoder_attention_heads=2,
        pixel_decoder_encoder_ffn_dim=64,
        decoder_config=dict(d_model=32, decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=64, num_queries=6),
    )
    model = hms.SeriesMaskFormerForInstanceSegmentation(config).eval()
    assert model.criterion.matcher.num_points is None and model.criterion.mask_loss == "focal"
    pixel_values = torch.randn(2, 3, 64, 64)
    segment_maps = [_random_segment_map((64, 64), 5, seed=3), _random_segment_map((64, 64), 3, seed=4, valid=(40, 64))]
    class_labels = [torch.tensor([0, 3, 1, 2, 2]), torch.tensor([2, 0, 1])]
    _assert_same_matching_and_losses(model, pixel_values, segment_maps, class_labels)


def test_video_losses_are_the_same_from_segment_maps():
    torch.manual_seed(0)
    config = hms.SeriesVideoMask2FormerConfig(**tiny_mask2former_kwargs(train_num_points=300))
    model = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(config).eval()
    video = torch.randn(2, 3, 3, 64, 64)
    segment_maps = [_random_segment_map((3, 64, 64), 4, seed=5), _random_segment_map((3, 64, 64), 2, seed=6)]
    segment_maps[1][1:][segment_maps[1][1:] == 1] = 0  # instance 1 only in frame 0
    class_labels = [torch.tensor([0, 3, 1, 1]), torch.tensor([2, 0])]
    _assert_same_matching_and_losses(model, video, segment_maps, class_labels)


def test_segment_map_targets_are_checked():
    torch.manual_seed(0)
    model = hms.SeriesMask2FormerForUniversalSegmentation(hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs()))
    pixel_values = torch.randn(1, 3, 64, 64)
    segment_map = torch.zeros(64, 64, dtype=torch.int32)
    segment_map[:10] = 2
    with pytest.raises(ValueError, match=r"ids span \[0, 2\] but must lie in \[-1, 2\)"):
        model(pixel_values, mask_labels=[segment_map], class_labels=[torch.tensor([0, 1])])
    with pytest.raises(ValueError, match="must hold integer target ids"):
        model(pixel_values, mask_labels=[segment_map.float()], class_labels=[torch.tensor([0, 1, 2])])
    with pytest.raises(ValueError, match="padded like the image"):
        model(pixel_values, mask_labels=[segment_map[:32]], class_labels=[torch.tensor([0, 1, 2])])
    outputs = model(pixel_values, mask_labels=[segment_map.long()], class_labels=[torch.tensor([0, 1, 2])])
    assert torch.isfinite(outputs.loss)
    video_model = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(
        hms.SeriesVideoMask2FormerConfig(**tiny_mask2former_kwargs())
    )
    with pytest.raises(ValueError, match="2 frames but the video has 3"):
        video_model(torch.randn(1, 3, 3, 64, 64), mask_labels=[torch.zeros(2, 64, 64, dtype=torch.int16)],
                    class_labels=[torch.tensor([0])])


@pytest.mark.parametrize("frames", [None, 2])
def test_point_sampled_mask_losses_give_autograd_gradients(frames):
    """The criterion's memory-lean point losses (recomputed in backward) equal plain autograd, values and grads."""
    from hf_maskformer_series.criterion import _PointSampledMaskLosses, dice_loss, sigmoid_cross_entropy_loss

    generator = torch.Generator().manual_seed(0)
    shape = (2, 5, *([frames] if frames else []), 12, 16)
    mask_logits = (torch.randn(shape, generator=generator) * 3).requires_grad_()
    image_index, query_index = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([4, 1, 0, 1, 1])  # a query twice
    rows = len(image_index) * (frames or 1)
    grid = torch.rand(rows, 50, 1, 2, generator=generator) * 2 - 1
    targets = (torch.rand(rows, 50, generator=generator) > 0.5).float()
    losses = _PointSampledMaskLosses.apply(mask_logits, image_index, query_index, grid, targets, 3.0)
    (losses[0] * 2 + losses[1] * 5).backward()
    lean_grad, mask_logits.grad = mask_logits.grad, None
    predictions = mask_logits[image_index, query_index].flatten(0, -3).unsqueeze(1)
    point_logits = torch.nn.functional.grid_sample(predictions, grid, align_corners=False)[:, 0, :, 0]
    expected = (sigmoid_cross_entropy_loss(point_logits, targets, 3.0), dice_loss(point_logits, targets, 3.0))
    (expected[0] * 2 + expected[1] * 5).backward()
    assert torch.equal(losses[0], expected[0]) and torch.equal(losses[1], expected[1])
    torch.testing.assert_close(lean_grad, mask_logits.grad, rtol=1e-6, atol=1e-9)
    assert lean_grad[1, 1].abs().sum() > 0 and lean_grad[0, 0].abs().sum() == 0
