"""Video Mask2Former against the original implementation (`tests/fixtures/m2f_video_swin.pt`), config and loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from transformers import SwinConfig

from conversion.keys_video_mask2former import convert_video_mask2former_state_dict
from hf_maskformer_series.configuration_video_mask2former import SeriesVideoMask2FormerConfig
from hf_maskformer_series.masked_attention_decoder import attention_mask_from_masks
from hf_maskformer_series.modeling_video_mask2former import (
    SeriesVideoMask2FormerForVideoInstanceSegmentation,
)
from hf_maskformer_series.position_encoding import SinePositionEmbedding3D
from hf_maskformer_series.video_processing import SeriesVideoMask2FormerVideoProcessor

FIXTURE = Path(__file__).parent / "fixtures" / "m2f_video_swin.pt"
TOLERANCE = 1e-4


def fixture_config() -> SeriesVideoMask2FormerConfig:
    """The fixture's shrunk YouTube-VIS config (see tests/fixtures/README.md)."""
    swin = SwinConfig(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4, patch_size=4,
                      drop_path_rate=0.3, out_features=["stage1", "stage2", "stage3", "stage4"])
    return SeriesVideoMask2FormerConfig(
        backbone_config=swin, feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_layers=2,
        encoder_feedforward_dim=1024, decoder_layers=5, num_attention_heads=4, dim_feedforward=128, num_queries=10,
        num_labels=5, num_frames=2,
    )


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def model(reference):
    torch.manual_seed(0)
    model = SeriesVideoMask2FormerForVideoInstanceSegmentation(fixture_config()).eval()
    result = model.load_state_dict(convert_video_mask2former_state_dict(reference["state_dict"]), strict=False)
    # the original Swin has no final LayerNorm (transformers' `swin.layernorm` is unused by the backbone)
    assert sorted(result.missing_keys) == [
        "model.pixel_level_module.encoder.swin.layernorm.bias",
        "model.pixel_level_module.encoder.swin.layernorm.weight",
    ]
    assert result.unexpected_keys == []
    return model


@pytest.fixture(scope="module")
def full_outputs(model, reference):
    pixel_values_videos = reference["inputs"]["pixel_values"].unsqueeze(0)  # the frames of ONE video
    with torch.no_grad():
        return model(pixel_values_videos, output_auxiliary_logits=True, output_hidden_states=True)


def _max_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual - expected).abs().max().item()


def test_converter_accepts_static_query_and_rejects_unknown_keys(reference):
    original = dict(reference["state_dict"])
    renamed = dict(original)
    renamed["sem_seg_head.predictor.static_query.weight"] = renamed.pop("sem_seg_head.predictor.query_feat.weight")
    a = convert_video_mask2former_state_dict(original)
    b = convert_video_mask2former_state_dict(renamed)
    assert a.keys() == b.keys()
    assert torch.equal(a["model.transformer_module.queries_features.weight"],
                       b["model.transformer_module.queries_features.weight"])
    # with the original config, the backbone mapping is picked from MODEL.BACKBONE.NAME (D2SwinTransformer here)
    cfg = yaml.safe_load(reference["config_yaml"])
    with_cfg = convert_video_mask2former_state_dict(original, cfg)
    assert with_cfg.keys() == a.keys() and all(torch.equal(with_cfg[key], a[key]) for key in a)
    with pytest.raises(ValueError, match="mystery"):
        convert_video_mask2former_state_dict({**original, "sem_seg_head.predictor.mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected keys"):
        convert_video_mask2former_state_dict({**original, "head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="static_query and query_feat"):
        convert_video_mask2former_state_dict({**original, "sem_seg_head.predictor.static_query.weight": torch.zeros(1)})


def test_backbone_and_pixel_decoder_match_original(full_outputs, reference):
    for ours, name in zip(full_outputs.encoder_hidden_states, ["res2", "res3", "res4", "res5"]):
        assert _max_diff(ours, reference["backbone_features"][name]) < TOLERANCE
    for ours, expected in zip(full_outputs.pixel_decoder_hidden_states, reference["multi_scale_features"]):
        assert _max_diff(ours, expected) < TOLERANCE
    assert _max_diff(full_outputs.pixel_decoder_last_hidden_state, reference["mask_features"]) < TOLERANCE


def test_predictions_of_every_layer_match_original(full_outputs, reference):
    expected = reference["outputs"]
    assert full_outputs.masks_queries_logits.shape == (1, 10, 2, 32, 48)
    assert _max_diff(full_outputs.class_queries_logits, expected["pred_logits"]) < TOLERANCE
    assert _max_diff(full_outputs.masks_queries_logits, expected["pred_masks"]) < TOLERANCE
    assert len(full_outputs.auxiliary_logits) == len(expected["aux_outputs"]) == 4
    for ours, theirs in zip(full_outputs.auxiliary_logits, expected["aux_outputs"]):
        assert _max_diff(ours["class_queries_logits"], theirs["pred_logits"]) < TOLERANCE
        assert _max_diff(ours["masks_queries_logits"], theirs["pred_masks"]) < TOLERANCE


def _decoder_predictions(model, multi_scale_features, mask_features, num_frames):
    decoder_output = model.model.transformer_module(list(multi_scale_features), mask_features, num_frames=num_frames)
    classes = [model.class_predictor(states) for states in decoder_output.intermediate_hidden_states]
    return classes, decoder_output.masks_queries_logits


def test_training_mode_two_videos_match_original(model, reference):
    case = reference["train_bs2"]
    assert case["frame_order"].startswith("video-major")
    model.train()
    try:
        with torch.no_grad():
            classes, masks = _decoder_predictions(model, case["multi_scale_features"], case["mask_features"],
                                                  case["num_frames"])
    finally:
        model.eval()
    expected = case["outputs"]
    assert _max_diff(classes[-1], expected["pred_logits"]) < TOLERANCE
    assert _max_diff(masks[-1], expected["pred_masks"]) < TOLERANCE
    for index, auxiliary in enumerate(expected["aux_outputs"]):
        assert _max_diff(classes[index], auxiliary["pred_logits"]) < TOLERANCE
        assert _max_diff(masks[index], auxiliary["pred_masks"]) < TOLERANCE
    # the original's eval mode takes all 4 frames as one video: our num_frames=4
    with torch.no_grad():
        classes, masks = _decoder_predictions(model, case["multi_scale_features"], case["mask_features"], 4)
    assert _max_diff(classes[-1], case["eval_outputs_same_inputs"]["pred_logits"]) < TOLERANCE
    assert _max_diff(masks[-1], case["eval_outputs_same_inputs"]["pred_masks"]) < TOLERANCE


def test_all_masked_rows_match_original(model, reference):
    case = reference["edge_all_masked"]
    features = [feature.contiguous() for feature in case["multi_scale_features"]]
    mask_features = case["mask_features"].contiguous()
    with torch.no_grad():
        classes, masks = _decoder_predictions(model, features, mask_features, 2)
    expected = case["outputs"]
    assert _max_diff(classes[-1], expected["pred_logits"]) < TOLERANCE
    assert _max_diff(masks[-1], expected["pred_masks"].contiguous()) < TOLERANCE
    for index, auxiliary in enumerate(expected["aux_outputs"]):
        assert _max_diff(classes[index], auxiliary["pred_logits"]) < TOLERANCE
        assert _max_diff(masks[index], auxiliary["pred_masks"].contiguous()) < TOLERANCE
    # (video, query) rows masked in every frame before each layer: the original's counts; they attend everywhere
    sizes = [feature.shape[-2:] for feature in features]
    fully_masked = []
    for layer in range(len(model.model.transformer_module.decoder.layers)):
        logits = masks[layer]
        resized = torch.nn.functional.interpolate(logits.flatten(0, 1), size=sizes[layer % 3], mode="bilinear",
                                                  align_corners=False)
        blocked = resized.reshape(logits.shape[0], logits.shape[1], -1).sigmoid() < 0.5
        fully_masked.append(int(blocked.all(-1).sum()))
        allowed = attention_mask_from_masks(logits, sizes[layer % 3])
        assert allowed[blocked.all(-1).unsqueeze(1)].all()
    assert fully_masked == case["fully_masked_rows_per_layer"]


def test_3d_position_encoding_matches_original(reference):
    case = reference["pos_embedding"]
    encoder = SinePositionEmbedding3D(case["pe3d_num_pos_feats"], normalize=True)
    batch, frames, _, height, width = case["pe3d_input_shape"]
    actual = encoder.encode_video(frames, height, width, "cpu", torch.float32).expand(batch, -1, -1, -1, -1)
    assert _max_diff(actual, case["pe3d_output"]) < 1e-5


def _as_set(scores, labels, masks):
    return {(round(score, 5), int(label), tube.numpy().tobytes()) for score, label, tube in zip(scores, labels, masks)}


def test_post_processing_matches_original_inference_video(full_outputs, reference):
    case = reference["postprocess"]
    processor = SeriesVideoMask2FormerVideoProcessor()
    results = processor.post_process_video_instance_segmentation(
        full_outputs,
        target_sizes=[(case["output_height"], case["output_width"])],
        image_sizes=[case["image_size"]],
        padded_image_size=case["padded_input_size"],
    )
    assert len(results) == 1 and len(results[0]) == 10
    ours = results[0]
    masks = [torch.stack(item["segmentations"]) for item in ours]
    assert masks[0].shape == (2, 72, 108) and masks[0].dtype == torch.bool
    assert _as_set([i["score"] for i in ours], [i["label_id"] for i in ours], masks) == _as_set(
        case["pred_scores"], case["pred_labels"], case["pred_masks"]
    )
    assert [i["score"] for i in ours] == sorted((i["score"] for i in ours), reverse=True)


def test_post_processing_matches_original_on_synthetic_logits(reference):
    case = reference["postprocess_synthetic"]
    outputs = {
        "class_queries_logits": case["pred_cls"][None],
        "masks_queries_logits": case["pred_masks_in"][None],
    }
    # the original upsamples to the padded input; here the masks are already at the padded size
    results = SeriesVideoMask2FormerVideoProcessor().post_process_video_instance_segmentation(
        outputs, target_sizes=[(case["output_height"], case["output_width"])], image_sizes=[case["image_size"]],
        padded_image_size=case["pred_masks_in"].shape[-2:],
    )[0]
    masks = [torch.stack(item["segmentations"]) for item in results]
    assert _as_set([i["score"] for i in results], [i["label_id"] for i in results], masks) == _as_set(
        case["pred_scores"], case["pred_labels"], case["pred_masks"]
    )
