"""The semantic task: ADE20K-style data, semantic inference (optionally with multi-scale + flip test-time
augmentation) to label PNGs, mean IoU.

Result files (``evaluate.py`` / ``predict.py``): ``output_dir/predictions/semantic_<split>/<name>.png``, one
single-channel PNG per image holding the dataset's category ids (label ``k`` -> category ``k + 1``, ADE20K's
convention; 8-bit up to 255 categories, 16-bit above).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from task_common import ImageTask, LabelSet, Prediction, atomic_write_png, read_categories_file

from hf_maskformer_series.data.hub_layouts import hub_categories
from hf_maskformer_series.data.semantic import load_semantic_segmentation, read_label_map
from hf_maskformer_series.metrics.mean_iou.miou_core import MeanIoUAccumulator

IGNORE = 255
DEFAULT_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # the original's ADE20K ms+flip: 512 x these


class MeanIoUMetric:
    """Mean IoU, mean accuracy and overall accuracy (in %); ground-truth 0 (and values above K) are ignored."""

    def __init__(self, labels: LabelSet):
        self.num_labels = len(labels.categories)
        self.accumulator = MeanIoUAccumulator(self.num_labels, ignore_index=IGNORE)

    def add(self, row: dict, prediction: Prediction) -> None:
        reference = read_label_map(row["annotation"]).astype(np.int64)
        reference = np.where((reference == 0) | (reference > self.num_labels), IGNORE, reference - 1)
        self.accumulator.update(prediction.segment_map.astype(np.int64) - 1, reference)

    def compute(self) -> dict:
        report = self.accumulator.compute()
        return {"mean_iou": 100 * report["mean_iou"], "mean_accuracy": 100 * report["mean_accuracy"],
                "overall_accuracy": 100 * report["overall_accuracy"]}


def semantic_scores(model, processor, images: list[np.ndarray], task: ImageTask, **processor_kwargs
                    ) -> list[torch.Tensor]:
    """Per image the ``[K, height, width]`` class scores at the image's own size."""
    inputs = task.preprocess(processor, images, None, **processor_kwargs)
    outputs = task.forward(model, {"model_inputs": inputs})
    results = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[image.shape[:2] for image in images], return_segmentation_scores=True)
    return [result["segmentation_scores"] for result in results]


def tta_scores(model, processor, images: list[np.ndarray], scales, task: ImageTask) -> list[torch.Tensor]:
    """Multi-scale + flip test-time augmentation (the original's ``SemanticSegmentorWithTTA``): the mean of the
    class scores at each scale of the processor's size, of the image and of its mirror (flipped back).

    Each (image, mirrored image) pair is summed before the scales are, so the result of a mirrored image is
    exactly the mirror of the result of the image.
    """
    size = processor.size
    shortest, longest = size["shortest_edge"], size.get("longest_edge")
    totals = None
    for scale in scales:
        kwargs = {"size": {"shortest_edge": max(1, round(shortest * scale)),
                           **({"longest_edge": max(1, round(longest * scale))} if longest else {})}}
        plain = semantic_scores(model, processor, images, task, **kwargs)
        mirrored = semantic_scores(model, processor, [np.ascontiguousarray(i[:, ::-1]) for i in images], task,
                                   **kwargs)
        pairs = [a + b.flip(-1) for a, b in zip(plain, mirrored)]
        totals = pairs if totals is None else [t + p for t, p in zip(totals, pairs)]
    return [total / (2 * len(scales)) for total in totals]


class SemanticTask(ImageTask):
    name = "semantic"
    metric_key = "mean_iou"
    metric_description = "mean IoU, in %"
    hub_columns = ("image", "annotation")

    def add_inference_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tta", action="store_true",
                            help="Multi-scale + flip test-time augmentation (the zoo's 'ms+flip' figures).")
        parser.add_argument("--tta_scales", type=float, nargs="+", default=list(DEFAULT_TTA_SCALES),
                            help="Scales of the processor's size used by --tta.")

    def read_categories(self, data_dir, args, dataset=None) -> LabelSet:
        if args.categories_file:
            categories = read_categories_file(args.categories_file)
        elif data_dir is not None and (Path(data_dir) / "categories.json").is_file():
            categories = read_categories_file(str(Path(data_dir) / "categories.json"))
        elif dataset is not None and (declared := hub_categories(dataset, "semantic")) is not None:
            categories = declared
        else:
            raise ValueError(f"No categories.json{f' in {data_dir}' if data_dir else ''}: give --categories_file "
                             "([{id, name}] for label values 1..K).")
        labels = LabelSet.from_categories([{**c, "isthing": 0} for c in categories],
                                          str(data_dir or args.categories_file or "dataset"))
        if [int(c["id"]) for c in labels.categories] != list(range(1, len(labels.categories) + 1)):
            raise ValueError(f"Semantic categories must have ids 1..K (label value k = category k, 0 = void); got "
                             f"{[c['id'] for c in labels.categories]}.")
        return labels

    def default_data_dir(self, args, accelerator) -> Path:
        return super().default_data_dir(args, accelerator) / "ade20k"  # the synthetic dataset's ADE20K export

    def load_split(self, data_dir, split, labels, max_samples):
        return load_semantic_segmentation(data_dir, split, num_labels=len(labels.categories), max_samples=max_samples)

    def segments_of(self, row, labels, size):
        num_labels = len(labels.categories)
        segment_map = read_label_map(row["annotation"], num_labels=num_labels)
        segment_map = np.where(segment_map > num_labels, 0, segment_map)  # ignore value (e.g. 255) -> void
        return segment_map, {int(v): int(v) - 1 for v in np.unique(segment_map) if v != 0}

    def preprocess(self, processor, inputs, args, **processor_kwargs):
        if args is not None and args.tta:
            return {}  # test-time augmentation runs the processor at each scale itself
        encoded = processor(images=inputs, return_tensors="pt", **processor_kwargs)
        return {"pixel_values": encoded["pixel_values"], "pixel_mask": encoded["pixel_mask"]}

    def infer(self, model, processor, batch, args, labels) -> list[Prediction]:
        images = batch["inputs"]
        if args.tta:
            maps = [scores.argmax(0) for scores in tta_scores(model, processor, images, args.tta_scales, self)]
        else:
            outputs = self.forward(model, batch)
            maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[i.shape[:2] for i in images])
        dtype = np.uint8 if len(labels.categories) < 256 else np.uint16
        return [Prediction(self.example_key(row), None, (segmentation.cpu().numpy() + 1).astype(dtype))
                for row, segmentation in zip(batch["rows"], maps)]

    def prediction_segments(self, prediction, labels):
        segment_map = prediction.segment_map.astype(np.int64)  # category k = label k - 1 (0 would be void)
        return segment_map, {k + 1: k for k in range(len(labels.categories))}

    def prediction_paths(self, folder: Path, split: str, key: str) -> list[Path]:
        return [folder / f"semantic_{split}" / f"{key}.png"]

    def write_prediction(self, prediction, folder, split) -> None:
        atomic_write_png(self.prediction_paths(folder, split, prediction.key)[0], prediction.segment_map)

    def read_prediction(self, folder, split, key) -> Prediction:
        return Prediction(key, None, np.asarray(Image.open(self.prediction_paths(folder, split, key)[0])))

    def write_results_file(self, predictions, rows, folder, split, labels) -> None:
        return None  # the PNGs are the results

    def new_metric(self, labels, args) -> MeanIoUMetric:
        return MeanIoUMetric(labels)


TASK = SemanticTask()
