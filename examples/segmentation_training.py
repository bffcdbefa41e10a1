"""Shared training code of the Accelerate examples (``train_panoptic.py``, ``train_instance.py``,
``train_semantic.py``, ``train_video.py``): argument parsing, model building, data pipeline, augmentation, optimizer
and schedule, training loop, evaluation, atomic checkpoints, ``save_pretrained``, model card, push to the Hub,
overlay PNG.

Each script calls ``main(task)``; tests call ``train(parse_args(task, argv))`` directly. ``train`` takes the
task-specific pieces (options, data, model, training dataset, collate, evaluation) from the task's ``TaskSpec``;
those left ``None`` are this module's image implementation. The video task (``video_training.py``) supplies all
of them and registers itself in ``TASKS`` on import.

Data flow. Every task reduces an annotation to one *segment map* (``[height, width]`` int64 segment ids, 0 = void)
plus ``{segment id: label id}`` (label ids are contiguous ``0 .. num_labels - 1``):

- panoptic: the COCO panoptic PNG and its ``segments_info`` (crowd segments become void);
- instance: the COCO instance masks, flattened (smaller objects on top), background = void;
- semantic: the ADE20K-style label map itself (value ``k >= 1`` is category ``k``, 0 = void).

Augmentation (random resize + crop, or large-scale jitter, plus horizontal flip) acts on the image and the segment
map together; then each segment becomes one binary mask target. The random numbers of the augmentation are drawn
from ``(seed, epoch, image index)`` alone, and the image order of an epoch from ``(seed, epoch)``, so a resumed or
a multi-process run sees exactly the data of an uninterrupted single-process run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

try:
    import hf_maskformer_series  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

from hf_maskformer_series.configuration_mask2former import SeriesMask2FormerConfig
from hf_maskformer_series.data.coco_instance import (
    decode_instance_masks,
    instances_to_segment_map,
    load_coco_instances,
)
from hf_maskformer_series.data.coco_panoptic import load_coco_panoptic, panoptic_to_segment_map, read_json
from hf_maskformer_series.data.hub import hub_is_reachable, load_hub_dataset
from hf_maskformer_series.data.masks import rgb_to_id
from hf_maskformer_series.data.semantic import load_semantic_segmentation, read_label_map
from hf_maskformer_series.data.synthetic import SyntheticPanopticConfig, generate_synthetic_panoptic
from hf_maskformer_series.image_processing import SeriesMask2FormerImageProcessor, encode_segmentation_targets
from hf_maskformer_series.metrics.mean_iou.miou_core import MeanIoUAccumulator
from hf_maskformer_series.metrics.panoptic_quality.pq_core import PanopticQualityAccumulator
from hf_maskformer_series.modeling_mask2former import SeriesMask2FormerForUniversalSegmentation
from hf_maskformer_series.presets import PRESET_NAMES, preset_config_kwargs

logger = logging.getLogger("hf_maskformer_series.training")

DEFAULT_SYNTHETIC_DIR = Path("data") / "synthetic_panoptic"
CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE_FILE = "training_state.json"
LOG_FILE = "trainer_log.jsonl"
OVERLAY_FILE = "val_predictions.png"


# ================================================================================================================
# Tasks and arguments
# ================================================================================================================


@dataclass(frozen=True)
class TaskSpec:
    """What differs between the scripts: the data reader, the model, the metric and their options.

    The task-specific pieces default (``None``) to this module's image implementation; the video task
    (``video_training.py``) supplies its own and registers itself in ``TASKS`` with ``register_task``.
    """

    name: str  # "panoptic" | "instance" | "semantic" | "video"
    metric_key: str  # the headline metric in the eval results
    metric_description: str
    default_output_dir: str
    # (parser, {"data" | "model" | "recipe" | "run": argument group}) -> None: the task's own options (default:
    # the image augmentation options); ``set_option`` changes the defaults of shared ones
    add_arguments: Callable[[argparse.ArgumentParser, dict], None] | None = None
    # (parser, args) -> None: fill derived defaults, ``parser.error`` on bad values
    check_arguments: Callable[[argparse.ArgumentParser, argparse.Namespace], None] | None = None
    load_data: Callable[[argparse.Namespace, Accelerator], DataBundle] | None = None  # (args, accelerator)
    build_model_and_processor: Callable[..., tuple] | None = None  # (args, labels) -> (model, processor)
    # (data bundle, args, processor) -> dataset indexed by (epoch, index) (see EpochSampler)
    training_dataset: Callable[..., torch.utils.data.Dataset] | None = None
    collate: Callable[[list[dict]], dict] | None = None
    # (model, processor, rows, task, labels, args, num_overlays) -> (metrics, overlays)
    evaluate: Callable[..., tuple[dict, list[dict]]] | None = None
    write_overlay: Callable[[list[dict], LabelSet, Path], Path | None] | None = None
    describe_augmentation: Callable[[argparse.Namespace], str] | None = None  # for the model card
    # model card
    example_unit: str = "images"  # what a dataset row / batch element is
    card_title: str | None = None  # default: "Mask2Former for <task> segmentation"
    card_tags: tuple[str, ...] | None = None  # default: image-segmentation, <task>-segmentation, mask2former
    pipeline_tag: str | None = "image-segmentation"
    processor_auto_class: str = "AutoImageProcessor"


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add (or replace) a task of ``parse_args`` / ``train`` / ``main``."""
    TASKS[spec.name] = spec
    return spec


for _spec in (
    TaskSpec("panoptic", "pq", "panoptic quality (PQ, SQ, RQ; all / things / stuff), in %", "outputs/train_panoptic"),
    TaskSpec("instance", "map", "COCO mask AP (pycocotools), in %", "outputs/train_instance"),
    TaskSpec("semantic", "mean_iou", "mean IoU, in %", "outputs/train_semantic"),
):
    register_task(_spec)


def build_parser(task: str) -> argparse.ArgumentParser:
    """The command line of ``train_<task>.py``; every option has a default, so no argument is needed."""
    spec = TASKS[task]
    parser = argparse.ArgumentParser(
        description=f"Train Mask2Former for {task} segmentation with Accelerate (metric: {spec.metric_description}). "
        "Without arguments: generate the synthetic dataset, train the tiny preset on CPU, evaluate, save.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", default=None,
                      help="Local dataset folder: COCO panoptic (panoptic), COCO instances (instance) or ADE20K-style "
                      f"(semantic). Default: the synthetic dataset, generated into {DEFAULT_SYNTHETIC_DIR} if absent.")
    data.add_argument("--dataset_name", default=None,
                      help="A Hub dataset (datasets.load_dataset) with the columns of the local reader; needs network "
                      "or the local cache (HF_HUB_OFFLINE=1).")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--categories_file", default=None,
                      help="JSON with a COCO 'categories' list (or the list itself); needed for Hub panoptic/instance "
                      "datasets, optional for semantic ones ([{id, name}] for label values 1..K).")
    data.add_argument("--train_split", default="train")
    data.add_argument("--validation_split", default="val")
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--max_eval_samples", type=int, default=None)
    data.add_argument("--synthetic_num_train", type=int, default=SyntheticPanopticConfig.num_train,
                      help="Size of the generated train split (only when the synthetic data is used).")
    data.add_argument("--synthetic_num_val", type=int, default=SyntheticPanopticConfig.num_val)

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", default=None,
                       help="A save_pretrained folder (ours, a transformers Mask2Former, or a converted original "
                       "checkpoint) or a Hub id; heads that do not fit the label set are re-initialised.")
    model.add_argument("--preset", default="tiny", choices=PRESET_NAMES,
                       help="Model preset used when --model_name_or_path is not given.")
    model.add_argument("--num_queries", type=int, default=None, help="Override the preset's number of queries.")
    model.add_argument("--train_num_points", type=int, default=None, help="Override the preset's loss points.")

    recipe = parser.add_argument_group("recipe (the paper's, with the tiny model's deviations as defaults)")
    recipe.add_argument("--max_train_steps", type=int, default=600,
                        help="Optimizer steps (600 x 8 images: ~19 epochs of the synthetic train split).")
    recipe.add_argument("--per_device_train_batch_size", type=int, default=8)
    recipe.add_argument("--per_device_eval_batch_size", type=int, default=8)
    recipe.add_argument("--gradient_accumulation_steps", type=int, default=1)
    recipe.add_argument("--learning_rate", type=float, default=4e-4,
                        help="AdamW learning rate (paper: 1e-4; the tiny model trained from scratch learns faster "
                        "with 4e-4).")
    recipe.add_argument("--weight_decay", type=float, default=0.05)
    recipe.add_argument("--backbone_lr_multiplier", type=float, default=0.1,
                        help="Backbone learning rate = learning_rate x this (paper: 0.1).")
    recipe.add_argument("--adam_beta1", type=float, default=0.9)
    recipe.add_argument("--adam_beta2", type=float, default=0.999)
    recipe.add_argument("--adam_epsilon", type=float, default=1e-8)
    recipe.add_argument("--warmup_steps", type=int, default=50, help="Linear warm-up steps before the poly decay.")
    recipe.add_argument("--poly_power", type=float, default=0.9)
    recipe.add_argument("--max_grad_norm", type=float, default=0.01,
                        help="Gradient clipping on the full-model norm (the original's CLIP_TYPE full_model, 0.01); "
                        "0 disables.")
    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default=spec.default_output_dir)
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--cpu", action="store_true", help="Train on CPU even when a GPU is available.")
    run.add_argument("--no_find_unused_parameters", action="store_true",
                     help="DDP: do not search for parameters without gradient (faster when every parameter is used).")
    run.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"],
                     help="Default: the accelerate config's.")
    run.add_argument("--eval_steps", type=int, default=0, help="Evaluate every N steps (and always at the end).")
    run.add_argument("--checkpointing_steps", type=int, default=200,
                     help="Write a checkpoint (accelerator.save_state, atomically) every N steps; 0 disables.")
    run.add_argument("--checkpoints_total_limit", type=int, default=2, help="Keep the newest N checkpoints.")
    run.add_argument("--resume_from_checkpoint", default=None,
                     help="A checkpoint folder, or 'latest' for the newest complete one in output_dir.")
    run.add_argument("--logging_steps", type=int, default=10, help="Write the loss log every N steps.")
    run.add_argument("--dataloader_num_workers", type=int, default=0)
    run.add_argument("--num_overlay_images", type=int, default=4, help="Val images drawn in the overlay PNG.")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None, help="Default: the output folder's name.")
    run.add_argument("--hub_token", default=None)
    run.add_argument("--hub_private_repo", action="store_true")
    groups = {"data": data, "model": model, "recipe": recipe, "run": run}
    (spec.add_arguments or add_image_arguments)(parser, groups)
    parser.set_defaults(task=task)
    return parser


def set_option(parser: argparse.ArgumentParser, dest: str, **changes: Any) -> None:
    """Change the ``default`` / ``help`` / ... of an existing option (for a task's own defaults)."""
    for action in parser._actions:
        if action.dest == dest:
            for key, value in changes.items():
                setattr(action, key, value)
            return
    raise KeyError(f"No option --{dest}.")


def parse_args(task: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line of ``train_<task>.py`` (``argv=None`` reads ``sys.argv``)."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    parser = build_parser(task)
    args = parser.parse_args(argv)
    if args.data_dir is not None and args.dataset_name is not None:
        parser.error("Give --data_dir or --dataset_name, not both.")
    (TASKS[task].check_arguments or check_image_arguments)(parser, args)
    for name in ("max_train_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1.")
    return args


def add_image_arguments(parser: argparse.ArgumentParser, groups: dict[str, Any]) -> None:
    """The image tasks' own options: augmentation, evaluation size, panoptic threshold."""
    recipe, run = groups["recipe"], groups["run"]
    recipe.add_argument("--augmentation", default="resize_crop", choices=["resize_crop", "lsj", "none"],
                        help="resize_crop: shortest edge to crop_size x U(min_scale, max_scale), random crop; lsj: "
                        "longest edge to crop_size x U(min_scale, max_scale), crop/pad to crop_size (paper: 0.1-2.0).")
    recipe.add_argument("--crop_size", type=int, default=128, help="Training crop (square, pixels).")
    recipe.add_argument("--min_scale", type=float, default=None, help="Default: 0.8 (resize_crop), 0.1 (lsj).")
    recipe.add_argument("--max_scale", type=float, default=None, help="Default: 1.25 (resize_crop), 2.0 (lsj).")
    recipe.add_argument("--no_flip", action="store_true", help="Disable random horizontal flips.")
    recipe.add_argument("--eval_size", type=int, default=None,
                        help="Shortest edge of the evaluation resize (default: crop_size, or the checkpoint "
                        "processor's size with --model_name_or_path); the longest edge is capped at "
                        "eval_size x 1333 / 800.")
    run.add_argument("--panoptic_threshold", type=float, default=0.8,
                     help="Class-probability threshold of panoptic inference (the original's 0.8).")


def check_image_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Scale-range defaults of the augmentation mode, and checks of the image options."""
    defaults = {"resize_crop": (0.8, 1.25), "lsj": (0.1, 2.0), "none": (1.0, 1.0)}[args.augmentation]
    args.min_scale = defaults[0] if args.min_scale is None else args.min_scale
    args.max_scale = defaults[1] if args.max_scale is None else args.max_scale
    if not 0 < args.min_scale <= args.max_scale:
        parser.error(f"Need 0 < min_scale <= max_scale; got {args.min_scale}, {args.max_scale}.")
    if args.crop_size < 1:
        parser.error("--crop_size must be >= 1.")


# ================================================================================================================
# Labels and data
# ================================================================================================================


@dataclass
class LabelSet:
    """Dataset categories and the contiguous label ids of the model (label ``i`` = ``categories[i]``)."""

    categories: list[dict]  # {id, name, isthing, color?}, sorted by id

    @property
    def category_to_label(self) -> dict[int, int]:
        return {int(c["id"]): i for i, c in enumerate(self.categories)}

    @property
    def label_to_category(self) -> dict[int, int]:
        return {i: int(c["id"]) for i, c in enumerate(self.categories)}

    @property
    def id2label(self) -> dict[int, str]:
        return {i: str(c.get("name", c["id"])) for i, c in enumerate(self.categories)}

    @property
    def stuff_label_ids(self) -> list[int]:
        return [i for i, c in enumerate(self.categories) if not c.get("isthing", 1)]

    def color(self, label: int) -> np.ndarray:
        category = self.categories[label]
        if category.get("color"):
            return np.asarray(category["color"], dtype=np.float64)
        return np.asarray(_palette_color(label), dtype=np.float64)

    @classmethod
    def from_categories(cls, categories: list[dict], source: str) -> LabelSet:
        if not categories:
            raise ValueError(f"{source}: no categories.")
        seen = set()
        for category in categories:
            if "id" not in category:
                raise ValueError(f"{source}: a category has no 'id': {category}.")
            if int(category["id"]) in seen:
                raise ValueError(f"{source}: category id {category['id']} appears twice.")
            seen.add(int(category["id"]))
        return cls(sorted((dict(c) for c in categories), key=lambda c: int(c["id"])))


def _palette_color(index: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(index + 12345)
    return tuple(int(v) for v in rng.integers(40, 256, 3))


@dataclass
class DataBundle:
    train: Any  # datasets.Dataset
    validation: Any
    labels: LabelSet
    description: str  # for the model card
    source: dict = field(default_factory=dict)


def _read_categories_file(path: str) -> list[dict]:
    content = read_json(path)
    categories = content.get("categories") if isinstance(content, dict) else content
    if not isinstance(categories, list):
        raise ValueError(f"{path}: expected a list of categories or a JSON object with 'categories'.")
    return categories


def _ensure_synthetic(args: argparse.Namespace, accelerator: Accelerator) -> Path:
    config = SyntheticPanopticConfig(num_train=args.synthetic_num_train, num_val=args.synthetic_num_val)
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (DEFAULT_SYNTHETIC_DIR / "generator.json").exists():
            logger.info("Generating the synthetic dataset into %s", DEFAULT_SYNTHETIC_DIR)
        try:
            return generate_synthetic_panoptic(DEFAULT_SYNTHETIC_DIR, config)
        except FileExistsError as error:
            raise FileExistsError(
                f"{error} (it holds a synthetic dataset with other settings: delete it, or pass --data_dir)."
            ) from error


def _require_columns(dataset, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"Dataset {name}: missing column(s) {missing}; it has {dataset.column_names}. The columns "
                         "must be those of the local reader (see the examples' README).")


def load_data(args: argparse.Namespace, accelerator: Accelerator) -> DataBundle:
    """The train and validation splits of ``args.task`` and the label set (see the module docstring)."""
    task = args.task
    if len(list(filter(None, [args.data_dir, args.dataset_name]))) == 0:
        root = _ensure_synthetic(args, accelerator)
        data_dir = str(root / "ade20k") if task == "semantic" else str(root)
        description = f"synthetic shapes dataset (hf_maskformer_series.data.synthetic, generated into {root})"
    else:
        data_dir = args.data_dir
        description = f"local folder {args.data_dir}" if args.data_dir else f"Hub dataset {args.dataset_name}"

    if args.dataset_name is not None:
        kwargs = {"config_name": args.dataset_config_name}
        train = load_hub_dataset(args.dataset_name, args.train_split, **kwargs)
        validation = load_hub_dataset(args.dataset_name, args.validation_split, **kwargs)
        if args.max_train_samples is not None:
            train = train.select(range(min(args.max_train_samples, len(train))))
        if args.max_eval_samples is not None:
            validation = validation.select(range(min(args.max_eval_samples, len(validation))))
        for split, dataset in ((args.train_split, train), (args.validation_split, validation)):
            if len(dataset) == 0:
                raise ValueError(f"Split '{split}' of {args.dataset_name} is empty.")
        columns = {"panoptic": ["image", "panoptic_image", "segments_info"], "instance": ["image", "objects"],
                   "semantic": ["image", "annotation"]}[task]
        _require_columns(train, columns, args.dataset_name)
        _require_columns(validation, columns, args.dataset_name)
        if args.categories_file:
            categories = _read_categories_file(args.categories_file)
        elif task == "semantic":
            feature = train.features.get("annotation")
            num = getattr(feature, "num_classes", None)
            if num is None:
                raise ValueError("Give --categories_file for a Hub semantic dataset ([{id, name}] for values 1..K).")
            categories = [{"id": k, "name": str(k)} for k in range(1, num + 1)]
        else:
            raise ValueError(f"A Hub {task} dataset needs --categories_file (a COCO 'categories' list).")
        for category in categories:
            category.setdefault("isthing", 1 if task == "instance" else 0)
        return DataBundle(train, validation, LabelSet.from_categories(categories, args.categories_file or "dataset"),
                          description, {"dataset_name": args.dataset_name})

    if task == "panoptic":
        train = load_coco_panoptic(data_dir, args.train_split, max_samples=args.max_train_samples)
        validation = load_coco_panoptic(data_dir, args.validation_split, max_samples=args.max_eval_samples)
        from hf_maskformer_series.data.coco_panoptic import read_panoptic_categories

        categories = args.categories_file and _read_categories_file(args.categories_file)
        categories = categories or read_panoptic_categories(data_dir, args.train_split)
    elif task == "instance":
        train = load_coco_instances(data_dir, args.train_split, max_samples=args.max_train_samples)
        validation = load_coco_instances(data_dir, args.validation_split, max_samples=args.max_eval_samples)
        if args.categories_file:
            categories = _read_categories_file(args.categories_file)
        else:
            from hf_maskformer_series.data.coco_instance import _find

            categories = read_json(_find(Path(data_dir), args.train_split)[0])["categories"]
        categories = [{**c, "isthing": 1} for c in categories]
    else:
        categories_path = Path(data_dir) / "categories.json"
        if args.categories_file:
            categories = _read_categories_file(args.categories_file)
        elif categories_path.is_file():
            categories = _read_categories_file(str(categories_path))
        else:
            raise ValueError(f"No {categories_path}: give --categories_file ([{{id, name}}] for label values 1..K).")
        num_labels = max(int(c["id"]) for c in categories)
        train = load_semantic_segmentation(data_dir, args.train_split, num_labels=num_labels,
                                           max_samples=args.max_train_samples)
        validation = load_semantic_segmentation(data_dir, args.validation_split, num_labels=num_labels,
                                                max_samples=args.max_eval_samples)
        categories = [{**c, "isthing": 0} for c in categories]
    labels = LabelSet.from_categories(categories, str(data_dir))
    if task == "semantic" and [int(c["id"]) for c in labels.categories] != list(range(1, len(labels.categories) + 1)):
        raise ValueError(f"Semantic categories must have ids 1..K (label value k = category k, 0 = void); got "
                         f"{[c['id'] for c in labels.categories]}.")
    return DataBundle(train, validation, labels, description, {"data_dir": str(data_dir)})


def row_to_segments(task: str, row: dict, labels: LabelSet) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """One dataset row -> ``(image [H, W, 3] uint8, segment_map [H, W] int64 (0 = void), {segment id: label id})``."""
    image = row["image"]
    name = getattr(image, "filename", None) or row.get("file_name") or "image"
    image = np.asarray(image.convert("RGB"))
    height, width = image.shape[:2]
    if task == "panoptic":
        png = row["panoptic_image"]
        source = getattr(png, "filename", None) or row.get("panoptic_file_name")
        segment_map, segment_to_label = panoptic_to_segment_map(
            png, row["segments_info"], category_id_map=labels.category_to_label, source=source
        )
    elif task == "instance":
        masks, category_ids = decode_instance_masks(row["objects"], height, width,
                                                    category_id_map=labels.category_to_label)
        segment_map, segment_to_label = instances_to_segment_map(masks, category_ids)
    else:
        annotation = row["annotation"]
        segment_map = read_label_map(annotation, num_labels=len(labels.categories))
        segment_map = np.where(segment_map > len(labels.categories), 0, segment_map)  # ignore value (e.g. 255) -> void
        segment_to_label = {int(v): int(v) - 1 for v in np.unique(segment_map) if v != 0}
    if segment_map.shape != (height, width):
        raise ValueError(f"{name}: the annotation has size {segment_map.shape} but the image has {(height, width)}.")
    return image, segment_map, segment_to_label


# ================================================================================================================
# Augmentation and batching
# ================================================================================================================


def augment(image: np.ndarray, segment_map: np.ndarray, rng: np.random.Generator, mode: str, crop_size: int,
            min_scale: float, max_scale: float, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random resize + crop (or LSJ) and flip of an image and its segment map, to a ``crop_size`` square.

    Returns ``image [3, crop, crop]`` float 0-255, ``segment_map [crop, crop]`` int64 (0 in the padding) and
    ``pixel_mask [crop, crop]`` int64 (1 on real pixels).
    """
    height, width = segment_map.shape
    image_t = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
    map_t = torch.from_numpy(segment_map)
    if mode == "none":
        scale = crop_size / min(height, width)
    else:
        base = crop_size / (min(height, width) if mode == "resize_crop" else max(height, width))
        scale = base * float(rng.uniform(min_scale, max_scale))
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_height, new_width) != (height, width):
        image_t = F.interpolate(image_t[None], size=(new_height, new_width), mode="bilinear", align_corners=False,
                                antialias=scale < 1)[0]
        map_t = F.interpolate(map_t[None, None].double(), size=(new_height, new_width), mode="nearest-exact")[0, 0]
        map_t = map_t.long()
    top = int(rng.integers(0, new_height - crop_size + 1)) if new_height > crop_size else 0
    left = int(rng.integers(0, new_width - crop_size + 1)) if new_width > crop_size else 0
    image_t = image_t[:, top : top + crop_size, left : left + crop_size]
    map_t = map_t[top : top + crop_size, left : left + crop_size]
    if flip and rng.random() < 0.5:
        image_t, map_t = image_t.flip(-1), map_t.flip(-1)
    h, w = map_t.shape
    pad = (0, crop_size - w, 0, crop_size - h)
    pixel_mask = F.pad(torch.ones(h, w, dtype=torch.int64), pad)
    return F.pad(image_t, pad), F.pad(map_t, pad), pixel_mask


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)``: a permutation of the dataset drawn from ``(seed, epoch)`` (``shuffle=False``: in
    order). The epoch travels with the index so the augmentation can be seeded by ``(seed, epoch, index)``."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples, self.seed, self.shuffle, self.epoch = num_samples, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        return iter([(self.epoch, int(i)) for i in order])


def image_training_dataset(data: DataBundle, args: argparse.Namespace, processor) -> TrainingDataset:
    """The image tasks' training dataset (``TaskSpec.training_dataset``)."""
    return TrainingDataset(data.train, args.task, data.labels, args, processor.image_mean, processor.image_std)


class TrainingDataset(torch.utils.data.Dataset):
    """Augmented training examples: ``dataset[(epoch, index)]`` -> dict of tensors (see ``augment``)."""

    def __init__(self, rows, task: str, labels: LabelSet, args: argparse.Namespace, image_mean, image_std):
        self.rows, self.task, self.labels, self.args = rows, task, labels, args
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        args = self.args
        image, segment_map, segment_to_label = row_to_segments(self.task, self.rows[index], self.labels)
        rng = np.random.default_rng([args.seed, epoch, index])
        image_t, map_t, pixel_mask = augment(image, segment_map, rng, args.augmentation, args.crop_size,
                                             args.min_scale, args.max_scale, not args.no_flip)
        masks, classes = encode_segmentation_targets(map_t, instance_id_to_semantic_id=segment_to_label or {0: 0},
                                                     ignore_index=0)
        pixel_values = (image_t - self.mean) / self.std * pixel_mask
        return {"pixel_values": pixel_values, "pixel_mask": pixel_mask, "mask_labels": masks, "class_labels": classes}


def collate_training_batch(examples: list[dict]) -> dict[str, Any]:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "pixel_mask": torch.stack([e["pixel_mask"] for e in examples]),
        "mask_labels": [e["mask_labels"] for e in examples],
        "class_labels": [e["class_labels"] for e in examples],
    }


# ================================================================================================================
# Model, processor, optimizer, schedule
# ================================================================================================================


def build_model_and_processor(args: argparse.Namespace, labels: LabelSet):
    """The model (preset, or ``--model_name_or_path`` with heads re-sized to the label set) and its processor."""
    id2label = labels.id2label
    label_kwargs = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()}, num_labels=len(id2label))
    overrides = {k: getattr(args, k) for k in ("num_queries", "train_num_points") if getattr(args, k) is not None}
    def eval_size_kwargs(size: int) -> dict:
        return dict(size={"shortest_edge": size, "longest_edge": int(round(size * 1333 / 800))})

    processor_kwargs = eval_size_kwargs(args.eval_size) if args.eval_size else {}
    if args.model_name_or_path:
        config = SeriesMask2FormerConfig.from_pretrained(args.model_name_or_path, **overrides)
        config.id2label, config.label2id = label_kwargs["id2label"], label_kwargs["label2id"]  # sets num_labels
        model = SeriesMask2FormerForUniversalSegmentation.from_pretrained(
            args.model_name_or_path, config=config, ignore_mismatched_sizes=True
        )
        try:
            processor = SeriesMask2FormerImageProcessor.from_pretrained(args.model_name_or_path, **processor_kwargs)
        except OSError:
            processor = SeriesMask2FormerImageProcessor(**(processor_kwargs or eval_size_kwargs(args.crop_size)))
    else:
        config = SeriesMask2FormerConfig(**preset_config_kwargs(args.preset, id2label, **overrides))
        model = SeriesMask2FormerForUniversalSegmentation(config)
        processor = SeriesMask2FormerImageProcessor(**(processor_kwargs or eval_size_kwargs(args.crop_size)))
    return model, processor


_NO_DECAY_NAMES = ("queries_embedder", "queries_features", "level_embed", "relative_position_bias_table",
                   "position_embeddings")


def parameter_groups(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                     backbone_lr_multiplier: float) -> list[dict]:
    """AdamW groups of the paper: backbone at ``lr x backbone_lr_multiplier``; no weight decay on normalisation
    layers and embeddings (the original's WEIGHT_DECAY_NORM = WEIGHT_DECAY_EMBED = 0)."""
    no_decay = set()
    for module_name, module in model.named_modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm,
                               torch.nn.Embedding)):
            no_decay.update(f"{module_name}.{name}" if module_name else name
                            for name, _ in module.named_parameters(recurse=False))
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_backbone = ".pixel_level_module.encoder." in f".{name}"
        decays = name not in no_decay and not any(key in name for key in _NO_DECAY_NAMES)
        groups.setdefault((is_backbone, decays), []).append(parameter)
    return [
        {"params": params, "lr": learning_rate * (backbone_lr_multiplier if is_backbone else 1.0),
         "weight_decay": weight_decay if decays else 0.0, "name": f"{'backbone' if is_backbone else 'head'}"
         f"{'' if decays else '_no_decay'}"}
        for (is_backbone, decays), params in sorted(groups.items())
    ]


def poly_schedule_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                              power: float = 0.9) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then ``(1 - step / total_steps) ** power`` (the paper's poly)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, 1.0 - step / max(1, total_steps)) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ================================================================================================================
# Checkpoints
# ================================================================================================================


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (those holding ``training_state.json``) in ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and (path / TRAINING_STATE_FILE).is_file():
            suffix = path.name[len(CHECKPOINT_PREFIX):]
            if suffix.isdigit():
                found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def save_checkpoint_atomically(accelerator: Accelerator, output_dir: str | os.PathLike, step: int,
                               training_state: dict, total_limit: int | None = None) -> Path:
    """``accelerator.save_state`` into a temporary folder, then rename it to ``output_dir/checkpoint-<step>``.

    A save that fails or is killed midway leaves only the temporary folder (removed on the next save), so every
    ``checkpoint-*`` folder is complete and an existing checkpoint is never lost. Older checkpoints beyond
    ``total_limit`` are deleted only after the new one is in place. Call it on every process.
    """
    root = Path(output_dir)
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    staging = root / f".{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f".{CHECKPOINT_PREFIX}*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(staging / TRAINING_STATE_FILE, "w") as f:
                json.dump(training_state, f, indent=1)
            if final.exists():  # the same step saved again (e.g. after a resume): swap, then drop the old copy
                retired = root / f".{CHECKPOINT_PREFIX}{step}.old.tmp"
                os.replace(final, retired)
                os.replace(staging, final)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, final)
            if total_limit:
                for old in checkpoint_dirs(root)[:-total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(resume_from_checkpoint: str, output_dir: str) -> Path:
    if resume_from_checkpoint == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise FileNotFoundError(f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir}.")
        return found[-1]
    path = Path(resume_from_checkpoint)
    if not (path / TRAINING_STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {TRAINING_STATE_FILE}).")
    return path


# ================================================================================================================
# Evaluation
# ================================================================================================================


@torch.no_grad()
def evaluate(model, processor, rows, task: str, labels: LabelSet, args: argparse.Namespace,
             num_overlays: int = 0) -> tuple[dict, list[dict]]:
    """Metrics of ``model`` on ``rows`` (percentages) and up to ``num_overlays`` predictions for the overlay PNG."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pq = PanopticQualityAccumulator(labels.categories) if task == "panoptic" else None
    miou = MeanIoUAccumulator(len(labels.categories), ignore_index=255) if task == "semantic" else None
    coco_gt_images, coco_gt_annotations, coco_detections = [], [], []
    overlays = []
    batch_size = args.per_device_eval_batch_size
    for start in range(0, len(rows), batch_size):
        batch_rows = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        images = [np.array(row["image"].convert("RGB")) for row in batch_rows]
        inputs = processor(images=images, return_tensors="pt").to(device)
        outputs = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        sizes = [image.shape[:2] for image in images]
        if task == "panoptic":
            results = processor.post_process_panoptic_segmentation(
                outputs, threshold=args.panoptic_threshold, label_ids_to_fuse=labels.stuff_label_ids,
                target_sizes=sizes,
            )
        elif task == "instance":
            results = processor.post_process_instance_segmentation(
                outputs, threshold=0.0, target_sizes=sizes, return_coco_annotation=True
            )
        else:
            results = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
        for offset, (row, image, result) in enumerate(zip(batch_rows, images, results)):
            index = start + offset
            if task == "panoptic":
                prediction = result["segmentation"].cpu().numpy().astype(np.int64)
                predicted_segments = [{"id": s["id"], "category_id": labels.label_to_category[s["label_id"]]}
                                      for s in result["segments_info"]]
                reference = rgb_to_id(np.asarray(row["panoptic_image"].convert("RGB")))
                pq.update(prediction, predicted_segments, reference, row["segments_info"],
                          image_name=row.get("file_name"))
                segment_to_label = {s["id"]: s["label_id"] for s in result["segments_info"]}
            elif task == "instance":
                height, width = image.shape[:2]
                image_id = index + 1
                coco_gt_images.append({"id": image_id, "height": height, "width": width})
                masks, _ = decode_instance_masks(row["objects"], height, width, keep_crowd=True)
                for obj, mask in zip(row["objects"], masks):
                    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                    coco_gt_annotations.append({
                        "id": len(coco_gt_annotations) + 1, "image_id": image_id,
                        "category_id": int(obj["category_id"]), "segmentation": rle,
                        "area": float(mask.sum()), "bbox": list(mask_utils.toBbox(rle)),
                        "iscrowd": int(obj.get("iscrowd", 0)),
                    })
                for rle, segment in zip(result["segmentation"], result["segments_info"]):
                    counts = rle["counts"]
                    coco_detections.append({
                        "image_id": image_id, "category_id": labels.label_to_category[segment["label_id"]],
                        "segmentation": {"size": rle["size"],
                                         "counts": counts.encode("ascii") if isinstance(counts, str) else counts},
                        "score": float(segment["score"]),
                    })
                prediction, segment_to_label = None, None
            else:
                prediction = result.cpu().numpy().astype(np.int64)
                reference = read_label_map(row["annotation"]).astype(np.int64)
                reference = np.where((reference == 0) | (reference > len(labels.categories)), 255, reference - 1)
                miou.update(prediction, reference)
                segment_to_label = {k: k for k in range(len(labels.categories))}
                prediction = prediction + 1  # segment ids 1..K (0 would be void)
                segment_to_label = {k + 1: k for k in range(len(labels.categories))}
            if len(overlays) < num_overlays and prediction is not None:
                _, truth, truth_labels = row_to_segments(task, row, labels)
                overlays.append({"image": image, "truth": truth, "truth_labels": truth_labels,
                                 "prediction": prediction, "prediction_labels": segment_to_label})
    if was_training:
        model.train()
    if task == "panoptic":
        report = pq.compute()
        metrics = {f"{k}": 100 * report[k] for k in ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things",
                                                      "pq_stuff", "sq_stuff", "rq_stuff")}
        metrics["per_class_pq"] = {labels.categories[labels.category_to_label[c]].get("name", str(c)):
                                   100 * v["pq"] for c, v in report["per_class"].items()}
    elif task == "semantic":
        report = miou.compute()
        metrics = {"mean_iou": 100 * report["mean_iou"], "mean_accuracy": 100 * report["mean_accuracy"],
                   "overall_accuracy": 100 * report["overall_accuracy"]}
    else:
        metrics = coco_mask_ap(coco_gt_images, coco_gt_annotations, coco_detections, labels)
    return metrics, overlays


def coco_mask_ap(images: list[dict], annotations: list[dict], detections: list[dict], labels: LabelSet) -> dict:
    """COCO mask AP (AP, AP50, AP75, APs, APm, APl, in %) with the package's metric (pycocotools' ``COCOeval``)."""
    from hf_maskformer_series.metrics.mask_ap.mask_ap_core import compute_mask_ap

    position = {image["id"]: index for index, image in enumerate(images)}
    references: list[list[dict]] = [[] for _ in images]
    predictions: list[list[dict]] = [[] for _ in images]
    for annotation in annotations:
        references[position[annotation["image_id"]]].append(annotation)
    for detection in detections:
        predictions[position[detection["image_id"]]].append(detection)
    report = compute_mask_ap(
        predictions, references, categories=[int(c["id"]) for c in labels.categories],
        image_sizes=[(image["height"], image["width"]) for image in images],
    )
    names = {"map": "AP", "map_50": "AP50", "map_75": "AP75", "map_small": "APs", "map_medium": "APm",
             "map_large": "APl"}
    return {key: 100 * max(float(report[name]), 0.0) for key, name in names.items()}


def _segment_colors(segment_map: np.ndarray, segment_to_label: dict[int, int], labels: LabelSet) -> np.ndarray:
    colors = np.zeros(segment_map.shape + (3,), dtype=np.float64)
    for segment_id in np.unique(segment_map):
        if segment_id <= 0 or int(segment_id) not in segment_to_label:
            continue
        label = segment_to_label[int(segment_id)]
        color = labels.color(label)
        if labels.categories[label].get("isthing", 1):  # instances of one class get nearby shades
            rng = np.random.default_rng(int(segment_id))
            color = np.clip(color + rng.integers(-60, 61, 3), 0, 255)
        colors[segment_map == segment_id] = color
    return colors


def _overlay(image: np.ndarray, segment_map: np.ndarray, segment_to_label: dict, labels: LabelSet) -> np.ndarray:
    colors = _segment_colors(segment_map, segment_to_label, labels)
    labeled = (segment_map > 0)[..., None]
    blended = np.where(labeled, 0.45 * image + 0.55 * colors, 0.5 * image)
    boundary = np.zeros(segment_map.shape, dtype=bool)
    boundary[:-1] |= segment_map[:-1] != segment_map[1:]
    boundary[:, :-1] |= segment_map[:, :-1] != segment_map[:, 1:]
    blended[boundary] = 255
    return np.clip(blended, 0, 255).astype(np.uint8)


def write_overlay_png(overlays: list[dict], labels: LabelSet, path: str | os.PathLike) -> Path | None:
    """A grid with one row per image: input | ground truth | prediction (segments coloured by class)."""
    if not overlays:
        return None
    height = max(o["image"].shape[0] for o in overlays)
    width = max(o["image"].shape[1] for o in overlays)
    gap, header = 4, 16
    canvas = Image.new("RGB", (3 * width + 4 * gap, len(overlays) * (height + gap) + gap + header), (30, 30, 30))
    draw = ImageDraw.Draw(canvas)
    for column, text in enumerate(("image", "ground truth", "prediction")):
        draw.text((gap + column * (width + gap), 2), text, fill=(255, 255, 255))
    for row, item in enumerate(overlays):
        panels = [item["image"], _overlay(item["image"], item["truth"], item["truth_labels"], labels),
                  _overlay(item["image"], item["prediction"], item["prediction_labels"], labels)]
        for column, panel in enumerate(panels):
            canvas.paste(Image.fromarray(panel), (gap + column * (width + gap), header + gap + row * (height + gap)))
    path = Path(path)
    canvas.save(path)
    return path


# ================================================================================================================
# Model card and Hub
# ================================================================================================================


def check_hub_access(args: argparse.Namespace) -> None:
    """Fail before training when ``--push_to_hub`` cannot work (offline mode or no network)."""
    if not args.push_to_hub:
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise ConnectionError("--push_to_hub needs the Hugging Face Hub, but HF_HUB_OFFLINE is set. Unset it or drop "
                              "--push_to_hub (the model is saved to --output_dir either way).")
    if not hub_is_reachable():
        raise ConnectionError("--push_to_hub: cannot reach the Hugging Face Hub (no network?). Drop --push_to_hub "
                              "(the model is saved to --output_dir either way) and upload the folder later with "
                              "`huggingface-cli upload`.")


def describe_image_augmentation(args: argparse.Namespace) -> str:
    return (f"{args.augmentation} (scale {args.min_scale}-{args.max_scale}, crop {args.crop_size}, "
            f"{'no flip' if args.no_flip else 'horizontal flip'})")


def model_card(args: argparse.Namespace, data: DataBundle, metrics: dict, num_parameters: int,
               wall_time: float, world_size: int) -> str:
    """The README.md of the output folder: data, recipe and metrics of the run."""
    spec = TASKS[args.task]
    unit = spec.example_unit
    headline = {k: round(v, 2) for k, v in metrics.items() if isinstance(v, (int, float))}
    describe_augmentation = spec.describe_augmentation or describe_image_augmentation
    tags = spec.card_tags or ("image-segmentation", f"{args.task}-segmentation", "mask2former")
    recipe = {
        "model": args.model_name_or_path or f"preset '{args.preset}' (random initialisation)",
        "optimizer": f"AdamW (lr {args.learning_rate}, betas ({args.adam_beta1}, {args.adam_beta2}), weight decay "
                     f"{args.weight_decay}, none on norms/embeddings), backbone lr x {args.backbone_lr_multiplier}",
        "schedule": f"linear warm-up {args.warmup_steps} steps, then poly (power {args.poly_power})",
        "steps": f"{args.max_train_steps} optimizer steps, {args.per_device_train_batch_size} {unit} per device x "
                 f"{world_size} processes x {args.gradient_accumulation_steps} accumulation steps",
        "gradient clipping": f"full-model norm {args.max_grad_norm}" if args.max_grad_norm else "none",
        "augmentation": describe_augmentation(args),
        "mixed precision": args.mixed_precision or "no",
        "seed": args.seed,
    }
    lines = [
        "---",
        "library_name: transformers",
        *([f"pipeline_tag: {spec.pipeline_tag}"] if spec.pipeline_tag else []),
        "tags:", *[f"- {tag}" for tag in tags], "- hf-maskformer-series",
        "---",
        "",
        f"# {spec.card_title or f'Mask2Former for {args.task} segmentation'}",
        "",
        f"Trained with `examples/train_{args.task}.py` of hf-maskformer-series "
        f"({num_parameters / 1e6:.2f} M parameters, {wall_time / 60:.1f} min of training and evaluation).",
        "",
        "## Data",
        "",
        f"- {data.description}",
        f"- train split `{args.train_split}`: {len(data.train)} {unit}; evaluation split "
        f"`{args.validation_split}`: {len(data.validation)} {unit}",
        f"- labels ({len(data.labels.categories)}): "
        + ", ".join(f"{i}: {c.get('name', c['id'])}{'' if c.get('isthing', 1) else ' (stuff)'}"
                    for i, c in enumerate(data.labels.categories)),
        "",
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in recipe.items()],
        "",
        "## Results",
        "",
        f"{spec.metric_description} on `{args.validation_split}`:",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {key} | {value:.2f} |" for key, value in headline.items()],
        "",
        "## Usage",
        "",
        "```python",
        "import hf_maskformer_series  # registers the model with the Auto classes",
        f"from transformers import {spec.processor_auto_class}, AutoModelForUniversalSegmentation",
        "",
        'model = AutoModelForUniversalSegmentation.from_pretrained("<this folder or repo>")',
        f'processor = {spec.processor_auto_class}.from_pretrained("<this folder or repo>")',
        "```",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(args: argparse.Namespace, output_dir: Path) -> str:
    from huggingface_hub import HfApi

    repo_id = args.hub_model_id or output_dir.name
    api = HfApi(token=args.hub_token)
    repo = api.create_repo(repo_id, private=args.hub_private_repo, exist_ok=True)
    api.upload_folder(repo_id=repo.repo_id, folder_path=str(output_dir), commit_message="Training run",
                      ignore_patterns=[f"{CHECKPOINT_PREFIX}*", f".{CHECKPOINT_PREFIX}*", "*.tmp"])
    return repo.repo_id


# ================================================================================================================
# Training
# ================================================================================================================


class StopTraining(Exception):
    """Raised by a ``step_callback`` to end a run early (tests use it to simulate a killed run)."""


def train(args: argparse.Namespace, step_callback: Callable[[int, dict], None] | None = None,
          model_hook: Callable[[torch.nn.Module], None] | None = None) -> dict:
    """Run the training described by ``args`` (from ``parse_args``).

    Args:
        step_callback: called on the main process after each optimizer step with ``(global_step, log record)``;
            it may raise ``StopTraining`` (or anything) to end the run.
        model_hook: called on the freshly built model before training (tests use it to make the loss
            deterministic).

    Returns:
        ``{"metrics": final eval metrics, "losses": [loss per step of this run], "output_dir": str,
        "global_step": int}``.
    """
    start_time = time.time()
    # Some backbones hold parameters their feature maps never use (e.g. the final LayerNorm of transformers' Swin
    # under SwinBackbone), which DDP rejects unless it looks for unused parameters.
    ddp_kwargs = DistributedDataParallelKwargs(find_unused_parameters=not args.no_find_unused_parameters)
    # Accelerate forms a gloo process group on CPU only when told to run on CPU: do so under torchrun on a machine
    # without GPUs (`torchrun --nproc_per_node 2 examples/train_panoptic.py`)
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ
    accelerator = Accelerator(cpu=args.cpu or (launched_distributed and not torch.cuda.is_available()),
                              mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation_steps,
                              kwargs_handlers=[ddp_kwargs])
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)
    check_hub_access(args)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    spec = TASKS[args.task]
    evaluate_task = spec.evaluate or evaluate
    data = (spec.load_data or load_data)(args, accelerator)
    model, processor = (spec.build_model_and_processor or build_model_and_processor)(args, data.labels)
    if model_hook is not None:
        model_hook(model)
    num_parameters = sum(p.numel() for p in model.parameters())
    unit = spec.example_unit
    logger.info("Task %s: %d train / %d val %s, %d labels, model %.2f M parameters", args.task, len(data.train),
                len(data.validation), unit, len(data.labels.categories), num_parameters / 1e6)

    train_dataset = (spec.training_dataset or image_training_dataset)(data, args, processor)
    sampler = EpochSampler(len(train_dataset), args.seed)
    world_batch = args.per_device_train_batch_size * accelerator.num_processes
    if len(train_dataset) < world_batch:
        raise ValueError(f"The train split has {len(train_dataset)} {unit}, fewer than one global batch "
                         f"({world_batch}); lower --per_device_train_batch_size.")
    dataloader = torch.utils.data.DataLoader(
        train_dataset, batch_size=args.per_device_train_batch_size, sampler=sampler, drop_last=True,
        collate_fn=spec.collate or collate_training_batch, num_workers=args.dataloader_num_workers,
        # its own generator: starting an epoch must not draw from the global RNG, or a resumed run (which starts
        # its first epoch after load_state) would sample other loss points than an uninterrupted one
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.learning_rate, args.weight_decay, args.backbone_lr_multiplier),
        lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
    )
    # The schedule is stepped once per optimizer step, by hand (accelerate's prepared scheduler would step once
    # per process), and registered so that save_state / load_state include it.
    scheduler = poly_schedule_with_warmup(optimizer, args.warmup_steps, args.max_train_steps, args.poly_power)
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    accelerator.register_for_checkpointing(scheduler)

    batches_per_epoch = len(dataloader)
    global_step, epoch, batches_to_skip = 0, 0, 0
    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / TRAINING_STATE_FILE).read_text())
        global_step, epoch = int(state["global_step"]), int(state["epoch"])
        batches_to_skip = int(state["batches_done_in_epoch"])
        logger.info("Resumed from %s at step %d (epoch %d, %d batches into it)", checkpoint, global_step, epoch,
                    batches_to_skip)

    log_path = output_dir / LOG_FILE
    progress = tqdm(total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process,
                    desc=f"train {args.task}", dynamic_ncols=True)
    losses: list[float] = []
    accumulated, micro_batches = 0.0, 0
    metrics: dict = {}
    model.train()
    while global_step < args.max_train_steps:
        # accelerate's loaders call set_epoch(<their own iteration count>) on the sampler when an epoch starts;
        # setting it here keeps the epoch right after a resume (and on the skip-ahead loader)
        epoch_loader = dataloader
        if batches_to_skip:
            epoch_loader = accelerator.skip_first_batches(dataloader, batches_to_skip)
        for loader in {id(dataloader): dataloader, id(epoch_loader): epoch_loader}.values():
            loader.set_epoch(epoch) if hasattr(loader, "set_epoch") else sampler.set_epoch(epoch)
        sampler.set_epoch(epoch)
        batches_done = batches_to_skip
        batches_to_skip = 0
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = outputs.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            batches_done += 1
            accumulated += accelerator.reduce(loss.detach().float(), reduction="mean").item()
            micro_batches += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            global_step += 1
            step_loss = accumulated / micro_batches
            accumulated, micro_batches = 0.0, 0
            losses.append(step_loss)
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"The loss became {step_loss} at step {global_step}; lower the learning "
                                         "rate or disable fp16.")
            lr = max(scheduler.get_last_lr())  # the head's (the backbone runs at lr x backbone_lr_multiplier)
            record = {"step": global_step, "epoch": epoch, "loss": step_loss, "lr": lr}
            progress.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}", refresh=False)
            progress.update(1)
            if accelerator.is_main_process and (global_step % args.logging_steps == 0 or global_step == 1):
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            epoch_done = batches_done >= batches_per_epoch
            if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
                state = {"global_step": global_step, "epoch": epoch + 1 if epoch_done else epoch,
                         "batches_done_in_epoch": 0 if epoch_done else batches_done, "seed": args.seed,
                         "task": args.task}
                save_checkpoint_atomically(accelerator, output_dir, global_step, state,
                                           args.checkpoints_total_limit)
            if args.eval_steps and global_step % args.eval_steps == 0 and global_step < args.max_train_steps:
                if accelerator.is_main_process:
                    metrics, _ = evaluate_task(accelerator.unwrap_model(model), processor, data.validation,
                                               args.task, data.labels, args)
                    progress.write(f"step {global_step}: " + _format_metrics(metrics))
                    with open(log_path, "a") as f:
                        f.write(json.dumps({"step": global_step, "eval": _scalar_metrics(metrics)}) + "\n")
                accelerator.wait_for_everyone()
            if step_callback is not None and accelerator.is_main_process:
                step_callback(global_step, record)
            if global_step >= args.max_train_steps:
                break
        else:
            epoch += 1
            continue
        if batches_done >= batches_per_epoch:
            epoch += 1
    progress.close()

    accelerator.wait_for_everyone()
    result = {"losses": losses, "output_dir": str(output_dir), "global_step": global_step}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        metrics, overlays = evaluate_task(unwrapped, processor, data.validation, args.task, data.labels, args,
                                          num_overlays=args.num_overlay_images)
        logger.info("Final evaluation: %s", _format_metrics(metrics))
        unwrapped.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        overlay_path = (spec.write_overlay or write_overlay_png)(overlays, data.labels, output_dir / OVERLAY_FILE)
        wall_time = time.time() - start_time
        with open(output_dir / "eval_results.json", "w") as f:
            json.dump({**metrics, "step": global_step, "wall_time_s": wall_time}, f, indent=1)
        with open(output_dir / "training_args.json", "w") as f:
            json.dump(vars(args), f, indent=1, default=str)
        (output_dir / "README.md").write_text(
            model_card(args, data, metrics, num_parameters, wall_time, accelerator.num_processes)
        )
        logger.info("Saved the model, processor, model card%s to %s (%.1f min)",
                    f" and {OVERLAY_FILE}" if overlay_path else "", output_dir, wall_time / 60)
        if args.push_to_hub:
            repo_id = push_to_hub(args, output_dir)
            logger.info("Pushed to https://huggingface.co/%s", repo_id)
        result["metrics"] = metrics
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _scalar_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.2f}" for k, v in _scalar_metrics(metrics).items())


def main(task: str, argv: Sequence[str] | None = None) -> None:
    """Entry point of ``train_<task>.py``: bad data, missing files and offline Hub access end with a clear message."""
    args = parse_args(task, argv)
    try:
        train(args)
    except (FileNotFoundError, FileExistsError, ValueError, ConnectionError) as error:
        logger.error("%s", error)
        raise SystemExit(f"error: {error}") from None
