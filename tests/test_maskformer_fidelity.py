"""Our MaskFormer against the original implementation (tests/fixtures/maskformer_*.pt): every intermediate and output.

`maskformer_fpn_swin.pt`: D2 Swin + FPN pixel decoder + DETR decoder with ENFORCE_INPUT_PROJ;
`maskformer_tenc_r50.pt`: detectron2 ResNet-50 (FrozenBN) + transformer-encoder pixel decoder + DETR decoder.
Both have deep supervision on (2 auxiliary outputs, the decoder's LayerNorm NOT fed forward).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import hf_maskformer_series as hms
from conversion.keys_maskformer import convert_maskformer_state_dict
from conversion.original_config import build_model_config

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ["maskformer_fpn_swin", "maskformer_tenc_r50"]
ATOL = RTOL = 1e-4


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected.contiguous(), atol=atol, rtol=rtol)


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    """(fixture dict, our model with the converted original weights, loading result)."""
    data = torch.load(FIXTURES / f"{request.param}.pt", weights_only=True)
    original_config = yaml.safe_load(data["config_yaml"])
    config, _ = build_model_config(original_config, "maskformer")  # what the conversion command line uses
    model = hms.SeriesMaskFormerForInstanceSegmentation(config).eval()
    result = model.load_state_dict(convert_maskformer_state_dict(data["state_dict"]), strict=False)
    with torch.no_grad():
        features, pixel_decoder_output = model.model.pixel_level_module(data["inputs"]["pixel_values"])
        outputs = model(data["inputs"]["pixel_values"], output_auxiliary_logits=True)
    return request.param, data, model, result, features, pixel_decoder_output, outputs


def test_config_follows_the_original(case):
    name, data, model, *_ = case
    summary = data["config_summary"]
    config = model.config
    assert config.pixel_decoder_type == ("fpn" if name.endswith("swin") else "transformer_encoder")
    assert config.enforce_input_projection == summary["enforce_input_proj"]
    assert config.decoder_config.decoder_layers == summary["dec_layers"]
    assert config.num_labels == summary["num_classes"]
    assert (model.model.transformer_module.input_projection is not None) == summary["predictor_input_proj"]


def test_every_weight_is_loaded(case):
    name, data, model, result, *_ = case
    # transformers' MaskFormerSwinBackbone has a final LayerNorm it never uses; D2 Swin has none
    expected_missing = (
        {"model.pixel_level_module.encoder.model.layernorm.weight", "model.pixel_level_module.encoder.model.layernorm.bias"}
        if name.endswith("swin")
        else set()
    )
    assert set(result.missing_keys) == expected_missing
    assert result.unexpected_keys == []
    torch.testing.assert_close(model.criterion.empty_weight, data["state_dict"]["criterion.empty_weight"])


def test_pixel_decoder_prefix_is_optional():
    """Released v1 files have `sem_seg_head.layer_4`, the module state dict `sem_seg_head.pixel_decoder.layer_4`."""
    state_dict = torch.load(FIXTURES / "maskformer_tenc_r50.pt", weights_only=True)["state_dict"]
    prefixed = {
        (
            "sem_seg_head.pixel_decoder." + key[len("sem_seg_head."):]
            if key.startswith("sem_seg_head.") and not key.startswith("sem_seg_head.predictor.")
            else key
        ): value
        for key, value in state_dict.items()
    }
    plain, with_prefix = convert_maskformer_state_dict(state_dict), convert_maskformer_state_dict(prefixed)
    assert plain.keys() == with_prefix.keys()
    assert all(torch.equal(plain[key], with_prefix[key]) for key in plain)


def test_conversion_rejects_unknown_keys():
    state_dict = dict(torch.load(FIXTURES / "maskformer_fpn_swin.pt", weights_only=True)["state_dict"])
    with pytest.raises(ValueError, match="unexpected keys"):
        convert_maskformer_state_dict({**state_dict, "something.else": torch.zeros(1)})
    with pytest.raises(ValueError, match="predictor"):
        convert_maskformer_state_dict({**state_dict, "sem_seg_head.predictor.mystery.weight": torch.zeros(1)})


def test_backbone_features_match(case):
    _, data, _, _, features, *_ = case
    for level, feature in zip(("res2", "res3", "res4", "res5"), features):
        _close(feature, data["backbone_features"][level])


def test_pixel_decoder_matches(case):
    name, data, _, _, _, pixel_decoder_output, _ = case
    assert len(pixel_decoder_output.fpn_features) == 4
    for actual, expected in zip(pixel_decoder_output.fpn_features, data["fpn_features"]):
        _close(actual, expected)
    _close(pixel_decoder_output.mask_features, data["mask_features"])
    # the transformer decoder's input: res5 (FPN) or the transformer encoder's output
    _close(pixel_decoder_output.transformer_features, data["predictor_input"])
    if "transformer_encoder_features" in data:
        _close(pixel_decoder_output.transformer_features, data["transformer_encoder_features"])


def test_position_encodings_match(case):
    _, data, model, *_ = case
    positions = data["pos_embedding"]
    height, width = positions["predictor_pos"].shape[-2:]
    decoder_position = model.model.transformer_module.position_embedder.encode(height, width, "cpu", torch.float32)
    _close(decoder_position.expand_as(positions["predictor_pos"]), positions["predictor_pos"], 1e-5, 1e-5)
    if "pixel_decoder_pos" in positions:
        encoder_position = model.model.pixel_level_module.decoder.position_embedder.encode(
            height, width, "cpu", torch.float32
        )
        _close(encoder_position.expand_as(positions["pixel_decoder_pos"]), positions["pixel_decoder_pos"], 1e-5, 1e-5)


def test_final_outputs_match(case):
    _, data, _, _, _, _, outputs = case
    _close(outputs.class_queries_logits, data["outputs"]["pred_logits"])
    _close(outputs.masks_queries_logits, data["outputs"]["pred_masks"])
    assert outputs.masks_queries_logits.shape[-2:] == tuple(s // 4 for s in data["inputs"]["pixel_values"].shape[-2:])


def test_every_auxiliary_output_matches(case):
    _, data, _, _, _, _, outputs = case
    expected = data["outputs"]["aux_outputs"]
    assert len(outputs.auxiliary_logits) == len(expected) == 2
    for actual, reference in zip(outputs.auxiliary_logits, expected):
        _close(actual["class_queries_logits"], reference["pred_logits"])
        _close(actual["masks_queries_logits"], reference["pred_masks"])


def test_auxiliary_outputs_do_not_change_the_final_prediction(case):
    """The shared LayerNorm is applied to intermediate outputs only: turning them off changes nothing."""
    _, data, model, _, _, _, outputs = case
    with torch.no_grad():
        without = model(data["inputs"]["pixel_values"], output_auxiliary_logits=False)
    assert without.auxiliary_logits is None
    assert torch.equal(without.class_queries_logits, outputs.class_queries_logits)
    assert torch.equal(without.masks_queries_logits, outputs.masks_queries_logits)


def test_semantic_inference_matches_the_original(case):
    """The original's semantic flow: upsample to the padded size, softmax(no-object dropped) × sigmoid, then crop and
    resize (`sem_seg_after_inference`), computed from our logits."""
    _, data, _, _, _, _, outputs = case
    post = data["postprocess"]
    masks = torch.nn.functional.interpolate(
        outputs.masks_queries_logits, size=tuple(post["padded_input_size"]), mode="bilinear", align_corners=False
    )
    semantic = torch.einsum("bqc,bqhw->bchw", outputs.class_queries_logits.softmax(-1)[..., :-1], masks.sigmoid())
    for index, (crop, size) in enumerate(zip(post["image_sizes"], post["output_sizes"])):
        cropped = semantic[index : index + 1, :, : crop[0], : crop[1]]
        resized = torch.nn.functional.interpolate(cropped, size=tuple(size), mode="bilinear", align_corners=False)[0]
        _close(resized, post["sem_seg_after_inference"][index], 1e-4, 1e-4)
