"""Tests of the video training example (examples/train_video.py: task_video.py on segmentation_training.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# appended, not prepended: examples/evaluate.py must not shadow the `evaluate` library for other tests
sys.path.append(str(REPO / "examples"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import checkpointing  # noqa: E402
import reporting  # noqa: E402
import segmentation_training as st  # noqa: E402
import task_common  # noqa: E402
import task_video  # noqa: E402
from inference import evaluate_model  # noqa: E402

from hf_maskformer_series.data.synthetic_video import SyntheticVideoConfig, generate_synthetic_youtube_vis  # noqa: E402

VIDEO_AP_KEYS = {"video_ap", "video_ap_50", "video_ap_75", "video_ar_1", "video_ar_10"}
TINY_ARGS = [
    "--num_queries", "8", "--train_num_points", "256", "--min_size_train", "48", "64", "--test_size", "64",
    "--per_device_train_batch_size", "2", "--warmup_steps", "2", "--logging_steps", "1", "--num_overlay_images",
    "2", "--checkpointing_steps", "0",
]


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    config = SyntheticVideoConfig(num_train=4, num_val=2, height=48, width=64, min_frames=3, max_frames=5,
                                  min_things=1, max_things=3, seed=1)
    return generate_synthetic_youtube_vis(tmp_path_factory.mktemp("data") / "ytvis", config)


def _args(data_dir, output_dir, *extra: str):
    return st.parse_args("video", ["--data_dir", str(data_dir), "--output_dir", str(output_dir), *TINY_ARGS, *extra])


def test_video_is_a_registered_task_with_its_own_defaults():
    assert task_common.get_task("video") is task_video.TASK
    args = st.parse_args("video", [])
    assert (args.num_frames, args.frame_range, args.min_size_train, args.top_k) == (2, 20, [80, 96], 10)
    assert args.output_dir == "outputs/train_video" and args.synthetic_num_train == SyntheticVideoConfig.num_train
    assert not hasattr(args, "crop_size") and not hasattr(args, "panoptic_threshold")  # image-only options
    image_args = st.parse_args("panoptic", [])
    assert image_args.crop_size == 128 and image_args.min_scale == 0.8 and not hasattr(image_args, "num_frames")
    with pytest.raises(SystemExit):
        st.parse_args("video", ["--dataset_name", "someone/ytvis"])


def test_clips_are_seeded_augmented_per_clip_and_padded(video_dir):
    args = _args(video_dir, "unused", "--num_frames", "3", "--min_size_train", "40", "56")
    data = task_video.TASK.load_data(args, __import__("accelerate").Accelerator(cpu=True))
    assert len(data.train) == 4 and len(data.validation) == 2
    assert [c["name"] for c in data.labels.categories] == ["circle", "square", "triangle", "cross"]
    model, processor = task_video.TASK.build_model_and_processor(args, data.labels)
    dataset = task_video.TASK.training_dataset(data, args, processor)
    first, again = dataset[(3, 1)], dataset[(3, 1)]
    for key in first:
        torch.testing.assert_close(first[key], again[key])
    examples = [dataset[(epoch, index)] for epoch in range(3) for index in range(4)]
    sizes = set()
    for example in examples:
        frames, masks, labels = example["pixel_values_videos"], example["mask_labels"], example["class_labels"]
        assert frames.shape[:2] == (3, 3) and min(frames.shape[-2:]) in (40, 56)  # one resize for the whole clip
        assert masks.shape[1:] == (3, *frames.shape[-2:]) and masks.shape[0] == labels.shape[0]
        assert masks.flatten(1).any(dim=1).all() and set(labels.tolist()) <= set(range(4))
        sizes.add(tuple(frames.shape[-2:]))
    assert len(sizes) == 2  # both shortest-edge choices were drawn (48x64 frames -> 40x53 or 56x75)
    batch = task_video.TASK.collate(examples[:4])
    assert batch["pixel_values_videos"].shape[0] == 4 and batch["pixel_values_videos"].shape[-2] % 32 == 0
    assert batch["pixel_values_videos"].shape[-1] % 32 == 0 and batch["pixel_mask"].shape[0] == 4
    for example, mask, labels in zip(examples[:4], batch["pixel_mask"], batch["mask_labels"]):
        h, w = example["pixel_values_videos"].shape[-2:]
        assert mask.sum() == h * w and mask[:h, :w].all()
        assert labels.shape[-2:] == batch["pixel_values_videos"].shape[-2:]
        torch.testing.assert_close(labels[..., :h, :w], example["mask_labels"])
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss > 0


def test_flip_is_drawn_once_per_clip(video_dir):
    """With the two shortest-edge choices equal, a flipped clip is the mirror image of the unflipped one."""
    args = _args(video_dir, "unused", "--min_size_train", "48", "--num_frames", "2")
    data = task_video.TASK.load_data(args, __import__("accelerate").Accelerator(cpu=True))
    _, processor = task_video.TASK.build_model_and_processor(args, data.labels)
    flipping = task_video.TASK.training_dataset(data, args, processor)
    plain = task_video.TASK.training_dataset(data, _args(video_dir, "unused", "--min_size_train", "48", "--no_flip"),
                                      processor)
    flips = 0
    for epoch in range(6):
        a, b = flipping[(epoch, 0)], plain[(epoch, 0)]
        if not torch.equal(a["pixel_values_videos"], b["pixel_values_videos"]):
            flips += 1  # every frame and every mask of the clip is mirrored, not some of them
            torch.testing.assert_close(a["pixel_values_videos"], b["pixel_values_videos"].flip(-1))
            torch.testing.assert_close(a["mask_labels"], b["mask_labels"].flip(-1))
    assert 0 < flips < 6


def test_short_run_trains_evaluates_video_ap_and_saves(video_dir, tmp_path):
    result = st.train(_args(video_dir, tmp_path, "--max_train_steps", "4", "--checkpointing_steps", "2"))
    assert len(result["losses"]) == 4 and all(np.isfinite(result["losses"]))
    metrics = result["metrics"]
    assert VIDEO_AP_KEYS <= set(metrics) and all(0 <= metrics[key] <= 100 for key in VIDEO_AP_KEYS)

    from transformers import AutoModelForUniversalSegmentation, AutoVideoProcessor

    model = AutoModelForUniversalSegmentation.from_pretrained(tmp_path)
    processor = AutoVideoProcessor.from_pretrained(tmp_path)
    assert type(model).__name__ == "SeriesVideoMask2FormerForVideoInstanceSegmentation"
    assert type(processor).__name__ == "SeriesVideoMask2FormerVideoProcessor"
    assert model.config.num_frames == 2 and model.config.id2label[3] == "cross"
    assert processor.size["shortest_edge"] == 64
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["video_ap"] == pytest.approx(metrics["video_ap"]) and results["step"] == 4
    card = (tmp_path / "README.md").read_text()
    assert f"| video_ap | {metrics['video_ap']:.2f} |" in card and "AutoVideoProcessor" in card
    assert "2 videos per device" in card and "clips of 2 frames" in card
    assert [p.name for p in checkpointing.checkpoint_dirs(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    assert (tmp_path / reporting.OVERLAY_FILE).is_file()

    # The saved model reproduces the evaluation it was saved with (one pass and a window over the whole video).
    args = _args(video_dir, tmp_path / "again")
    labels = task_common.LabelSet.from_categories([{**c, "isthing": 1} for c in
                                          json.loads((video_dir / "train.json").read_text())["categories"]], "test")
    data = task_video.TASK.load_data(args, __import__("accelerate").Accelerator(cpu=True))
    again, _ = evaluate_model(task_video.TASK, model, processor, data.validation, labels, args)
    assert again["video_ap"] == pytest.approx(metrics["video_ap"])
    windowed, _ = evaluate_model(task_video.TASK, model, processor, data.validation, labels,
                                 _args(video_dir, tmp_path, "--eval_window", "8"))
    assert windowed == pytest.approx(again)


def test_resume_gives_the_same_loss_curve(video_dir, tmp_path):
    """The shared checkpoint/resume code with the video pieces: 4 videos / batch 2 = 2 steps per epoch."""
    steps = ["--max_train_steps", "5", "--checkpointing_steps", "3", "--num_overlay_images", "0"]
    uninterrupted = st.train(_args(video_dir, tmp_path / "full", *steps))["losses"]

    def kill_after_step_4(step, record):
        if step == 4:
            raise st.StopTraining

    with pytest.raises(st.StopTraining):
        st.train(_args(video_dir, tmp_path / "cut", *steps), step_callback=kill_after_step_4)
    resumed = st.train(_args(video_dir, tmp_path / "cut", *steps, "--resume_from_checkpoint", "latest"))
    assert resumed["global_step"] == 5
    np.testing.assert_allclose(resumed["losses"], uninterrupted[3:], rtol=1e-5)


def test_video_ap_of_the_ground_truth_is_100(video_dir):
    """The evaluation's plumbing (reference decoding, category ids, the metric) scores a perfect prediction 100."""
    from hf_maskformer_series.data.youtube_vis import load_youtube_vis
    from hf_maskformer_series.metrics.video_ap.video_ap_core import compute_video_ap

    rows = load_youtube_vis(video_dir, "val")
    references = [task_video.reference_tracks(rows[i]) for i in range(len(rows))]
    predictions = [[{**t, "score": 1.0} for t in video] for video in references]
    assert compute_video_ap(predictions, references, categories=[1, 2, 3, 4])["AP"] == pytest.approx(1.0)
