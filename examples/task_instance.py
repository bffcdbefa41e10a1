"""The instance task: COCO instance data, instance inference to a COCO results file, COCO mask AP.

Result file (``evaluate.py`` / ``predict.py``): ``output_dir/predictions/instances_<split>_results.json``, the COCO
results list (``image_id`` = the dataset's, ``category_id`` = the dataset's, ``segmentation`` = compressed RLE,
``score``) that pycocotools' ``COCO.loadRes`` / ``COCOeval`` read. The metric uses the dataset's ``area`` of each
ground-truth object (COCO's polygon areas decide small / medium / large).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from task_common import ImageTask, LabelSet, Prediction, atomic_write_json, read_categories_file

from hf_maskformer_series.data.coco_instance import (
    _find as find_coco_instance_paths,
)
from hf_maskformer_series.data.coco_instance import (
    decode_instance_masks,
    instances_to_segment_map,
    load_coco_instances,
)
from hf_maskformer_series.data.coco_panoptic import read_json
from hf_maskformer_series.data.hub_layouts import hub_categories
from hf_maskformer_series.metrics.mask_ap.mask_ap_core import compute_mask_ap

MASK_AP_NAMES = {"map": "AP", "map_50": "AP50", "map_75": "AP75", "map_small": "APs", "map_medium": "APm",
                 "map_large": "APl"}


def _objects(row: dict) -> list[dict]:
    objects = row["objects"]
    return json.loads(objects) if isinstance(objects, str) else objects


class MaskAPMetric:
    """COCO mask AP (AP, AP50, AP75, APs, APm, APl, in %; pycocotools' ``COCOeval``) with the dataset's areas."""

    def __init__(self, labels: LabelSet):
        self.labels = labels
        self.predictions, self.references, self.sizes = [], [], []

    def add(self, row: dict, prediction: Prediction) -> None:
        references = []
        for obj in _objects(row):
            segmentation = obj["segmentation"]
            area = float(obj.get("area") or 0)
            references.append({
                "segmentation": json.loads(segmentation) if isinstance(segmentation, str) else segmentation,
                "category_id": int(obj["category_id"]), "iscrowd": int(obj.get("iscrowd", 0)),
                "area": area if area > 0 else None,  # no area in the annotation: the mask's
            })
        self.references.append(references)
        self.predictions.append(prediction.record)
        self.sizes.append((int(row["height"]), int(row["width"])))

    def compute(self) -> dict:
        report = compute_mask_ap(self.predictions, self.references,
                                 categories=[int(c["id"]) for c in self.labels.categories], image_sizes=self.sizes)
        return {key: 100 * max(float(report[name]), 0.0) for key, name in MASK_AP_NAMES.items()}


class InstanceTask(ImageTask):
    name = "instance"
    metric_key = "map"
    metric_description = "COCO mask AP (equal to pycocotools), in %"
    hub_columns = ("image", "objects")

    def add_inference_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--instance_threshold", type=float, default=0.0,
                            help="Minimum score of a returned instance (COCO evaluation: 0, keep all top-k).")
        parser.add_argument("--top_k", type=int, default=None,
                            help="Instances per image (default: the number of queries, the original's 100).")

    def read_categories(self, data_dir, args, dataset=None) -> LabelSet:
        if args.categories_file:
            categories = read_categories_file(args.categories_file)
        elif data_dir is not None:
            categories = read_json(find_coco_instance_paths(Path(data_dir), args.train_split)[0])["categories"]
        elif dataset is not None and (declared := hub_categories(dataset, "instance")) is not None:
            categories = declared
        else:
            raise ValueError("A Hub instance dataset declares no categories: give --categories_file (a COCO 'categories' list).")
        return LabelSet.from_categories([{**c, "isthing": 1} for c in categories],
                                        str(data_dir or args.categories_file))

    def load_split(self, data_dir, split, labels, max_samples):
        return load_coco_instances(data_dir, split, max_samples=max_samples)

    def segments_of(self, row, labels, size):
        masks, category_ids = decode_instance_masks(_objects(row), size[0], size[1],
                                                    category_id_map=labels.category_to_label)
        return instances_to_segment_map(masks, category_ids)

    def example_key(self, row: dict) -> str:
        return str(row["image_id"]) if row.get("image_id") is not None else super().example_key(row)

    def infer(self, model, processor, batch, args, labels) -> list[Prediction]:
        outputs = self.forward(model, batch)
        results = processor.post_process_instance_segmentation(
            outputs, threshold=args.instance_threshold, top_k=args.top_k,
            target_sizes=[image.shape[:2] for image in batch["inputs"]], return_coco_annotation=True,
        )
        predictions = []
        for row, result in zip(batch["rows"], results):
            key = self.example_key(row)
            image_id = int(row["image_id"]) if row.get("image_id") is not None else key
            detections = []
            for rle, segment in zip(result["segmentation"], result["segments_info"]):
                counts = rle["counts"]
                detections.append({
                    "image_id": image_id, "category_id": labels.label_to_category[int(segment["label_id"])],
                    "segmentation": {"size": [int(s) for s in rle["size"]],
                                     "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts},
                    "score": float(segment["score"]),
                })
            predictions.append(Prediction(key, detections))
        return predictions

    def prediction_segments(self, prediction, labels, min_score: float = 0.5):
        """The detections with ``score >= min_score`` painted largest first (small objects stay visible)."""
        detections = [d for d in prediction.record if d["score"] >= min_score]
        if not prediction.record:
            return None, {}
        height, width = prediction.record[0]["segmentation"]["size"]
        masks = [mask_utils.decode({"size": d["segmentation"]["size"],
                                    "counts": d["segmentation"]["counts"].encode("ascii")}).astype(bool)
                 for d in detections]
        segment_map = np.zeros((height, width), dtype=np.int64)
        for number in sorted(range(len(masks)), key=lambda k: -int(masks[k].sum())):
            segment_map[masks[number]] = number + 1
        return segment_map, {k + 1: labels.category_to_label[d["category_id"]] for k, d in enumerate(detections)}

    def write_results_file(self, predictions, rows, folder, split, labels) -> Path:
        path = folder / f"instances_{split}_results.json"
        atomic_write_json(path, [detection for prediction in predictions for detection in prediction.record])
        return path

    def new_metric(self, labels, args) -> MaskAPMetric:
        return MaskAPMetric(labels)


TASK = InstanceTask()
