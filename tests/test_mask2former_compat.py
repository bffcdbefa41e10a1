"""Our Mask2Former against transformers' own: checkpoint loading, logits of every layer, matcher and losses."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForUniversalSegmentation, Mask2FormerConfig, Mask2FormerForUniversalSegmentation

import hf_maskformer_series as hms
from tests._tiny_configs import tiny_mask2former_kwargs, tiny_resnet, tiny_swin

BACKBONES = {"swin": tiny_swin, "resnet": tiny_resnet}


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def saved_transformers_model(request, tmp_path_factory):
    """A tiny transformers Mask2Former, saved the way facebook/mask2former-* checkpoints are."""
    torch.manual_seed(0)
    config = Mask2FormerConfig(**tiny_mask2former_kwargs(BACKBONES[request.param]()))
    model = Mask2FormerForUniversalSegmentation(config).eval()
    # give the zero-initialised parameters some values, so the comparison covers them
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "sampling_offsets" in name or "attention_weights" in name:
                parameter.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp(f"transformers_{request.param}")
    model.save_pretrained(folder)
    return model, folder


def _inputs(batch_sizes=((96, 128), (70, 100))):
    """A padded batch: images of different sizes, padded bottom/right to a multiple of 32, and their pixel mask."""
    torch.manual_seed(1)
    height = max(size[0] for size in batch_sizes)
    width = max(size[1] for size in batch_sizes)
    height, width = -(-height // 32) * 32, -(-width // 32) * 32
    pixel_values = torch.zeros(len(batch_sizes), 3, height, width)
    pixel_mask = torch.zeros(len(batch_sizes), height, width, dtype=torch.long)
    for index, (h, w) in enumerate(batch_sizes):
        pixel_values[index, :, :h, :w] = torch.randn(3, h, w)
        pixel_mask[index, :h, :w] = 1
    return pixel_values, pixel_mask


def test_loads_transformers_checkpoint_without_missing_or_unexpected_weights(saved_transformers_model):
    _, folder = saved_transformers_model
    model, info = hms.SeriesMask2FormerForUniversalSegmentation.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == [] or info["missing_keys"] == set()
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]


@pytest.mark.parametrize("sizes", [((96, 128), (70, 100)), ((65, 97),)])
def test_logits_of_every_layer_match_transformers(saved_transformers_model, sizes):
    reference, folder = saved_transformers_model
    ours = hms.SeriesMask2FormerForUniversalSegmentation.from_pretrained(folder).eval()
    pixel_values, pixel_mask = _inputs(sizes)
    with torch.no_grad():
        expected = reference(pixel_values, pixel_mask=pixel_mask, output_auxiliary_logits=True)
        actual = ours(pixel_values, pixel_mask=pixel_mask, output_auxiliary_logits=True)
    torch.testing.assert_close(actual.class_queries_logits, expected.class_queries_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-4, rtol=1e-4)
    assert len(actual.auxiliary_logits) == len(expected.auxiliary_logits) == 4
    for ours_layer, their_layer in zip(actual.auxiliary_logits, expected.auxiliary_logits):
        for key in ("class_queries_logits", "masks_queries_logits"):
            torch.testing.assert_close(ours_layer[key], their_layer[key], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        actual.pixel_decoder_last_hidden_state, expected.pixel_decoder_last_hidden_state, atol=1e-4, rtol=1e-4
    )
    # the model reports where the real pixels are, for post-processing
    expected_sizes = torch.tensor([list(size) for size in sizes])
    assert torch.equal(actual.image_sizes, expected_sizes)
    # one row per image (contract 1: batch-consistent geometry)
    assert actual.padded_image_size.tolist() == [list(pixel_values.shape[-2:])] * len(sizes)


def _targets(batch: int, height: int, width: int, num_labels: int = 4):
    generator = torch.Generator().manual_seed(3)
    mask_labels, class_labels = [], []
    for count in [3, 2][:batch]:
        masks = torch.zeros(count, height, width)
        for index in range(count):
            top, left = torch.randint(0, height // 2, (2,), generator=generator).tolist()
            masks[index, top : top + height // 2, left : left + width // 3] = 1
        mask_labels.append(masks)
        class_labels.append(torch.randint(0, num_labels, (count,), generator=generator))
    return mask_labels, class_labels


def test_matcher_and_losses_match_transformers_given_the_same_points(saved_transformers_model):
    reference, folder = saved_transformers_model
    ours = hms.SeriesMask2FormerForUniversalSegmentation.from_pretrained(folder)
    reference.train()
    ours.train()
    pixel_values, pixel_mask = _inputs()
    mask_labels, class_labels = _targets(2, *pixel_values.shape[-2:])
    with torch.no_grad():
        # same predictions in both, so the matcher and the losses see identical inputs
        outputs = ours(pixel_values, pixel_mask=pixel_mask, output_auxiliary_logits=True)
    class_logits, mask_logits = outputs.class_queries_logits, outputs.masks_queries_logits

    torch.manual_seed(42)
    expected_indices = reference.criterion.matcher(mask_logits, class_logits, mask_labels, class_labels)
    torch.manual_seed(42)
    actual_indices = ours.criterion.matcher(class_logits, mask_logits, mask_labels, class_labels)
    for (rows_a, cols_a), (rows_b, cols_b) in zip(actual_indices, expected_indices):
        assert torch.equal(rows_a, rows_b.long()) and torch.equal(cols_a, cols_b.long())

    auxiliary = outputs.auxiliary_logits
    torch.manual_seed(7)
    expected = reference.criterion(mask_logits, class_logits, mask_labels, class_labels, auxiliary)
    torch.manual_seed(7)
    actual = ours.criterion(class_logits, mask_logits, mask_labels, class_labels, auxiliary)
    assert set(actual) == set(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-5)


def test_training_step_gives_finite_loss_and_gradients_even_without_targets():
    torch.manual_seed(0)
    model = hms.SeriesMask2FormerForUniversalSegmentation(hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs()))
    model.train()
    pixel_values, pixel_mask = _inputs()
    mask_labels, class_labels = _targets(2, *pixel_values.shape[-2:])
    # the second image has no objects at all
    mask_labels[1] = torch.zeros(0, *pixel_values.shape[-2:])
    class_labels[1] = torch.zeros(0, dtype=torch.long)
    outputs = model(pixel_values, mask_labels=mask_labels, class_labels=class_labels, pixel_mask=pixel_mask)
    assert torch.isfinite(outputs.loss)
    # 5 predictions (decoder_layers=5): the final one and 4 auxiliary ones, 3 losses each
    assert len(outputs.loss_dict) == 15
    outputs.loss.backward()
    grads = [p.grad for p in model.class_predictor.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # an all-empty batch is allowed too: only the classification loss is non-zero
    empty = [torch.zeros(0, *pixel_values.shape[-2:])] * 2
    outputs = model(pixel_values, mask_labels=empty, class_labels=[torch.zeros(0, dtype=torch.long)] * 2)
    assert torch.isfinite(outputs.loss) and outputs.loss_dict["loss_mask"] == 0


def test_backbone_batch_norm_stays_frozen_in_training():
    model = hms.SeriesMask2FormerForUniversalSegmentation(
        hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs(tiny_resnet()))
    )
    model.train()
    batch_norms = [m for m in model.model.pixel_level_module.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms and all(not m.training for m in batch_norms)
    assert all(not p.requires_grad for m in batch_norms for p in m.parameters())
    before = batch_norms[0].running_mean.clone()
    model(torch.randn(1, 3, 64, 64))
    assert torch.equal(before, batch_norms[0].running_mean)


def test_auto_classes_and_round_trip(tmp_path):
    config = hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs())
    model = hms.SeriesMask2FormerForUniversalSegmentation(config).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForUniversalSegmentation.from_pretrained(tmp_path).eval()
    assert type(loaded) is hms.SeriesMask2FormerForUniversalSegmentation
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).masks_queries_logits, model(pixel_values).masks_queries_logits)
    # the built-in mask2former model type is untouched
    from transformers import AutoConfig

    assert type(AutoConfig.for_model("mask2former")).__name__ == "Mask2FormerConfig"
