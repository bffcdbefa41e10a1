"""Mask2Former model behaviour: backbones, shapes, bad input, export."""

from __future__ import annotations

import pytest
import torch
from transformers import TimmBackboneConfig

import hf_maskformer_series as hms
from tests._tiny_configs import tiny_mask2former_kwargs, tiny_resnet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return hms.SeriesMask2FormerForUniversalSegmentation(hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs())).eval()


def test_output_shapes_and_layer_count(model):
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 64, 96), output_hidden_states=True)
    assert outputs.class_queries_logits.shape == (2, 6, 5)
    assert outputs.masks_queries_logits.shape == (2, 6, 16, 24)
    assert len(outputs.auxiliary_logits) == 4
    assert [tuple(f.shape[-2:]) for f in outputs.encoder_hidden_states] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [tuple(f.shape[-2:]) for f in outputs.pixel_decoder_hidden_states] == [(2, 3), (4, 6), (8, 12)]
    assert len(outputs.transformer_decoder_hidden_states) == 5


def test_timm_backbone():
    backbone = TimmBackboneConfig(backbone="resnet18", out_indices=(1, 2, 3, 4), use_pretrained_backbone=False)
    model = hms.SeriesMask2FormerForUniversalSegmentation(
        hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs(backbone))
    ).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    assert outputs.masks_queries_logits.shape == (1, 6, 16, 16)
    assert torch.isfinite(outputs.masks_queries_logits).all()


def test_attention_mask_blocks_background_and_unblocks_empty_rows():
    from hf_maskformer_series.masked_attention_decoder import attention_mask_from_masks

    logits = torch.full((1, 2, 4, 4), -5.0)
    logits[0, 0, :2, :2] = 5.0  # query 0 covers the top-left quarter; query 1 is empty everywhere
    allowed = attention_mask_from_masks(logits, (2, 2))
    assert allowed.shape == (1, 1, 2, 4)
    assert allowed[0, 0, 0].tolist() == [True, False, False, False]
    assert allowed[0, 0, 1].all()


@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(1, 1, 64, 64), "channels"),
        (torch.randn(3, 64, 64), "shape"),
    ],
)
def test_bad_pixel_values(model, pixel_values, message):
    with pytest.raises(ValueError, match=message):
        model(pixel_values)


def test_bad_targets(model):
    pixel_values = torch.randn(1, 3, 64, 64)
    masks = torch.zeros(2, 64, 64)
    with pytest.raises(ValueError, match="outside the model's labels"):
        model(pixel_values, mask_labels=[masks], class_labels=[torch.tensor([0, 9])])
    with pytest.raises(ValueError, match="2 masks but 3 class labels"):
        model(pixel_values, mask_labels=[masks], class_labels=[torch.tensor([0, 1, 2])])
    with pytest.raises(ValueError, match="masks must be padded like the image"):
        model(pixel_values, mask_labels=[torch.zeros(2, 32, 32)], class_labels=[torch.tensor([0, 1])])
    with pytest.raises(ValueError, match="together"):
        model(pixel_values, mask_labels=[masks])


def test_bad_config():
    with pytest.raises(ValueError, match="model_type"):
        hms.SeriesMask2FormerConfig(backbone_config={"depths": [1, 1, 1, 1]})
    with pytest.raises(ValueError, match="4 feature maps"):
        hms.SeriesMask2FormerConfig(backbone_config=tiny_resnet(out_features=["stage3", "stage4"]))


def test_torch_export_of_the_whole_model(model):
    pixel_values = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (pixel_values,), strict=False)
    with torch.no_grad():
        expected = model(pixel_values).masks_queries_logits
    actual = exported.module()(pixel_values)["masks_queries_logits"]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    config = hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs(tiny_resnet()))
    reference = hms.SeriesMask2FormerForUniversalSegmentation(config).train()
    checkpointed = hms.SeriesMask2FormerForUniversalSegmentation(config).train()
    checkpointed.load_state_dict(reference.state_dict())
    checkpointed.gradient_checkpointing_enable()
    assert checkpointed.model.transformer_module.gradient_checkpointing
    assert checkpointed.model.pixel_level_module.decoder.encoder.gradient_checkpointing
    pixel_values = torch.randn(2, 3, 64, 64)
    masks = [torch.zeros(1, 64, 64), torch.zeros(2, 64, 64)]
    masks[0][0, :32] = 1
    masks[1][0, :, :20] = 1
    masks[1][1, 40:] = 1
    labels = [torch.tensor([1]), torch.tensor([0, 3])]
    losses, grads = [], []
    for model in (reference, checkpointed):
        torch.manual_seed(5)  # same sampled points
        loss = model(pixel_values, mask_labels=masks, class_labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.model.transformer_module.decoder.layers[0].fc1.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
