"""Our MaskFormer against transformers' (checkpoint loading, logits, loss), input errors, save/load, pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForImageSegmentation,
    AutoModelForInstanceSegmentation,
    AutoModelForUniversalSegmentation,
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    pipeline,
)

import hf_maskformer_series as hms
from tests._tiny_configs import TINY_DETR_DECODER, tiny_resnet, tiny_swin

BACKBONES = {"swin": tiny_swin, "resnet": tiny_resnet}
DECODER = TINY_DETR_DECODER


def _tiny_config(pixel_decoder_type: str = "fpn", backbone=None, **overrides) -> hms.SeriesMaskFormerConfig:
    kwargs = dict(
        backbone_config=backbone if backbone is not None else tiny_swin(),
        decoder_config=dict(DECODER),
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=4,
        pixel_decoder_type=pixel_decoder_type,
        pixel_decoder_encoder_layers=2,
        pixel_decoder_encoder_attention_heads=2,
        pixel_decoder_encoder_ffn_dim=64,
    )
    kwargs.update(overrides)
    return hms.SeriesMaskFormerConfig(**kwargs)


def _batch(sizes=((96, 128), (70, 100))):
    """Images of different sizes padded bottom/right to a multiple of 32, with their pixel mask."""
    torch.manual_seed(1)
    height = -(-max(h for h, _ in sizes) // 32) * 32
    width = -(-max(w for _, w in sizes) // 32) * 32
    pixel_values = torch.zeros(len(sizes), 3, height, width)
    pixel_mask = torch.zeros(len(sizes), height, width, dtype=torch.long)
    for index, (h, w) in enumerate(sizes):
        pixel_values[index, :, :h, :w] = torch.randn(3, h, w)
        pixel_mask[index, :h, :w] = 1
    return pixel_values, pixel_mask


def _targets(pixel_values, counts=(2, 3)):
    generator = torch.Generator().manual_seed(2)
    height, width = pixel_values.shape[-2:]
    masks = [(torch.rand(n, height, width, generator=generator) > 0.6).float() for n in counts]
    labels = [torch.randint(0, 4, (n,), generator=generator) for n in counts]
    return masks, labels


# ---------------------------------------------------------------------------------------------- against transformers


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def saved_transformers_model(request, tmp_path_factory):
    """A tiny transformers MaskFormer saved like the facebook/maskformer-* checkpoints (auxiliary loss off)."""
    torch.manual_seed(0)
    config = MaskFormerConfig(
        backbone_config=BACKBONES[request.param](),
        decoder_config=dict(DECODER, encoder_layers=1),
        fpn_feature_size=32,
        mask_feature_size=32,
        num_labels=4,
        use_auxiliary_loss=False,
    )
    model = MaskFormerForInstanceSegmentation(config).eval()
    folder = tmp_path_factory.mktemp(f"transformers_maskformer_{request.param}")
    model.save_pretrained(folder)
    return model, folder


def test_loads_transformers_checkpoint_without_missing_or_unexpected_weights(saved_transformers_model):
    _, folder = saved_transformers_model
    model, info = hms.SeriesMaskFormerForInstanceSegmentation.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert model.config.model_type == "series_maskformer"
    assert model.config.pixel_decoder_type == "fpn"


@pytest.mark.parametrize("sizes", [((96, 128), (70, 100)), ((65, 97),)])
def test_final_logits_match_transformers(saved_transformers_model, sizes):
    reference, folder = saved_transformers_model
    ours = hms.SeriesMaskFormerForInstanceSegmentation.from_pretrained(folder).eval()
    pixel_values, pixel_mask = _batch(sizes)
    with torch.no_grad():
        expected = reference(pixel_values, pixel_mask=pixel_mask)
        actual = ours(pixel_values, pixel_mask=pixel_mask)
    torch.testing.assert_close(actual.class_queries_logits, expected.class_queries_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual.pixel_decoder_last_hidden_state, expected.pixel_decoder_last_hidden_state)
    assert actual.masks_queries_logits.shape[-2:] == (pixel_values.shape[-2] // 4, pixel_values.shape[-1] // 4)
    assert actual.image_sizes.tolist() == [list(size) for size in sizes]
    # one row per image (contract 1: batch-consistent geometry)
    assert actual.padded_image_size.tolist() == [list(pixel_values.shape[-2:])] * len(sizes)


def test_loss_matches_transformers(saved_transformers_model):
    reference, folder = saved_transformers_model
    ours = hms.SeriesMaskFormerForInstanceSegmentation.from_pretrained(folder).eval()
    pixel_values, _ = _batch()
    masks, labels = _targets(pixel_values)
    with torch.no_grad():
        expected = reference(pixel_values, mask_labels=masks, class_labels=labels)
        actual = ours(pixel_values, mask_labels=masks, class_labels=labels)
    torch.testing.assert_close(actual.loss, expected.loss, atol=1e-4, rtol=1e-4)
    # transformers' loss dict holds weighted losses; ours holds them unweighted (weights: CE 1, focal 20, dice 1)
    with torch.no_grad():
        reference_losses = reference.get_loss_dict(
            expected.masks_queries_logits, expected.class_queries_logits, masks, labels, None
        )
    weights = {"loss_cross_entropy": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}
    assert set(actual.loss_dict) == set(reference_losses) == set(weights)
    for name, weight in weights.items():
        torch.testing.assert_close(actual.loss_dict[name] * weight, reference_losses[name], atol=1e-4, rtol=1e-4)


def test_auxiliary_outputs_follow_the_original_not_transformers(saved_transformers_model):
    """With auxiliary outputs on, our final logits stay those of transformers' plain forward (the original's
    behaviour: the shared LayerNorm is applied to intermediate outputs only, the next layer gets the un-normalised
    state); every auxiliary output is the heads applied to the LayerNorm-ed state of an earlier layer."""
    reference, folder = saved_transformers_model
    ours = hms.SeriesMaskFormerForInstanceSegmentation.from_pretrained(folder, use_auxiliary_loss=True).eval()
    layernorm = ours.model.transformer_module.decoder.layernorm
    with torch.no_grad():  # a non-trivial shared LayerNorm, in both models, so feeding it forward would show
        layernorm.weight.uniform_(0.5, 1.5)
        layernorm.bias.normal_(0, 0.5)
        reference.model.transformer_module.decoder.layernorm.load_state_dict(layernorm.state_dict())
    pixel_values, _ = _batch(((64, 96),))
    captured = []
    handle = ours.model.transformer_module.decoder.layers[1].register_forward_pre_hook(
        lambda _, args: captured.append(args[0])
    )
    with torch.no_grad():
        expected = reference(pixel_values)
        actual = ours(pixel_values, output_hidden_states=True)
    handle.remove()
    torch.testing.assert_close(actual.class_queries_logits, expected.class_queries_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits, atol=1e-4, rtol=1e-4)
    assert len(actual.auxiliary_logits) == DECODER["decoder_layers"] - 1
    first = actual.transformer_decoder_hidden_states[1]  # [0] is the decoder's zero input, as in transformers
    torch.testing.assert_close(captured[0], first)  # layer 1 reads the un-normalised output of layer 0
    assert (captured[0] - layernorm(first)).abs().max() > 0.1
    with torch.no_grad():
        auxiliary_classes = ours.class_predictor(layernorm(first))
    torch.testing.assert_close(actual.auxiliary_logits[0]["class_queries_logits"], auxiliary_classes)


# -------------------------------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("pixel_decoder_type", ["fpn", "transformer_encoder"])
def test_loss_is_finite_and_trains_every_parameter(pixel_decoder_type):
    torch.manual_seed(0)
    model = hms.SeriesMaskFormerForInstanceSegmentation(
        _tiny_config(pixel_decoder_type, use_auxiliary_loss=True)
    ).train()
    pixel_values, _ = _batch(((64, 96), (64, 96)))
    masks, labels = _targets(pixel_values)
    output = model(pixel_values, mask_labels=masks, class_labels=labels)
    assert torch.isfinite(output.loss)
    # final + 2 auxiliary layers × (CE, focal, dice)
    assert len(output.loss_dict) == 3 * DECODER["decoder_layers"]
    assert {"loss_mask_0", "loss_dice_1", "loss_cross_entropy_1"} <= set(output.loss_dict)
    expected_total = sum(
        value * {"loss_cross_entropy": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}[name.rsplit("_", 1)[0]
                                                                                 if name[-1].isdigit() else name]
        for name, value in output.loss_dict.items()
    )
    torch.testing.assert_close(output.loss, expected_total)
    output.loss.backward()
    decoder = model.model.pixel_level_module.decoder
    assert decoder.mask_projection.weight.grad.abs().sum() > 0
    assert model.model.transformer_module.queries_embedder.weight.grad.abs().sum() > 0
    if pixel_decoder_type == "transformer_encoder":
        assert decoder.transformer_encoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_loss_of_images_without_targets_is_finite():
    torch.manual_seed(0)
    model = hms.SeriesMaskFormerForInstanceSegmentation(_tiny_config(use_auxiliary_loss=True)).train()
    pixel_values, _ = _batch(((64, 96), (64, 96)))
    height, width = pixel_values.shape[-2:]
    empty_masks = [torch.zeros(0, height, width)] * 2
    empty_labels = [torch.zeros(0, dtype=torch.long)] * 2
    output = model(pixel_values, mask_labels=empty_masks, class_labels=empty_labels)
    assert torch.isfinite(output.loss)
    assert output.loss_dict["loss_mask"] == 0 and output.loss_dict["loss_dice"] == 0
    assert output.loss_dict["loss_cross_entropy"] > 0  # every query is pushed to "no object"
    output.loss.backward()
    masks, labels = _targets(pixel_values, counts=(0, 2))
    mixed = model(pixel_values, mask_labels=masks, class_labels=labels)
    assert torch.isfinite(mixed.loss) and mixed.loss_dict["loss_mask"] > 0


# -------------------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return hms.SeriesMaskFormerForInstanceSegmentation(_tiny_config()).eval()


def test_bad_pixel_values_raise(tiny_model):
    with pytest.raises(ValueError, match="channels"):
        tiny_model(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\[batch, channels, height, width\]"):
        tiny_model(torch.zeros(3, 64, 64))


def test_bad_targets_raise(tiny_model):
    pixel_values = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="together"):
        tiny_model(pixel_values, mask_labels=[torch.zeros(1, 64, 64)])
    with pytest.raises(ValueError, match="one label per mask"):
        tiny_model(pixel_values, mask_labels=[torch.zeros(2, 64, 64)], class_labels=[torch.tensor([1])])
    with pytest.raises(ValueError, match="outside the model's labels"):
        tiny_model(pixel_values, mask_labels=[torch.zeros(1, 64, 64)], class_labels=[torch.tensor([4])])
    with pytest.raises(ValueError, match="padded like the image"):
        tiny_model(pixel_values, mask_labels=[torch.zeros(1, 32, 64)], class_labels=[torch.tensor([1])])
    with pytest.raises(ValueError, match="batch of 1"):
        tiny_model(pixel_values, mask_labels=[torch.zeros(1, 64, 64)] * 2, class_labels=[torch.tensor([1])] * 2)


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="pixel_decoder_type"):
        _tiny_config("deformable")
    with pytest.raises(ValueError, match="DETR config"):
        _tiny_config(decoder_config={"model_type": "bert"})
    with pytest.raises(ValueError, match="divisible"):
        _tiny_config("transformer_encoder", pixel_decoder_encoder_attention_heads=3)
    with pytest.raises(ValueError, match="4 feature maps"):
        _tiny_config(backbone=tiny_resnet(out_features=["stage3", "stage4"]))


# ------------------------------------------------------------------------------------------ config and architecture


def test_config_defaults_follow_the_original():
    config = hms.SeriesMaskFormerConfig()
    assert config.backbone_config.model_type == "maskformer-swin"
    assert (config.fpn_feature_size, config.mask_feature_size, config.hidden_dim, config.num_queries) == (
        256, 256, 256, 100,
    )
    assert config.decoder_config.decoder_layers == 6 and config.decoder_config.dropout == 0.1
    assert (config.mask_weight, config.dice_weight, config.cross_entropy_weight, config.no_object_weight) == (
        20.0, 1.0, 1.0, 0.1,
    )
    assert (
        config.pixel_decoder_encoder_layers,
        config.pixel_decoder_encoder_attention_heads,
        config.pixel_decoder_encoder_ffn_dim,
        config.pixel_decoder_encoder_dropout,
        config.pixel_decoder_pre_norm,
    ) == (6, 8, 2048, 0.1, False)
    plain_swin = hms.SeriesMaskFormerConfig(backbone_config=tiny_swin(), use_maskformer_swin=False)
    assert plain_swin.backbone_config.model_type == "swin"


def test_transformer_encoder_pixel_decoder_feeds_the_decoder():
    torch.manual_seed(0)
    model = hms.SeriesMaskFormerForInstanceSegmentation(_tiny_config("transformer_encoder")).eval()
    decoder = model.model.pixel_level_module.decoder
    assert decoder.fpn.stem[0].in_channels == 32  # the stem reads the encoder output, not res5
    assert model.model.transformer_module.input_projection is None  # 32 channels == d_model: identity
    pixel_values, _ = _batch(((64, 96),))
    captured = {}
    handle = model.model.transformer_module.register_forward_pre_hook(lambda _, args: captured.update(x=args[0]))
    with torch.no_grad():
        features, pixel_decoder_output = model.model.pixel_level_module(pixel_values)
        model(pixel_values)
    handle.remove()
    torch.testing.assert_close(captured["x"], pixel_decoder_output.transformer_features)
    assert not torch.allclose(captured["x"], decoder.input_projection(features[-1]))  # the encoder changed it
    forced = hms.SeriesMaskFormerForInstanceSegmentation(
        _tiny_config("transformer_encoder", enforce_input_projection=True)
    )
    assert isinstance(forced.model.transformer_module.input_projection, torch.nn.Conv2d)


def test_pre_norm_variants_run():
    torch.manual_seed(0)
    model = hms.SeriesMaskFormerForInstanceSegmentation(
        _tiny_config("transformer_encoder", pre_norm=True, pixel_decoder_pre_norm=True)
    ).eval()
    assert model.model.pixel_level_module.decoder.transformer_encoder.layernorm is not None
    with torch.no_grad():
        output = model(_batch(((64, 64),))[0])
    assert output.class_queries_logits.shape == (1, DECODER["num_queries"], 5)
    assert torch.isfinite(output.masks_queries_logits).all()


def test_timm_backbone():
    pytest.importorskip("timm")
    backbone = AutoConfig.for_model(
        "timm_backbone", backbone="resnet18", out_indices=[1, 2, 3, 4], use_pretrained_backbone=False
    )
    torch.manual_seed(0)
    model = hms.SeriesMaskFormerForInstanceSegmentation(_tiny_config(backbone=backbone)).eval()
    with torch.no_grad():
        output = model(torch.randn(1, 3, 64, 96))
    assert output.masks_queries_logits.shape == (1, DECODER["num_queries"], 16, 24)


# ---------------------------------------------------------------------------------------- save / load and pipeline


@pytest.mark.parametrize("pixel_decoder_type", ["fpn", "transformer_encoder"])
def test_save_and_load_with_auto_classes(tmp_path, pixel_decoder_type):
    torch.manual_seed(0)
    model = hms.SeriesMaskFormerForInstanceSegmentation(_tiny_config(pixel_decoder_type, backbone=tiny_resnet()))
    model.eval().save_pretrained(tmp_path)
    pixel_values, pixel_mask = _batch(((64, 96), (50, 70)))
    with torch.no_grad():
        expected = model(pixel_values, pixel_mask=pixel_mask)
    for auto_class in (AutoModelForUniversalSegmentation, AutoModelForImageSegmentation,
                       AutoModelForInstanceSegmentation):
        loaded, info = auto_class.from_pretrained(tmp_path, output_loading_info=True)
        assert type(loaded) is hms.SeriesMaskFormerForInstanceSegmentation
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert loaded.config.pixel_decoder_type == pixel_decoder_type
        with torch.no_grad():
            actual = loaded.eval()(pixel_values, pixel_mask=pixel_mask)
        assert torch.equal(actual.class_queries_logits, expected.class_queries_logits)
        assert torch.equal(actual.masks_queries_logits, expected.masks_queries_logits)


def _saved_model_with_processor(folder, pixel_decoder_type):
    from hf_maskformer_series.image_processing import SeriesMaskFormerImageProcessor

    torch.manual_seed(0)
    hms.SeriesMaskFormerForInstanceSegmentation(_tiny_config(pixel_decoder_type)).save_pretrained(folder)
    processor = SeriesMaskFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    processor.save_pretrained(folder)
    return processor


@pytest.mark.parametrize("pixel_decoder_type", ["fpn", "transformer_encoder"])
def test_image_segmentation_pipeline(tmp_path, pixel_decoder_type):
    processor = _saved_model_with_processor(tmp_path, pixel_decoder_type)
    segmenter = pipeline("image-segmentation", model=str(tmp_path), image_processor=processor)
    image = Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype("uint8"))
    semantic = segmenter(image, subtask="semantic")
    assert semantic and all(segment["mask"].size == (80, 60) for segment in semantic)
    assert {segment["label"] for segment in semantic} <= {f"LABEL_{i}" for i in range(4)}
    panoptic = segmenter(image, subtask="panoptic", threshold=0.0)
    assert panoptic and all(segment["mask"].size == (80, 60) for segment in panoptic)
    assert all(0.0 <= segment["score"] <= 1.0 for segment in panoptic)


def test_image_segmentation_pipeline_from_folder_only(tmp_path):
    """`pipeline("image-segmentation", model=folder)` needs the image processor registered with AutoImageProcessor."""
    from transformers import AutoImageProcessor

    _saved_model_with_processor(tmp_path, "transformer_encoder")
    try:
        AutoImageProcessor.from_pretrained(tmp_path)
    except ValueError:
        pytest.skip("SeriesMaskFormerImageProcessor is not registered with AutoImageProcessor yet")
    segmenter = pipeline("image-segmentation", model=str(tmp_path))
    result = segmenter(Image.fromarray(np.zeros((60, 80, 3), dtype="uint8")), subtask="semantic")
    assert result and result[0]["mask"].size == (80, 60)
