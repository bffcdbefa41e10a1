"""Tests of examples/evaluate.py (and the inference engine it shares with training and predict.py): metrics equal
to the training examples' evaluation, result files read by panopticapi / pycocotools giving the same figures,
resume, two processes, semantic PNGs with test-time augmentation, YouTube-VIS results."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests._launch import free_port

REPO = Path(__file__).resolve().parents[1]
# appended, not prepended: examples/evaluate.py must not shadow the `evaluate` library for other tests
sys.path.append(str(REPO / "examples"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import segmentation_training as st  # noqa: E402
from inference import evaluate_model  # noqa: E402
from task_common import get_task  # noqa: E402

# examples/evaluate.py, under another name than the `evaluate` library's
_spec = importlib.util.spec_from_file_location("examples_evaluate", REPO / "examples" / "evaluate.py")
evaluate_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate_script)

from hf_maskformer_series.data.synthetic import SyntheticPanopticConfig, generate_synthetic_panoptic  # noqa: E402
from hf_maskformer_series.data.synthetic_video import SyntheticVideoConfig, generate_synthetic_youtube_vis  # noqa: E402

MODEL_ARGS = ["--num_queries", "8", "--crop_size", "64"]  # image tasks



@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    config = SyntheticPanopticConfig(num_train=2, num_val=5, height=64, width=64, min_things=1, max_things=3,
                                     min_thing_size=0.25, max_thing_size=0.4, void_border=2, seed=3)
    return generate_synthetic_panoptic(tmp_path_factory.mktemp("data") / "synthetic", config)


def _saved_model(task_name: str, data_dir: Path, folder: Path, *extra: str):
    """A randomly initialised tiny model for the data's label set, saved to ``folder``; returns what the training
    example's evaluation reports for it (metrics), with the args, data and model."""
    model_args = MODEL_ARGS if task_name != "video" else ["--num_queries", "8"]
    args = st.parse_args(task_name, ["--data_dir", str(data_dir), "--per_device_eval_batch_size", "2", *model_args,
                                     *extra])
    task = get_task(task_name)
    data = task.load_data(args, __import__("accelerate").Accelerator(cpu=True))
    torch.manual_seed(0)
    model, processor = task.build_model_and_processor(args, data.labels)
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    metrics, _ = evaluate_model(task, model, processor, data.validation, data.labels, args)
    return metrics, args, data, model, processor


def _evaluate(task: str, model_dir: Path, data_dir: Path, output_dir: Path, *extra: str) -> dict:
    return evaluate_script.main(["--model_name_or_path", str(model_dir), "--task", task, "--data_dir", str(data_dir),
                                 "--output_dir", str(output_dir), "--per_device_eval_batch_size", "2",
                                 "--dataloader_num_workers", "0", *extra])


@pytest.fixture(scope="module")
def panoptic_model(synthetic_dir, tmp_path_factory):
    """A model trained (overfit) for a few steps on the val images, so that its segments match some of the ground
    truth and the comparisons below are not of empty results; the metrics its training run reported."""
    folder = tmp_path_factory.mktemp("panoptic_model")
    args = st.parse_args("panoptic", [
        "--data_dir", str(synthetic_dir), "--output_dir", str(folder), *MODEL_ARGS, "--train_num_points", "256",
        "--train_split", "val", "--per_device_train_batch_size", "5", "--per_device_eval_batch_size", "2",
        "--augmentation", "none", "--no_flip", "--learning_rate", "1e-3", "--warmup_steps", "5",
        "--max_train_steps", "25", "--checkpointing_steps", "0", "--num_overlay_images", "0",
        "--panoptic_threshold", "0.5", "--seed", "0"])
    return folder, st.train(args)["metrics"]


def test_panoptic_metrics_equal_training_and_panopticapi(synthetic_dir, panoptic_model, tmp_path):
    model_dir, training_metrics = panoptic_model
    report = _evaluate("panoptic", model_dir, synthetic_dir, tmp_path, "--panoptic_threshold", "0.5")
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
        assert report[key] == pytest.approx(training_metrics[key], abs=1e-12), key
    assert report["sq"] > 0  # segments were matched: the comparison is not of empty results
    assert report["num_images"] == 5 and report["num_computed"] == 5 and report["images_per_second"] > 0
    assert report["peak_memory_mb"] > 0 and json.loads((tmp_path / "eval_results.json").read_text()) == report

    from panopticapi.evaluation import pq_compute

    predictions = tmp_path / "predictions"
    content = json.loads((predictions / "panoptic_val.json").read_text())
    truth = json.loads((synthetic_dir / "annotations" / "panoptic_val.json").read_text())["annotations"]
    assert [(a["image_id"], a["file_name"]) for a in content["annotations"]] == \
        [(a["image_id"], a["file_name"]) for a in truth]
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(str(synthetic_dir / "annotations" / "panoptic_val.json"),
                               str(predictions / "panoptic_val.json"), str(synthetic_dir / "panoptic_val"),
                               str(predictions / "panoptic_val"))
    assert 100 * reference["All"]["pq"] == pytest.approx(report["pq"], abs=1e-9)
    assert 100 * reference["Things"]["sq"] == pytest.approx(report["sq_things"], abs=1e-9)
    assert 100 * reference["Stuff"]["rq"] == pytest.approx(report["rq_stuff"], abs=1e-9)


def test_a_killed_run_resumes_where_it_stopped(synthetic_dir, panoptic_model, tmp_path, monkeypatch):
    model_dir, _ = panoptic_model
    task = get_task("panoptic")
    original_infer = task.infer
    calls = []

    def infer_then_die(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after two batches (4 images) were written
        calls.append(1)
        return original_infer(*args, **kwargs)

    monkeypatch.setattr(task, "infer", infer_then_die)
    with pytest.raises(KeyboardInterrupt):
        _evaluate("panoptic", model_dir, synthetic_dir, tmp_path / "cut")
    written = sorted(p.name for p in (tmp_path / "cut" / "predictions" / "panoptic_val").iterdir())
    assert len(written) == 4 and not any(name.endswith(".tmp") for name in written)
    before = {name: (tmp_path / "cut" / "predictions" / "panoptic_val" / name).stat().st_mtime_ns
              for name in written}
    monkeypatch.setattr(task, "infer", original_infer)
    resumed = _evaluate("panoptic", model_dir, synthetic_dir, tmp_path / "cut")
    assert resumed["num_computed"] == 1  # the last batch only
    assert {n: (tmp_path / "cut" / "predictions" / "panoptic_val" / n).stat().st_mtime_ns for n in written} == before
    full = _evaluate("panoptic", model_dir, synthetic_dir, tmp_path / "full")
    assert {k: resumed[k] for k in ("pq", "sq", "rq")} == {k: full[k] for k in ("pq", "sq", "rq")}
    assert (tmp_path / "cut" / "predictions" / "panoptic_val.json").read_text() == \
        (tmp_path / "full" / "predictions" / "panoptic_val.json").read_text()


def test_two_processes_give_the_files_and_metrics_of_one(synthetic_dir, panoptic_model, tmp_path):
    """``python evaluate.py`` and ``torchrun --nproc_per_node 2 evaluate.py``, both with one thread per process (the
    CPU kernels' float rounding depends on the thread count, not on the number of processes)."""
    model_dir, _ = panoptic_model
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    arguments = ["--model_name_or_path", str(model_dir), "--task", "panoptic", "--data_dir", str(synthetic_dir),
                 "--per_device_eval_batch_size", "2", "--dataloader_num_workers", "0", "--panoptic_threshold", "0.5"]
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--nproc_per_node", "2",
                                                 "--master_port", str(free_port())])):
        completed = subprocess.run(
            [sys.executable, *launcher, str(REPO / "examples" / "evaluate.py"), *arguments, "--output_dir",
             str(tmp_path / name)], env=environment, capture_output=True, text=True, timeout=300,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
    single = json.loads((tmp_path / "one" / "eval_results.json").read_text())
    two = json.loads((tmp_path / "two" / "eval_results.json").read_text())
    assert (single["num_processes"], two["num_processes"]) == (1, 2) and single["sq"] > 0
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "per_class_pq"):
        assert two[key] == single[key], key
    one_files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "predictions").rglob("*")
                       if p.is_file())
    two_files = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "predictions").rglob("*")
                       if p.is_file())
    assert one_files == two_files and len(one_files) == 11  # 5 PNGs, 5 records, the JSON
    for name in one_files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_instance_results_file_gives_the_same_ap_with_pycocotools(synthetic_dir, tmp_path):
    training_metrics = _saved_model("instance", synthetic_dir, tmp_path / "model")[0]
    report = _evaluate("instance", tmp_path / "model", synthetic_dir, tmp_path / "eval")
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large"):
        assert report[key] == pytest.approx(training_metrics[key], abs=1e-12), key

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = json.loads((tmp_path / "eval" / "predictions" / "instances_val_results.json").read_text())
    ground_truth = json.loads((synthetic_dir / "annotations" / "instances_val.json").read_text())
    assert {r["image_id"] for r in results} == {i["id"] for i in ground_truth["images"]}  # the dataset's ids
    assert {r["category_id"] for r in results} <= {c["id"] for c in ground_truth["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(synthetic_dir / "annotations" / "instances_val.json"))
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    for index, key in enumerate(("map", "map_50", "map_75", "map_small", "map_medium", "map_large")):
        assert 100 * max(evaluator.stats[index], 0.0) == pytest.approx(report[key], abs=1e-9), key


def test_semantic_pngs_hold_category_ids_and_tta_is_mirror_symmetric(synthetic_dir, tmp_path):
    data_dir = synthetic_dir / "ade20k"
    training_metrics, args, data, model, processor = _saved_model("semantic", data_dir, tmp_path / "model")
    report = _evaluate("semantic", tmp_path / "model", data_dir, tmp_path / "eval")
    assert report["mean_iou"] == pytest.approx(training_metrics["mean_iou"], abs=1e-12)
    pngs = sorted((tmp_path / "eval" / "predictions" / "semantic_val").iterdir())
    assert [p.stem for p in pngs] == [Path(data.validation[i]["file_name"]).stem for i in range(5)]
    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == (64, 64) and first.dtype == np.uint8 and 1 <= first.min() and first.max() <= 7

    # TTA: the prediction of a mirrored image is exactly the mirror of the image's prediction
    from task_semantic import tta_scores

    task = get_task("semantic")
    image = np.asarray(Image.open(data.validation[0]["image"].filename).convert("RGB"))[:, :60]  # not square
    scores = tta_scores(model, processor, [image], [0.75, 1.0, 1.5], task)[0]
    mirrored = tta_scores(model, processor, [np.ascontiguousarray(image[:, ::-1])], [0.75, 1.0, 1.5], task)[0]
    assert scores.shape == (7, 64, 60)
    torch.testing.assert_close(mirrored.flip(-1), scores, rtol=0, atol=0)
    assert not torch.equal(scores, scores.flip(-1))  # the image itself is not symmetric
    tta = _evaluate("semantic", tmp_path / "model", data_dir, tmp_path / "tta", "--tta", "--tta_scales", "0.75", "1")
    assert 0 <= tta["mean_iou"] <= 100 and len(list((tmp_path / "tta" / "predictions" / "semantic_val").iterdir())) == 5


def test_video_results_json(tmp_path):
    config = SyntheticVideoConfig(num_train=2, num_val=2, height=48, width=64, min_frames=3, max_frames=4,
                                  min_things=1, max_things=2, seed=1)
    data_dir = generate_synthetic_youtube_vis(tmp_path / "ytvis", config)
    training_metrics, _, data, _, _ = _saved_model("video", data_dir, tmp_path / "model", "--min_size_train", "48",
                                                   "--num_queries", "4")
    report = _evaluate("video", tmp_path / "model", data_dir, tmp_path / "eval", "--top_k", "10")
    assert report["video_ap"] == pytest.approx(training_metrics["video_ap"], abs=1e-12)
    assert report["num_videos"] == 2 and "videos_per_second" in report
    results = json.loads((tmp_path / "eval" / "predictions" / "results.json").read_text())
    lengths = {int(data.validation[i]["video_id"]): int(data.validation[i]["length"]) for i in range(2)}
    assert len(results) == 2 * 10 and {r["video_id"] for r in results} == set(lengths)
    for entry in results:
        assert len(entry["segmentations"]) == lengths[entry["video_id"]] and 1 <= entry["category_id"] <= 4
        assert entry["segmentations"][0]["size"] == [48, 64] and isinstance(entry["segmentations"][0]["counts"], str)


def test_bad_inputs_fail_clearly(synthetic_dir, panoptic_model, tmp_path, monkeypatch):
    model_dir, _ = panoptic_model
    with pytest.raises(SystemExit, match="error: The model predicts 7 labels but .* has 4 categories"):
        _evaluate("instance", model_dir, synthetic_dir, tmp_path)
    with pytest.raises(SystemExit, match="error: No categories.json in"):
        _evaluate("semantic", model_dir, synthetic_dir / "missing", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="error: --model_name_or_path someone/model: no such folder"):
        _evaluate("panoptic", "someone/model", synthetic_dir, tmp_path)
