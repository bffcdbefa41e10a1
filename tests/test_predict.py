"""Tests of examples/predict.py: images (folder, glob, list file) and videos (frame folders) to the result files of
evaluate.py without ground truth, overlays, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# appended, not prepended: examples/evaluate.py must not shadow the `evaluate` library for other tests
sys.path.append(str(REPO / "examples"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import predict as predict_script  # noqa: E402
import segmentation_training as st  # noqa: E402
from task_common import CATEGORIES_FILE, LabelSet, get_task  # noqa: E402

from hf_maskformer_series.data.masks import rgb_to_id  # noqa: E402


def _saved_model(task_name: str, folder: Path, categories: list[dict], *extra: str) -> Path:
    size = ["--crop_size", "64"] if task_name != "video" else []
    args = st.parse_args(task_name, ["--num_queries", "6", *size, *extra])
    torch.manual_seed(0)
    model, processor = get_task(task_name).build_model_and_processor(args, LabelSet.from_categories(categories, "t"))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index, size in enumerate([(64, 64), (48, 80), (72, 56)]):  # mixed sizes: padded per batch
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"photo_{index}.jpg")
    return folder


def test_panoptic_prediction_files_overlays_and_resume(images, tmp_path):
    categories = [{"id": 11, "name": "thing", "isthing": 1}, {"id": 20, "name": "stuff", "isthing": 0}]
    model = _saved_model("panoptic", tmp_path / "model", categories)
    (model / CATEGORIES_FILE).write_text(json.dumps(categories))  # as the training examples save it
    arguments = ["--model_name_or_path", str(model), "--task", "panoptic", "--inputs", str(images / "*.jpg"),
                 "--output_dir", str(tmp_path / "out"), "--per_device_eval_batch_size", "2",
                 "--dataloader_num_workers", "0", "--panoptic_threshold", "0.0", "--overlays"]
    summary = predict_script.main(arguments)
    assert summary["num_images"] == 3 and summary["num_computed"] == 3
    content = json.loads((tmp_path / "out" / "predictions" / "panoptic_predict.json").read_text())
    assert [a["file_name"] for a in content["annotations"]] == [f"photo_{i}.png" for i in range(3)]
    assert [c["id"] for c in content["categories"]] == [11, 20]
    for annotation, size in zip(content["annotations"], [(64, 64), (48, 80), (72, 56)]):
        png = np.asarray(Image.open(tmp_path / "out" / "predictions" / "panoptic_predict" / annotation["file_name"]))
        ids = rgb_to_id(png)
        assert ids.shape == size
        assert sorted(s["id"] for s in annotation["segments_info"]) == sorted(set(np.unique(ids).tolist()) - {0})
        assert {s["category_id"] for s in annotation["segments_info"]} <= {11, 20}
    overlay = Image.open(tmp_path / "out" / "overlays" / "photo_1.png")
    assert overlay.size == (2 * 80 + 4, 48)
    # a second run with the same arguments finds everything written and computes nothing
    assert predict_script.main(arguments)["num_computed"] == 0


def test_semantic_from_a_list_file_and_instance_results(images, tmp_path):
    categories = [{"id": k, "name": f"c{k}"} for k in (1, 2, 3)]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(images / f"photo_{i}.jpg") for i in (2, 0)) + "\n")
    model = _saved_model("semantic", tmp_path / "semantic", categories)
    predict_script.main(["--model_name_or_path", str(model), "--task", "semantic", "--inputs", str(listing),
                         "--output_dir", str(tmp_path / "sem"), "--dataloader_num_workers", "0"])
    pngs = sorted((tmp_path / "sem" / "predictions" / "semantic_predict").iterdir())
    assert [p.name for p in pngs] == ["photo_0.png", "photo_2.png"]
    assert np.asarray(Image.open(pngs[1])).shape == (72, 56) and np.asarray(Image.open(pngs[1])).min() >= 1

    model = _saved_model("instance", tmp_path / "instance", [{**c, "isthing": 1} for c in categories])
    predict_script.main(["--model_name_or_path", str(model), "--task", "instance", "--inputs", str(images),
                         "--output_dir", str(tmp_path / "ins"), "--dataloader_num_workers", "0", "--top_k", "5",
                         "--overlays"])
    results = json.loads((tmp_path / "ins" / "predictions" / "instances_predict_results.json").read_text())
    assert len(results) == 3 * 5 and {r["image_id"] for r in results} == {"photo_0", "photo_1", "photo_2"}
    assert all(r["segmentation"]["size"] in ([64, 64], [48, 80], [72, 56]) for r in results)
    # labels = the model's label ids (no categories.json, no --categories_file)
    assert {r["category_id"] for r in results} <= {0, 1, 2}


def test_video_frame_folders(tmp_path):
    rng = np.random.default_rng(1)
    for name, length in (("clip_a", 3), ("clip_b", 2)):
        (tmp_path / "videos" / name).mkdir(parents=True)
        for frame in range(length):
            Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
                tmp_path / "videos" / name / f"{frame:05d}.jpg")
    categories = [{"id": k, "name": f"c{k}", "isthing": 1} for k in (1, 2)]
    model = _saved_model("video", tmp_path / "model", categories, "--min_size_train", "40")
    predict_script.main(["--model_name_or_path", str(model), "--task", "video", "--inputs", str(tmp_path / "videos"),
                         "--output_dir", str(tmp_path / "out"), "--dataloader_num_workers", "0", "--top_k", "3"])
    results = json.loads((tmp_path / "out" / "predictions" / "results.json").read_text())
    videos = json.loads((tmp_path / "out" / "predictions" / "videos.json").read_text())
    assert videos == [{"id": 1, "name": "clip_a", "length": 3}, {"id": 2, "name": "clip_b", "length": 2}]
    assert [r["video_id"] for r in results] == [1, 1, 1, 2, 2, 2]
    assert [len(r["segmentations"]) for r in results] == [3, 3, 3, 2, 2, 2]
    assert results[0]["segmentations"][0]["size"] == [40, 56]


def test_missing_inputs_fail_clearly(tmp_path):
    model = _saved_model("semantic", tmp_path / "model", [{"id": 1, "name": "a"}])
    with pytest.raises(SystemExit, match=r"error: --inputs .*nothing\*\.jpg: the pattern matches no file"):
        predict_script.main(["--model_name_or_path", str(model), "--task", "semantic", "--inputs",
                             str(tmp_path / "nothing*.jpg")])
