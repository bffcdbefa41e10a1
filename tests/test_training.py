"""Tests of the Accelerate training examples (examples/segmentation_training.py, the image tasks and the scripts).

Run as a script (``python -m torch.distributed.run --nproc_per_node 2 tests/test_training.py <train args>``) this
file is the worker of the two-process test: it trains with deterministic loss points so that the losses of two
processes can be compared exactly with those of one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._launch import free_port

REPO = Path(__file__).resolve().parents[1]
# appended, not prepended: examples/evaluate.py must not shadow the `evaluate` library for other tests
sys.path.append(str(REPO / "examples"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import checkpointing  # noqa: E402
import reporting  # noqa: E402
import segmentation_training as st  # noqa: E402
import task_common  # noqa: E402

from hf_maskformer_series.data.masks import id_to_rgb, rgb_to_id  # noqa: E402
from hf_maskformer_series.data.synthetic import SyntheticPanopticConfig, generate_synthetic_panoptic  # noqa: E402
from hf_maskformer_series.target_encoding import segment_map_to_one_hot  # noqa: E402

# A model much smaller than the `tiny` preset and 64x64 images keep every run to seconds.
TINY_ARGS = [
    "--num_queries", "8", "--train_num_points", "256", "--crop_size", "64", "--per_device_train_batch_size", "2",
    "--per_device_eval_batch_size", "4", "--warmup_steps", "2", "--logging_steps", "1", "--num_overlay_images", "2",
    "--checkpointing_steps", "0",
]



@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    config = SyntheticPanopticConfig(num_train=8, num_val=4, height=64, width=64, min_things=1, max_things=3,
                                     min_thing_size=0.25, max_thing_size=0.4, void_border=2, seed=3)
    return generate_synthetic_panoptic(tmp_path_factory.mktemp("data") / "synthetic", config)


def _args(task: str, data_dir, output_dir, *extra: str):
    return st.parse_args(task, ["--data_dir", str(data_dir), "--output_dir", str(output_dir), *TINY_ARGS, *extra])


def _grid_points(mask_logits: torch.Tensor, num_points: int, *_args) -> torch.Tensor:
    """A fixed 16x16 grid of point coordinates (replaces the random importance sampling)."""
    axis = (torch.arange(16, dtype=torch.float32) + 0.5) / 16
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(1, -1, 2)
    return grid.expand(mask_logits.shape[0], -1, -1).to(mask_logits.device)


def match_on_full_masks(model: torch.nn.Module) -> None:
    """With the loss points on a fixed grid (``_grid_points``) the loss depends on the batch alone."""
    model.criterion.matcher.num_points = None


# ----------------------------------------------------------------------------------------------------------------
# Recipe pieces
# ----------------------------------------------------------------------------------------------------------------


def test_poly_schedule_with_warmup():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1e-4)
    scheduler = st.poly_schedule_with_warmup(optimizer, warmup_steps=4, total_steps=20, power=0.9)
    lrs = []
    for _ in range(20):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(lrs[:4], [2.5e-5, 5e-5, 7.5e-5, 1e-4], rtol=1e-6)
    np.testing.assert_allclose(lrs[10], 1e-4 * (1 - 10 / 20) ** 0.9, rtol=1e-6)
    assert lrs[19] < lrs[10] < lrs[4]


def test_parameter_groups_backbone_lr_and_no_decay():
    from hf_maskformer_series import SeriesMask2FormerConfig, SeriesMask2FormerForUniversalSegmentation
    from hf_maskformer_series.presets import preset_config_kwargs

    model = SeriesMask2FormerForUniversalSegmentation(
        SeriesMask2FormerConfig(**preset_config_kwargs("tiny", {0: "a", 1: "b"}))
    )
    groups = st.parameter_groups(model, 1e-4, 0.05, 0.1)
    by_id = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    backbone = [n for n in named if n.startswith("model.pixel_level_module.encoder.")]
    assert backbone and all(by_id[id(named[n])]["lr"] == pytest.approx(1e-5) for n in backbone)
    assert by_id[id(named["class_predictor.weight"])]["lr"] == pytest.approx(1e-4)
    assert by_id[id(named["class_predictor.weight"])]["weight_decay"] == 0.05
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(by_id[id(named[f"{n}.weight"])]["weight_decay"] == 0.0 for n in norms)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_augmentation_is_a_function_of_its_seed():
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    segment_map = np.repeat(np.arange(70)[None] // 10, 50, axis=0).astype(np.int64)
    first = task_common.augment(image, segment_map, np.random.default_rng([1, 2, 3]), "resize_crop", 48, 0.8, 1.25, True)
    again = task_common.augment(image, segment_map, np.random.default_rng([1, 2, 3]), "resize_crop", 48, 0.8, 1.25, True)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    image_t, map_t, pixel_mask = task_common.augment(image, segment_map, np.random.default_rng(5), "lsj", 96, 0.5, 0.5, False)
    assert image_t.shape == (3, 96, 96) and map_t.shape == (96, 96)
    # LSJ at scale 0.5: the longest edge (70) becomes 48 and the rest is padding, void in the map
    assert pixel_mask.sum() == 34 * 48 and (map_t[pixel_mask == 0] == 0).all()
    assert set(np.unique(map_t[pixel_mask == 1].numpy())) <= set(range(7))


def test_training_examples_use_lean_targets_equal_to_the_one_hot_targets(synthetic_dir, tmp_path):
    args = _args("panoptic", synthetic_dir, tmp_path / "out")
    task = task_common.get_task("panoptic")
    data = task.load_data(args, accelerator=None)
    example = task_common.ImageTrainingDataset(task, data.train, data.labels, args, [0.5] * 3, [0.5] * 3)[(0, 0)]
    target_map, classes = example["mask_labels"], example["class_labels"]
    assert target_map.dim() == 2 and not target_map.is_floating_point()  # the lean form
    image, segment_map, segment_to_label = task.row_to_segments(data.train[0], data.labels)
    _, map_t, _ = task_common.augment(image, segment_map, np.random.default_rng([args.seed, 0, 0]), args.augmentation,
                                      args.crop_size, args.min_scale, args.max_scale, not args.no_flip)
    masks, one_hot_classes = task_common.encode_segmentation_targets(map_t, segment_to_label, ignore_index=0)
    torch.testing.assert_close(classes, one_hot_classes)
    torch.testing.assert_close(segment_map_to_one_hot(target_map, len(classes)).float(), masks.float())


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


def test_atomic_checkpoint_keeps_the_previous_one_when_a_save_fails(tmp_path, monkeypatch):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    first = checkpointing.save_checkpoint_atomically(accelerator, tmp_path, 1, {"global_step": 1, "epoch": 0,
                                                                       "batches_done_in_epoch": 1})
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    saved_weight = model.weight.detach().clone()

    def failing_save_state(output_dir, **kwargs):  # writes part of a checkpoint, then the "disk fills up"
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(accelerator, "save_state", failing_save_state)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        checkpointing.save_checkpoint_atomically(accelerator, tmp_path, 2, {"global_step": 2, "epoch": 0,
                                                                 "batches_done_in_epoch": 2}, total_limit=1)
    assert checkpointing.checkpoint_dirs(tmp_path) == [first]
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]  # the partial save was cleaned up

    # A run killed mid-save leaves only a temporary folder: it is never taken for a checkpoint.
    (tmp_path / ".checkpoint-3.tmp").mkdir()
    (tmp_path / ".checkpoint-3.tmp" / "model.safetensors").write_bytes(b"partial")
    assert checkpointing.resolve_checkpoint("latest", str(tmp_path)) == first
    monkeypatch.undo()
    accelerator.load_state(str(first))
    torch.testing.assert_close(model.weight.detach(), saved_weight)
    # The next successful save removes the stale folder and, with total_limit=1, the older checkpoint.
    second = checkpointing.save_checkpoint_atomically(accelerator, tmp_path, 4, {"global_step": 4, "epoch": 0,
                                                                      "batches_done_in_epoch": 4}, total_limit=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"] and checkpointing.checkpoint_dirs(tmp_path) == [second]


def test_resume_gives_the_same_loss_curve(synthetic_dir, tmp_path):
    steps = ["--max_train_steps", "6", "--checkpointing_steps", "3", "--num_overlay_images", "0"]
    uninterrupted = st.train(_args("panoptic", synthetic_dir, tmp_path / "full", *steps))["losses"]
    assert len(uninterrupted) == 6 and all(np.isfinite(uninterrupted))

    def kill_after_step_4(step, record):
        if step == 4:
            raise st.StopTraining

    with pytest.raises(st.StopTraining):
        st.train(_args("panoptic", synthetic_dir, tmp_path / "cut", *steps), step_callback=kill_after_step_4)
    assert [p.name for p in checkpointing.checkpoint_dirs(tmp_path / "cut")] == ["checkpoint-3"]
    resumed = st.train(_args("panoptic", synthetic_dir, tmp_path / "cut", *steps, "--resume_from_checkpoint",
                             "latest"))
    assert resumed["global_step"] == 6
    np.testing.assert_allclose(resumed["losses"], uninterrupted[3:], rtol=1e-5)
    # 8 images / batch 2 = 4 steps per epoch: the resumed run crossed an epoch boundary at the same place
    log = [json.loads(line) for line in (tmp_path / "cut" / reporting.LOG_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in log if "loss" in r][-3:] == [0, 1, 1]
    # the log holds each step once: the killed run's step 4 was dropped when the resumed run logged it again
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    full_log = [json.loads(line) for line in (tmp_path / "full" / reporting.LOG_FILE).read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in log], [r["loss"] for r in full_log], rtol=1e-5)


def test_resume_latest_without_a_checkpoint_starts_from_step_0(synthetic_dir, tmp_path):
    """One command both starts and resumes a pre-emptible job: 'latest' in a folder without checkpoints starts fresh;
    an explicit folder that is not a checkpoint is an error."""
    result = st.train(_args("panoptic", synthetic_dir, tmp_path / "fresh", "--max_train_steps", "2",
                            "--num_overlay_images", "0", "--resume_from_checkpoint", "latest"))
    assert result["global_step"] == 2 and len(result["losses"]) == 2
    with pytest.raises(SystemExit, match=r"error: .*missing is not a complete checkpoint"):
        st.main("panoptic", ["--data_dir", str(synthetic_dir), "--output_dir", str(tmp_path / "x"), *TINY_ARGS,
                             "--resume_from_checkpoint", str(tmp_path / "missing")])


# ----------------------------------------------------------------------------------------------------------------
# Learning, outputs
# ----------------------------------------------------------------------------------------------------------------


def test_overfit_reaches_a_pq_well_above_the_untrained_model(synthetic_dir, tmp_path):
    common = ["--validation_split", "train", "--max_train_samples", "4", "--max_eval_samples", "4",
              "--augmentation", "none", "--no_flip", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
              "--warmup_steps", "10", "--panoptic_threshold", "0.5", "--seed", "0"]
    untrained = st.train(_args("panoptic", synthetic_dir, tmp_path / "untrained", *common, "--max_train_steps", "1"))
    trained = st.train(_args("panoptic", synthetic_dir, tmp_path / "trained", *common, "--max_train_steps", "80"))
    assert untrained["metrics"]["pq"] < 5
    assert trained["metrics"]["pq"] > untrained["metrics"]["pq"] + 30, trained["metrics"]
    assert trained["losses"][-1] < 0.5 * trained["losses"][0]

    # what the run leaves behind: a loadable model + processor, the overlay PNG, a model card with the metrics
    from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

    output = tmp_path / "trained"
    model = AutoModelForUniversalSegmentation.from_pretrained(output)
    processor = AutoImageProcessor.from_pretrained(output)
    assert type(model).__name__ == "SeriesMask2FormerForUniversalSegmentation"
    assert type(processor).__name__ == "SeriesMask2FormerImageProcessor"
    assert model.config.id2label[4] == "sky" and model.config.num_labels == 7
    overlay = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(output / reporting.OVERLAY_FILE))
    assert overlay.shape[1] == 3 * 64 + 4 * 4 and overlay.shape[0] > 2 * 64
    card = (output / "README.md").read_text()
    assert f"| pq | {trained['metrics']['pq']:.2f} |" in card and "AdamW" in card and "sky (stuff)" in card
    results = json.loads((output / "eval_results.json").read_text())
    assert results["pq"] == pytest.approx(trained["metrics"]["pq"])


@pytest.mark.parametrize("task, metric_keys", [
    ("instance", {"map", "map_50", "map_75", "map_small", "map_medium", "map_large"}),
    ("semantic", {"mean_iou", "mean_accuracy", "overall_accuracy"}),
])
def test_instance_and_semantic_scripts_train_and_evaluate(synthetic_dir, tmp_path, task, metric_keys):
    data_dir = synthetic_dir / "ade20k" if task == "semantic" else synthetic_dir
    result = st.train(_args(task, data_dir, tmp_path, "--max_train_steps", "3"))
    assert metric_keys <= set(result["metrics"])
    assert all(0 <= result["metrics"][key] <= 100 for key in metric_keys)
    assert len(result["losses"]) == 3 and all(np.isfinite(result["losses"]))
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / reporting.OVERLAY_FILE).is_file() == (task != "instance")
    if task == "semantic":
        config = json.loads((tmp_path / "config.json").read_text())
        assert len(config["id2label"]) == 7 and config["id2label"]["0"] == "circle"


def test_model_name_or_path_loads_a_transformers_checkpoint_for_a_new_label_set(tmp_path):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    reference = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(
        backbone_config=swin, hidden_dim=32, feature_size=32, mask_feature_size=32, encoder_feedforward_dim=64,
        dim_feedforward=64, num_queries=5, decoder_layers=3, encoder_layers=1, num_attention_heads=2, num_labels=3,
    ))
    reference.save_pretrained(tmp_path / "checkpoint")
    args = st.parse_args("panoptic", ["--model_name_or_path", str(tmp_path / "checkpoint")])
    labels = task_common.LabelSet.from_categories([{"id": 10 + k, "name": f"c{k}", "isthing": 1} for k in range(6)], "test")
    model, processor = task_common.get_task("panoptic").build_model_and_processor(args, labels)
    assert model.config.num_labels == 6 and model.config.id2label[5] == "c5"
    assert model.class_predictor.out_features == 7  # re-initialised for the new label set
    ours, theirs = model.state_dict(), reference.state_dict()
    same = [k for k in theirs if not k.startswith("class_predictor") and not k.startswith("criterion")]
    assert len(same) > 100 and all(torch.equal(ours[k], theirs[k]) for k in same)
    assert processor.size["shortest_edge"] == 128  # the checkpoint has no processor: a new one, sized to crop_size


# ----------------------------------------------------------------------------------------------------------------
# Bad data, Hub access
# ----------------------------------------------------------------------------------------------------------------


def _copy_dataset(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_fine_tuning_a_saved_model_on_a_label_set_of_another_size(synthetic_dir, tmp_path):
    """Issue 16 item 1: save a model for 3 labels, fine-tune it with the training example on the 7 labels of the
    synthetic data: the loss is finite and the class weights of the loss are those of a fresh 7-label model."""
    from hf_maskformer_series import SeriesMask2FormerConfig, SeriesMask2FormerForUniversalSegmentation
    from hf_maskformer_series.presets import preset_config_kwargs

    config = SeriesMask2FormerConfig(**preset_config_kwargs("tiny", {0: "a", 1: "b", 2: "c"}, num_queries=8,
                                                            train_num_points=256))
    SeriesMask2FormerForUniversalSegmentation(config).save_pretrained(tmp_path / "three_labels")
    seen = {}

    def record_weights(model):
        seen["empty_weight"] = model.criterion.empty_weight.clone()

    result = st.train(_args("panoptic", synthetic_dir, tmp_path / "fine_tuned", "--model_name_or_path",
                            str(tmp_path / "three_labels"), "--max_train_steps", "3", "--num_overlay_images", "0"),
                      model_hook=record_weights)
    expected = torch.ones(8)
    expected[-1] = config.no_object_weight
    torch.testing.assert_close(seen["empty_weight"], expected, rtol=0, atol=0)
    assert len(result["losses"]) == 3 and all(np.isfinite(result["losses"])) and max(result["losses"]) < 1e3
    saved = SeriesMask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "fine_tuned")
    assert saved.config.num_labels == 7
    torch.testing.assert_close(saved.criterion.empty_weight, expected, rtol=0, atol=0)


def test_bad_data_errors_name_the_file(synthetic_dir, tmp_path):
    missing = _copy_dataset(synthetic_dir, tmp_path / "missing_image")
    (missing / "images" / "train" / "000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"000000000002\.png.*missing"):
        st.train(_args("panoptic", missing, tmp_path / "out"))

    stray = _copy_dataset(synthetic_dir, tmp_path / "stray_segment")
    png = stray / "panoptic_val" / "000000100001.png"
    ids = rgb_to_id(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(png)))
    ids[0, 0] = 4242
    __import__("PIL.Image", fromlist=["Image"]).fromarray(id_to_rgb(ids)).save(png)
    with pytest.raises(ValueError, match=r"000000100001\.png.*\[4242\]"):
        st.train(_args("panoptic", stray, tmp_path / "out"))

    unknown = _copy_dataset(synthetic_dir, tmp_path / "unknown_category")
    annotation_file = unknown / "annotations" / "panoptic_train.json"
    content = json.loads(annotation_file.read_text())
    content["annotations"][0]["segments_info"][0]["category_id"] = 99
    annotation_file.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"panoptic_train\.json.*unknown category_id 99"):
        st.train(_args("panoptic", unknown, tmp_path / "out"))

    # The command line turns them into a one-line error instead of a traceback.
    with pytest.raises(SystemExit, match=r"error: .*000000000002\.png"):
        st.main("panoptic", ["--data_dir", str(missing), "--output_dir", str(tmp_path / "out")])


def test_push_to_hub_offline_fails_before_training(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE"):
        st.train(_args("panoptic", synthetic_dir, tmp_path, "--push_to_hub"))
    assert not (tmp_path / "model.safetensors").exists()


def test_hub_dataset_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: as good as offline
    with pytest.raises(ConnectionError, match="Cannot reach the Hugging Face Hub"):
        st.train(st.parse_args("panoptic", ["--dataset_name", "someone/coco-panoptic", "--output_dir",
                                            str(tmp_path)]))


def test_hub_model_id_offline_fails_at_once_in_one_line(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: as good as offline
    with pytest.raises(SystemExit) as raised:
        st.main("panoptic", ["--data_dir", str(synthetic_dir), "--output_dir", str(tmp_path), *TINY_ARGS,
                             "--model_name_or_path", "someone/mask2former-model"])
    message = str(raised.value)
    assert message.startswith("error: --model_name_or_path someone/mask2former-model: no such folder, and the "
                              "Hugging Face Hub cannot be reached") and "\n" not in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="HF_HUB_OFFLINE is set but the model is not in the local cache"):
        st.main("panoptic", ["--data_dir", str(synthetic_dir), "--output_dir", str(tmp_path), *TINY_ARGS,
                             "--model_name_or_path", "someone/mask2former-model"])


# ----------------------------------------------------------------------------------------------------------------
# Two processes
# ----------------------------------------------------------------------------------------------------------------


def _equal_target_dataset(source: Path, target: Path, num_images: int) -> Path:
    """A copy of ``source`` whose train split keeps ``num_images`` images with the same number of segments.

    The classification loss is, as in the original, a mean over each process's own queries (weighted by the
    no-object weight), so it equals the single-process value only when the images of a global batch have the same
    number of targets; the mask and dice losses are normalised by the all-reduced number of masks and always do.
    """
    target = _copy_dataset(source, target)
    annotation_file = target / "annotations" / "panoptic_train.json"
    content = json.loads(annotation_file.read_text())
    counts = [len(a["segments_info"]) for a in content["annotations"]]
    common = max(set(counts), key=counts.count)
    keep = [a["image_id"] for a, c in zip(content["annotations"], counts) if c == common][:num_images]
    assert len(keep) == num_images, counts
    content["images"] = [i for i in content["images"] if i["id"] in keep]
    content["annotations"] = [a for a in content["annotations"] if a["image_id"] in keep]
    annotation_file.write_text(json.dumps(content))
    return target


def test_two_processes_give_the_single_process_loss(tmp_path, monkeypatch):
    """torchrun with 2 processes x 1 image per step vs 1 process x 2 images: same global batches, same losses."""
    import hf_maskformer_series.criterion as criterion_module

    monkeypatch.setattr(criterion_module, "uncertain_point_coordinates", _grid_points)
    config = SyntheticPanopticConfig(num_train=24, num_val=2, height=64, width=64, min_things=2, max_things=2,
                                     min_thing_size=0.25, max_thing_size=0.35, void_border=2, seed=5)
    synthetic_dir = _equal_target_dataset(generate_synthetic_panoptic(tmp_path / "source", config),
                                          tmp_path / "equal", num_images=6)
    # AdamW's first steps are nearly sign(gradient) x lr, which turns float-rounding noise in near-zero gradients
    # into lr-sized updates; a large epsilon makes the update proportional to the gradient (momentum SGD), so the
    # comparison checks the averaged gradients themselves and stays exact.
    common = ["--max_train_steps", "3", "--num_overlay_images", "0", "--seed", "7", "--adam_epsilon", "1",
              "--learning_rate", "0.5", "--max_grad_norm", "1.0", "--augmentation", "none", "--no_flip"]
    single = st.train(_args("panoptic", synthetic_dir, tmp_path / "single", *common),
                      model_hook=match_on_full_masks)["losses"]
    distributed_args = ["--data_dir", str(synthetic_dir), "--output_dir", str(tmp_path / "two"), *TINY_ARGS,
                        *common, "--per_device_train_batch_size", "1"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         __file__, *distributed_args],
        env=environment, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "two" / reporting.LOG_FILE).read_text().splitlines()]
    two = [r["loss"] for r in log if "loss" in r]
    assert len(two) == 3
    np.testing.assert_allclose(two, single, rtol=1e-4)
    assert single[0] != pytest.approx(single[1])  # the comparison covers the updates, not one step


if __name__ == "__main__":  # the worker of test_two_processes_give_the_single_process_loss
    import hf_maskformer_series.criterion as criterion_module

    criterion_module.uncertain_point_coordinates = _grid_points
    st.train(st.parse_args("panoptic", sys.argv[1:]), model_hook=match_on_full_masks)
