"""Video Mask2Former: config, Auto registration, loading an image checkpoint, shapes, loss and input checks."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForUniversalSegmentation, AutoVideoProcessor

import hf_maskformer_series as hms
from tests._tiny_configs import tiny_mask2former_kwargs

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_video_config(**overrides) -> hms.SeriesVideoMask2FormerConfig:
    return hms.SeriesVideoMask2FormerConfig(**tiny_mask2former_kwargs(**overrides))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(tiny_video_config()).eval()


def test_config_defaults_and_validation():
    config = hms.SeriesVideoMask2FormerConfig()
    assert config.model_type == "series_video_mask2former"
    assert (config.num_frames, config.test_top_k, config.decoder_layers, config.num_queries) == (2, 10, 10, 100)
    image_config = hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs())
    video_config = hms.SeriesVideoMask2FormerConfig.from_image_config(image_config, num_frames=3)
    assert video_config.num_frames == 3 and video_config.hidden_dim == image_config.hidden_dim == 32
    with pytest.raises(ValueError, match="num_frames"):
        hms.SeriesVideoMask2FormerConfig(num_frames=0)


def test_auto_classes_and_save_load_round_trip(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    hms.SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, hms.SeriesVideoMask2FormerConfig)
    assert isinstance(AutoModel.from_config(config), hms.SeriesVideoMask2FormerModel)
    loaded = AutoModelForUniversalSegmentation.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, hms.SeriesVideoMask2FormerForVideoInstanceSegmentation)
    processor = AutoVideoProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, hms.SeriesVideoMask2FormerVideoProcessor)
    assert processor.size["shortest_edge"] == 64
    video = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        expected, actual = tiny_model(video), loaded(video)
    assert torch.equal(expected.masks_queries_logits, actual.masks_queries_logits)


def test_an_image_checkpoint_initialises_the_video_model(tmp_path):
    torch.manual_seed(1)
    image_model = hms.SeriesMask2FormerForUniversalSegmentation(hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs()))
    image_model.save_pretrained(tmp_path)
    config = hms.SeriesVideoMask2FormerConfig.from_image_config(image_model.config)
    video_model, info = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation.from_pretrained(
        tmp_path, config=config, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    image_state, video_state = image_model.state_dict(), video_model.state_dict()
    assert image_state.keys() == video_state.keys()
    assert all(torch.equal(image_state[key], video_state[key]) for key in image_state)


def test_output_shapes_and_backbone_sees_frames_independently(tiny_model):
    torch.manual_seed(2)
    video = torch.randn(2, 3, 3, 64, 96)
    with torch.no_grad():
        outputs = tiny_model(video, output_hidden_states=True, output_auxiliary_logits=True)
        single = tiny_model.model.pixel_level_module(video[1, 2:3])[1].mask_features
    assert outputs.class_queries_logits.shape == (2, 6, 5)
    assert outputs.masks_queries_logits.shape == (2, 6, 3, 16, 24)
    assert outputs.query_embeddings.shape == (2, 6, 32)
    assert len(outputs.auxiliary_logits) == 4  # decoder_layers=5 → 4 layers, 5 predictions
    assert outputs.pixel_decoder_last_hidden_state.shape == (6, 32, 16, 24)
    # frame 2 of video 1 is flat index 5 (video-major); the pixel decoder sees it alone
    assert torch.allclose(outputs.pixel_decoder_last_hidden_state[5], single[0], atol=1e-5)
    assert outputs.image_sizes.tolist() == [[64, 96], [64, 96]]
    assert outputs.padded_image_size.tolist() == [[64, 96], [64, 96]]  # one row per video (contract 1)


def test_videos_of_a_batch_are_independent(tiny_model):
    torch.manual_seed(3)
    video = torch.randn(2, 2, 3, 64, 64)
    with torch.no_grad():
        batched = tiny_model(video).masks_queries_logits
        alone = tiny_model(video[1:]).masks_queries_logits
    assert torch.allclose(batched[1:], alone, atol=1e-4)


def test_pixel_mask_gives_image_sizes(tiny_model):
    video = torch.randn(1, 2, 3, 64, 96)
    pixel_mask = torch.zeros(1, 64, 96, dtype=torch.long)
    pixel_mask[:, :50, :70] = 1
    with torch.no_grad():
        outputs = tiny_model(video, pixel_mask=pixel_mask)
        per_frame = tiny_model(video, pixel_mask=pixel_mask[:, None].expand(1, 2, 64, 96))
    assert outputs.image_sizes.tolist() == per_frame.image_sizes.tolist() == [[50, 70]]


def test_bad_inputs_raise_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="frames, channels"):
        tiny_model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="channels"):
        tiny_model(torch.randn(1, 2, 4, 64, 64))
    video = torch.randn(1, 2, 3, 64, 64)
    with pytest.raises(ValueError, match="frames but the video has 2"):
        tiny_model(video, mask_labels=[torch.zeros(1, 3, 64, 64)], class_labels=[torch.tensor([0])])
    with pytest.raises(ValueError, match="together"):
        tiny_model(video, mask_labels=[torch.zeros(1, 2, 64, 64)])
    with pytest.raises(ValueError, match="outside the model's labels"):
        tiny_model(video, mask_labels=[torch.zeros(1, 2, 64, 64)], class_labels=[torch.tensor([9])])
    with pytest.raises(ValueError, match="pixel_mask"):
        tiny_model(video, pixel_mask=torch.ones(1, 32, 32))


# ---------------------------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------------------------


def test_training_step_with_an_instance_absent_from_some_frames():
    torch.manual_seed(4)
    model = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(tiny_video_config()).train()
    video = torch.randn(2, 3, 3, 64, 64)
    present = torch.zeros(2, 3, 64, 64)
    present[0, :, 10:30, 10:40] = 1  # in every frame
    present[1, 1, 40:60, 20:50] = 1  # only in frame 1
    mask_labels = [present, torch.zeros(1, 3, 64, 64)]
    mask_labels[1][0, 0, 5:20, 5:20] = 1
    class_labels = [torch.tensor([0, 3]), torch.tensor([2])]
    outputs = model(video, mask_labels=mask_labels, class_labels=class_labels)
    # final + 4 auxiliary predictions, 3 losses each
    assert len(outputs.loss_dict) == 15
    assert torch.isfinite(outputs.loss)
    expected_total = sum(
        model.criterion.weight_dict[name.rsplit("_", 1)[0] if name[-1].isdigit() else name] * value
        for name, value in outputs.loss_dict.items()
    )
    assert torch.allclose(outputs.loss, expected_total)
    outputs.loss.backward()
    assert model.model.transformer_module.queries_features.weight.grad.abs().sum() > 0
    assert model.class_predictor.weight.grad.abs().sum() > 0


def _far_off_predictions(queries: int, frames: int, num_labels: int):
    class_logits = torch.zeros(1, queries, num_labels + 1)
    mask_logits = torch.full((1, queries, frames, 16, 16), -30.0)
    return class_logits, mask_logits


@pytest.mark.parametrize("present_frames", [4, 2])
def test_num_masks_counts_instances_not_frames(present_frames):
    """Masks predicted empty everywhere, one instance covering whole frames: each frame where the instance is
    present adds a dice loss of P/(P+1) (P points), absent frames add 0, and the sum is divided by num_masks = 1
    instance (not 4 frames)."""
    torch.manual_seed(5)
    config = tiny_video_config()
    model = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(config)
    class_logits, mask_logits = _far_off_predictions(config.num_queries, 4, config.num_labels)
    target = torch.zeros(1, 4, 64, 64)
    target[0, :present_frames] = 1
    losses = model.criterion(class_logits, mask_logits, [target], [torch.tensor([1])])
    points = config.train_num_points
    assert losses["loss_dice"].item() == pytest.approx(present_frames * points / (points + 1), abs=1e-3)
    # BCE: a present frame costs up to 30 per point (logit -30 vs target 1; less where points near the border
    # interpolate with the zero padding), an absent frame ~0; divided by 1 instance
    per_present_frame = losses["loss_mask"].item() / present_frames
    assert 20.0 < per_present_frame <= 30.01
