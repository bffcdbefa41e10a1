"""Segment images or videos with a checkpoint and write the result files of ``evaluate.py`` (no ground truth, no
metrics), plus optional overlay PNGs; one process or many (Accelerate), resumable.

    python examples/predict.py --model_name_or_path outputs/train_panoptic --task panoptic \
        --inputs "photos/*.jpg" --output_dir outputs/predict --overlays
    torchrun --nproc_per_node 2 examples/predict.py ...          # or: accelerate launch [--multi_gpu] ...

``--inputs``: image files, folders (every image inside, sorted), glob patterns or ``.txt`` lists (one path per
line); for ``--task video``: frame folders (one video each), folders of frame folders, or video files (PyAV).
Results under ``output_dir/predictions/`` (``<split>`` = ``--split``, default ``predict``): panoptic
``panoptic_<split>.json`` + ``panoptic_<split>/<name>.png``; instance ``instances_<split>_results.json``; semantic
``semantic_<split>/<name>.png``; video ``results.json`` (+ ``videos.json``: id, name and length of each video).
Category ids: those of ``--categories_file`` (sorted by id = the model's labels), else of the
``categories.json`` a training example saved with the model, else the model's label ids.
"""

from __future__ import annotations

import argparse
import glob
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from inference import (
    add_common_arguments,
    check_label_sets,
    inference_summary,
    run_command,
    run_inference,
    start_inference,
)
from reporting import overlay_image
from task_common import CATEGORIES_FILE, LabelSet, atomic_write_json, atomic_write_png, get_task, read_categories_file

logger = logging.getLogger("hf_maskformer_series.predict")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def _expand(inputs: Sequence[str]) -> list[Path]:
    paths = []
    for item in inputs:
        if Path(item).suffix.lower() == ".txt" and Path(item).is_file():
            paths += [Path(line.strip()) for line in Path(item).read_text().splitlines() if line.strip()]
        elif any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"--inputs {item}: the pattern matches no file.")
            paths += [Path(m) for m in matches]
        else:
            paths.append(Path(item))
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"Input {path} does not exist.")
    return paths


def collect_image_rows(inputs: Sequence[str]) -> list[dict]:
    """One row (``image`` path, ``file_name``) per image of ``inputs``."""
    rows = []
    for path in _expand(inputs):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        rows += [{"image": str(f), "file_name": f.name} for f in files]
    if not rows:
        raise ValueError(f"No image in {list(inputs)}.")
    return rows


def collect_video_rows(inputs: Sequence[str]) -> list[dict]:
    """One row per video: a frame folder, each frame folder of a folder of them, or a video file."""
    videos = []
    for path in _expand(inputs):
        if path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise ValueError(f"{path}: not a video file ({', '.join(sorted(VIDEO_SUFFIXES))}) or frame folder.")
            videos.append((path.stem, {"video_file": str(path)}))
            continue
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if frames:
            videos.append((path.name, {"frame_paths": [str(f) for f in frames]}))
        else:
            for folder in sorted(p for p in path.iterdir() if p.is_dir()):
                frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if frames:
                    videos.append((folder.name, {"frame_paths": [str(f) for f in frames]}))
    if not videos:
        raise ValueError(f"No video or frame folder in {list(inputs)}.")
    return [{"video_id": index, "name": name, **source} for index, (name, source) in enumerate(videos, start=1)]


def model_labels(model, name_or_path: str, categories_file: str | None) -> LabelSet:
    """The label set of a model without a dataset (see the module docstring)."""
    saved = Path(name_or_path) / CATEGORIES_FILE
    if categories_file or saved.is_file():
        path = categories_file or str(saved)
        labels = LabelSet.from_categories(read_categories_file(path), path)
        check_label_sets(model, labels, path)
        return labels
    return LabelSet.from_model_config(model.config)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.set_defaults(output_dir="outputs/predict")
    parser.add_argument("--inputs", nargs="+", required=True, help="Images / videos (see above).")
    parser.add_argument("--split", default="predict", help="The name in the result file names.")
    parser.add_argument("--categories_file", default=None,
                        help="JSON with a COCO 'categories' list: the dataset ids of the model's labels.")
    parser.add_argument("--overlays", action="store_true",
                        help="Also write output_dir/overlays/<name>.png (image | prediction; image tasks).")
    argv_list = list(argv) if argv is not None else None
    known, _ = parser.parse_known_args(argv_list)
    get_task(known.task).add_inference_arguments(parser)
    args = parser.parse_args(argv_list)
    if args.per_device_eval_batch_size < 1:
        parser.error("--per_device_eval_batch_size must be >= 1.")
    return args


def write_overlays(task, rows, predictions, labels: LabelSet, folder: Path) -> int:
    """``folder/<key>.png``: the image and its prediction side by side; returns how many were written."""
    for row, prediction in zip(rows, predictions):
        image = task.load_inputs(row)
        segment_map, segment_to_label = task.prediction_segments(prediction, labels)
        if segment_map is None:  # nothing detected
            segment_map = np.zeros(image.shape[:2], dtype=np.int64)
        panel = np.concatenate([image, np.full((image.shape[0], 4, 3), 30, np.uint8),
                                overlay_image(image, segment_map, segment_to_label, labels)], axis=1)
        atomic_write_png(folder / f"{prediction.key}.png", panel)
    return len(rows)


def predict(args: argparse.Namespace) -> dict:
    """Run the prediction described by ``args``; returns the summary written to ``predict_results.json``."""
    accelerator, task, model, processor = start_inference(args, logger)
    labels = model_labels(model, args.model_name_or_path, args.categories_file)
    rows = collect_video_rows(args.inputs) if args.task == "video" else collect_image_rows(args.inputs)
    output_dir = Path(args.output_dir)
    predictions_dir = output_dir / "predictions"
    logger.info("Predicting %d %s with %s on %d process(es)", len(rows), task.example_unit, args.model_name_or_path,
                accelerator.num_processes)
    result = run_inference(task, model, processor, rows, labels, args, accelerator=accelerator,
                           predictions_dir=predictions_dir, split=args.split, num_workers=args.dataloader_num_workers)
    summary = inference_summary(result, accelerator, task.example_unit)
    if accelerator.is_main_process:
        task.write_results_file(result.predictions, rows, predictions_dir, args.split, labels)
        if args.task == "video":
            atomic_write_json(predictions_dir / "videos.json", [
                {"id": row["video_id"], "name": row["name"], "length": len(p.record[0]["segmentations"])
                 if p.record else None} for row, p in zip(rows, result.predictions)])
        if args.overlays and args.task != "video":
            write_overlays(task, rows, result.predictions, labels, output_dir / "overlays")
        summary = {"task": args.task, f"num_{task.example_unit}": len(rows), "model": str(args.model_name_or_path),
                   **summary}
        atomic_write_json(output_dir / "predict_results.json", summary)
        logger.info("Wrote the predictions of %d %s to %s", len(rows), task.example_unit, predictions_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    return run_command(predict, parse_args(argv), logger)


if __name__ == "__main__":
    main()

