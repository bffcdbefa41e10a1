"""The panoptic task: COCO panoptic data, panoptic inference to COCO panoptic result files, PQ.

Result files (``evaluate.py`` / ``predict.py``, under ``output_dir/predictions/``): ``panoptic_<split>/<name>.png``
(RGB-encoded segment ids, ``<name>`` = the ground truth's PNG name) and ``panoptic_<split>.json`` (``annotations``
with ``image_id``, ``file_name`` and ``segments_info`` holding the dataset's category ids, plus ``categories``), the
input of panopticapi's ``pq_compute``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from task_common import (
    ImageTask,
    LabelSet,
    Prediction,
    atomic_write_json,
    atomic_write_png,
    read_categories_file,
)

from hf_maskformer_series.data.coco_panoptic import (
    load_coco_panoptic,
    panoptic_to_segment_map,
    read_panoptic_categories,
)
from hf_maskformer_series.data.hub_layouts import hub_categories
from hf_maskformer_series.data.masks import id_to_rgb, rgb_to_id
from hf_maskformer_series.metrics.panoptic_quality.pq_core import PanopticQualityAccumulator

PQ_KEYS = ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff")


class PanopticMetric:
    """PQ / SQ / RQ (all, things, stuff; in %) and per-class PQ of panoptic predictions against COCO panoptic rows."""

    def __init__(self, labels: LabelSet):
        self.labels = labels
        self.accumulator = PanopticQualityAccumulator(labels.categories)

    def add(self, row: dict, prediction: Prediction) -> None:
        png = row["panoptic_image"]
        reference = rgb_to_id(np.asarray((png if isinstance(png, Image.Image) else Image.open(png)).convert("RGB")))
        self.accumulator.update(prediction.segment_map, prediction.record["segments_info"], reference,
                                row["segments_info"], image_name=row.get("file_name"))

    def compute(self) -> dict:
        report = self.accumulator.compute()
        metrics = {key: 100 * report[key] for key in PQ_KEYS}
        categories = self.labels.categories
        metrics["per_class_pq"] = {categories[self.labels.category_to_label[c]].get("name", str(c)): 100 * v["pq"]
                                   for c, v in report["per_class"].items()}
        return metrics


class PanopticTask(ImageTask):
    name = "panoptic"
    metric_key = "pq"
    metric_description = "panoptic quality (PQ, SQ, RQ; all / things / stuff), in %"
    hub_columns = ("image", "panoptic_image", "segments_info")

    def add_inference_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--panoptic_threshold", type=float, default=0.8,
                            help="Class-probability threshold of panoptic inference (the original's 0.8).")
        parser.add_argument("--mask_threshold", type=float, default=0.5, help="Mask-probability threshold.")
        parser.add_argument("--overlap_threshold", type=float, default=0.8,
                            help="Minimum visible fraction of a segment's mask (the original's 0.8).")

    # --- data -----------------------------------------------------------------------------------------------
    def read_categories(self, data_dir, args, dataset=None) -> LabelSet:
        if args.categories_file:
            categories = read_categories_file(args.categories_file)
        elif data_dir is not None:
            categories = read_panoptic_categories(data_dir, args.train_split)
        elif dataset is not None and (declared := hub_categories(dataset, "panoptic")) is not None:
            categories = declared
        else:
            raise ValueError("A Hub panoptic dataset declares no categories: give --categories_file (a COCO 'categories' list).")
        categories = [{**c, "isthing": c.get("isthing", 0)} for c in categories]
        return LabelSet.from_categories(categories, str(data_dir or args.categories_file))

    def load_split(self, data_dir, split, labels, max_samples):
        return load_coco_panoptic(data_dir, split, max_samples=max_samples)

    def segments_of(self, row, labels, size):
        png = row["panoptic_image"]
        source = getattr(png, "filename", None) or row.get("panoptic_file_name")
        return panoptic_to_segment_map(png, row["segments_info"], category_id_map=labels.category_to_label,
                                       source=source)

    # --- inference and files --------------------------------------------------------------------------------
    def example_key(self, row: dict) -> str:
        if row.get("panoptic_file_name"):
            return Path(row["panoptic_file_name"]).stem
        return super().example_key(row)

    def infer(self, model, processor, batch, args, labels) -> list[Prediction]:
        outputs = self.forward(model, batch)
        results = processor.post_process_panoptic_segmentation(
            outputs, threshold=args.panoptic_threshold, mask_threshold=args.mask_threshold,
            overlap_mask_area_threshold=args.overlap_threshold, label_ids_to_fuse=labels.stuff_label_ids,
            target_sizes=[image.shape[:2] for image in batch["inputs"]],
        )
        predictions = []
        for row, result in zip(batch["rows"], results):
            segment_map = result["segmentation"].cpu().numpy().astype(np.int64)
            ids, areas = np.unique(segment_map, return_counts=True)
            area = dict(zip(ids.tolist(), areas.tolist()))
            segments = [{"id": int(s["id"]), "category_id": labels.label_to_category[int(s["label_id"])],
                         "iscrowd": 0, "area": int(area.get(int(s["id"]), 0)), "score": float(s["score"])}
                        for s in result["segments_info"]]
            predictions.append(Prediction(self.example_key(row), {"segments_info": segments}, segment_map))
        return predictions

    def prediction_segments(self, prediction, labels):
        return prediction.segment_map, {s["id"]: labels.category_to_label[s["category_id"]]
                                        for s in prediction.record["segments_info"]}

    def prediction_paths(self, folder: Path, split: str, key: str) -> list[Path]:
        return [folder / f"panoptic_{split}" / f"{key}.png", folder / ".parts" / split / f"{key}.json"]

    def write_prediction(self, prediction, folder, split) -> None:
        png, record = self.prediction_paths(folder, split, prediction.key)
        atomic_write_png(png, id_to_rgb(prediction.segment_map))
        atomic_write_json(record, prediction.record)

    def read_prediction(self, folder, split, key) -> Prediction:
        png, record = self.prediction_paths(folder, split, key)
        segment_map = rgb_to_id(np.asarray(Image.open(png).convert("RGB")))
        return Prediction(key, json.loads(record.read_text()), segment_map)

    def write_results_file(self, predictions, rows, folder, split, labels) -> Path:
        annotations = []
        for index, prediction in enumerate(predictions):
            row = rows[index] if rows is not None else {}
            annotations.append({"image_id": row.get("image_id", prediction.key), "file_name": f"{prediction.key}.png",
                                "segments_info": prediction.record["segments_info"]})
        path = folder / f"panoptic_{split}.json"
        atomic_write_json(path, {"annotations": annotations, "categories": labels.categories})
        return path

    def new_metric(self, labels, args) -> PanopticMetric:
        return PanopticMetric(labels)


TASK = PanopticTask()
