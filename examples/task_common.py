"""The task layer of the examples: what training (``segmentation_training.py``), evaluation (``evaluate.py``) and
prediction (``predict.py``) need to know about a task, in one ``Task`` object per task.

A task (``task_panoptic.py``, ``task_instance.py``, ``task_semantic.py``, ``task_video.py``) owns

- its data: the local reader of a split (``load_split``), the label set (``read_categories``), the Hub columns;
- its training targets (``training_dataset``, ``collate``);
- its inference to result files: ``load_inputs`` (in the DataLoader workers), ``infer`` (a batch through the model
  and the processor's post-processing to ``Prediction`` objects), ``write_prediction`` / ``read_prediction`` (the
  per-example standard files) and ``write_results_file`` (the merged JSON of the split);
- its metric (``new_metric``: ``add(row, prediction)`` per example, ``compute()`` in %).

Everything else (the training loop, checkpoints, reports, the batched and sharded inference engine) is
task-agnostic and lives in its own module. ``get_task(name)`` imports the task's module on first use.

Data flow of the image tasks' training: every annotation becomes one *segment map* (``[height, width]`` int64
segment ids, 0 = void) plus ``{segment id: label id}`` (label ids contiguous ``0 .. num_labels - 1``), augmented
with its image, then encoded as one binary mask target per segment.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

try:
    import hf_maskformer_series  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_maskformer_series.configuration_mask2former import SeriesMask2FormerConfig
from hf_maskformer_series.data.coco_panoptic import read_json
from hf_maskformer_series.data.hub import hub_is_reachable, load_hub_dataset
from hf_maskformer_series.data.hub_layouts import prepare_hub_dataset
from hf_maskformer_series.data.synthetic import SyntheticPanopticConfig, generate_synthetic_panoptic
from hf_maskformer_series.image_processing import SeriesMask2FormerImageProcessor, encode_segmentation_targets
from hf_maskformer_series.modeling_mask2former import SeriesMask2FormerForUniversalSegmentation
from hf_maskformer_series.presets import preset_config_kwargs

DEFAULT_SYNTHETIC_DIR = Path("data") / "synthetic_panoptic"
CATEGORIES_FILE = "categories.json"  # the dataset categories of a trained model (label i = categories[i])
TASK_MODULES = {"panoptic": "task_panoptic", "instance": "task_instance", "semantic": "task_semantic",
                "video": "task_video"}
_TRUE = {"1", "true", "yes", "on"}


# ================================================================================================================
# Labels, data bundles, predictions
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
        rng = np.random.default_rng(label + 12345)
        return rng.integers(40, 256, 3).astype(np.float64)

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

    @classmethod
    def from_model_config(cls, config, stuff_label_ids: Sequence[int] = ()) -> LabelSet:
        """Labels of a model without a dataset: category id = label id, names from ``config.id2label``."""
        return cls([{"id": int(i), "name": str(name), "isthing": int(int(i) not in set(stuff_label_ids))}
                    for i, name in sorted(config.id2label.items(), key=lambda item: int(item[0]))])


@dataclass
class DataBundle:
    train: Any  # datasets.Dataset (None for evaluation / prediction)
    validation: Any
    labels: LabelSet
    description: str  # for the model card
    source: dict = field(default_factory=dict)


@dataclass
class Prediction:
    """The result of one example, as written to its standard files.

    ``key`` names the files (an image's file stem, a video's id); ``record`` is JSON (segments_info, COCO
    detections, YouTube-VIS entries); ``segment_map`` is the ``[H, W]`` map written as a PNG (panoptic segment ids,
    semantic category ids), or ``None``.
    """

    key: str
    record: Any
    segment_map: np.ndarray | None = None


def read_categories_file(path: str) -> list[dict]:
    content = read_json(path)
    categories = content.get("categories") if isinstance(content, dict) else content
    if not isinstance(categories, list):
        raise ValueError(f"{path}: expected a list of categories or a JSON object with 'categories'.")
    return categories


def require_columns(dataset, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"Dataset {name}: missing column(s) {missing}; it has {dataset.column_names}. The columns "
                         "must be those of the local reader (see the examples' README).")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: a killed writer leaves no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def atomic_write_json(path: Path, content: Any) -> None:
    atomic_write_bytes(path, json.dumps(content).encode())


def atomic_write_png(path: Path, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def check_model_source(name_or_path: str | None) -> None:
    """Fail at once, in one line, when ``--model_name_or_path`` is a Hub id and the Hub cannot be reached."""
    if not name_or_path or Path(name_or_path).exists():
        return
    if any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        from huggingface_hub import try_to_load_from_cache

        if try_to_load_from_cache(name_or_path, "config.json") is None:
            raise ConnectionError(f"--model_name_or_path {name_or_path}: no such folder, and HF_HUB_OFFLINE is set "
                                  "but the model is not in the local cache.")
        return
    if not hub_is_reachable():
        raise ConnectionError(f"--model_name_or_path {name_or_path}: no such folder, and the Hugging Face Hub cannot "
                              "be reached (no network?). Give a local folder, or set HF_HUB_OFFLINE=1 to use the "
                              "local cache.")


# ================================================================================================================
# The task interface
# ================================================================================================================


class Task:
    """One segmentation task for the training, evaluation and prediction examples (see the module docstring)."""

    name: str
    metric_key: str  # the headline metric
    metric_description: str
    example_unit = "images"
    card_title: str | None = None
    card_tags: tuple[str, ...] | None = None
    pipeline_tag: str | None = "image-segmentation"
    processor_auto_class = "AutoImageProcessor"
    hub_columns: tuple[str, ...] = ()

    @property
    def default_output_dir(self) -> str:
        return f"outputs/train_{self.name}"

    # --- options --------------------------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser, groups: dict[str, Any]) -> None:
        """The task's own training options (``groups``: the parser's argument groups by name)."""

    def add_inference_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The task's options of ``evaluate.py`` / ``predict.py`` (thresholds, top-k, ...)."""

    def check_arguments(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Fill derived defaults and ``parser.error`` on bad values (training)."""

    def describe_augmentation(self, args: argparse.Namespace) -> str:
        raise NotImplementedError

    # --- data -----------------------------------------------------------------------------------------------
    def default_data_dir(self, args: argparse.Namespace, accelerator) -> Path:
        """The synthetic dataset of the task, generated if absent."""
        raise NotImplementedError

    def load_split(self, data_dir: str | os.PathLike, split: str, labels: LabelSet, max_samples: int | None):
        """Rows of one split of a local folder."""
        raise NotImplementedError

    def read_categories(self, data_dir: str | os.PathLike | None, args: argparse.Namespace, dataset=None
                        ) -> LabelSet:
        """The label set: ``--categories_file``, else the folder's (or Hub dataset's) own categories."""
        raise NotImplementedError

    def load_data(self, args: argparse.Namespace, accelerator, splits: Sequence[str] | None = None) -> DataBundle:
        """The train and validation splits (``splits``: the names to read; ``None``: train and validation) and the
        label set, from ``--data_dir``, ``--dataset_name`` or the synthetic data."""
        split_names = list(splits) if splits is not None else [args.train_split, args.validation_split]
        limits = {args.train_split: getattr(args, "max_train_samples", None)}
        limits[args.validation_split] = args.max_eval_samples
        dataset_name = getattr(args, "dataset_name", None)
        if dataset_name is not None:
            if not self.hub_columns:
                raise ValueError(f"--dataset_name is not supported for the {self.name} task; give --data_dir.")
            loaded = []
            for split in split_names:
                dataset = load_hub_dataset(dataset_name, split, config_name=args.dataset_config_name)
                if limits.get(split) is not None:
                    dataset = dataset.select(range(min(limits[split], len(dataset))))
                if len(dataset) == 0:
                    raise ValueError(f"Split '{split}' of {dataset_name} is empty.")
                dataset = prepare_hub_dataset(dataset, self.name, dataset_name)  # any known Hub layout
                require_columns(dataset, self.hub_columns, dataset_name)
                loaded.append(dataset)
            labels = self.read_categories(None, args, dataset=loaded[0])
            description, source = f"Hub dataset {dataset_name}", {"dataset_name": dataset_name}
        else:
            if args.data_dir is None:
                data_dir = self.default_data_dir(args, accelerator)
                description = f"synthetic dataset (generated into {data_dir})"
            else:
                data_dir = Path(args.data_dir)
                description = f"local folder {data_dir}"
            labels = self.read_categories(data_dir, args)
            loaded = [self.load_split(data_dir, split, labels, limits.get(split)) for split in split_names]
            source = {"data_dir": str(data_dir)}
        train, validation = (loaded + [None])[:2] if splits is None else (None, loaded[0])
        return DataBundle(train, validation, labels, description, source)

    # --- model and training ---------------------------------------------------------------------------------
    def build_model_and_processor(self, args: argparse.Namespace, labels: LabelSet):
        raise NotImplementedError

    def training_dataset(self, data: DataBundle, args: argparse.Namespace, processor) -> torch.utils.data.Dataset:
        """Dataset indexed by ``(epoch, index)`` (see ``EpochSampler``) of augmented training examples."""
        raise NotImplementedError

    def collate(self, examples: list[dict]) -> dict[str, Any]:
        raise NotImplementedError

    # --- inference, result files, metric --------------------------------------------------------------------
    def inference_batch_size(self, args: argparse.Namespace) -> int:
        return args.per_device_eval_batch_size

    def example_key(self, row: dict) -> str:
        """The name of an example's result files."""
        raise NotImplementedError

    def load_inputs(self, row: dict) -> Any:
        """Decoded inputs of one example (runs in the DataLoader workers)."""
        raise NotImplementedError

    def preprocess(self, processor, inputs: list, args: argparse.Namespace) -> dict[str, torch.Tensor]:
        """Model inputs of a batch (padded to the batch's largest size)."""
        raise NotImplementedError

    def infer(self, model, processor, batch: dict, args: argparse.Namespace, labels: LabelSet) -> list[Prediction]:
        """``batch``: ``{"rows", "inputs", "model_inputs"}`` -> one ``Prediction`` per example."""
        raise NotImplementedError

    def prediction_paths(self, folder: Path, split: str, key: str) -> list[Path]:
        """The files ``write_prediction`` writes for ``key`` (the last one written last). Default: the record
        alone, as JSON in ``folder/.parts/<split>/`` (merged by ``write_results_file``)."""
        return [folder / ".parts" / split / f"{key}.json"]

    def write_prediction(self, prediction: Prediction, folder: Path, split: str) -> None:
        """Write one example's files atomically (the last of ``prediction_paths`` last: it marks completion)."""
        atomic_write_json(self.prediction_paths(folder, split, prediction.key)[-1], prediction.record)

    def read_prediction(self, folder: Path, split: str, key: str) -> Prediction:
        return Prediction(key, json.loads(self.prediction_paths(folder, split, key)[-1].read_text()))

    def write_results_file(self, predictions: list[Prediction], rows, folder: Path, split: str,
                           labels: LabelSet) -> Path | None:
        """The merged results JSON of the split (COCO panoptic / COCO results / YouTube-VIS), atomically."""
        raise NotImplementedError

    def new_metric(self, labels: LabelSet, args: argparse.Namespace):
        """An accumulator with ``add(row, prediction)`` and ``compute() -> {metric: value in %}``."""
        raise NotImplementedError

    def overlay(self, row: dict, inputs: Any, prediction: Prediction, labels: LabelSet) -> dict | None:
        """``{"image", "truth", "truth_labels", "prediction", "prediction_labels"}`` for the overlay PNG."""
        return None


def set_option(parser: argparse.ArgumentParser, dest: str, **changes: Any) -> None:
    """Change the ``default`` / ``help`` / ... of an existing option (for a task's own defaults)."""
    for action in parser._actions:
        if action.dest == dest:
            for key, value in changes.items():
                setattr(action, key, value)
            return
    raise KeyError(f"No option --{dest}.")


def get_task(name: str) -> Task:
    """The ``Task`` of ``name`` (its module is imported on first use)."""
    if name not in TASK_MODULES:
        raise ValueError(f"Unknown task {name!r}; choose one of {', '.join(TASK_MODULES)}.")
    return importlib.import_module(TASK_MODULES[name]).TASK


# ================================================================================================================
# The image tasks' shared pieces
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


class ImageTrainingDataset(torch.utils.data.Dataset):
    """Augmented training examples: ``dataset[(epoch, index)]`` -> dict of tensors (see ``augment``)."""

    def __init__(self, task: ImageTask, rows, labels: LabelSet, args: argparse.Namespace, image_mean, image_std):
        self.task, self.rows, self.labels, self.args = task, rows, labels, args
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        args = self.args
        image, segment_map, segment_to_label = self.task.row_to_segments(self.rows[index], self.labels)
        rng = np.random.default_rng([args.seed, epoch, index])
        image_t, map_t, pixel_mask = augment(image, segment_map, rng, args.augmentation, args.crop_size,
                                             args.min_scale, args.max_scale, not args.no_flip)
        # lean targets: one integer map per image (value j = target j, -1 = none) instead of N one-hot masks;
        # the loss gives exactly the losses of the one-hot form
        masks, classes = encode_segmentation_targets(map_t, instance_id_to_semantic_id=segment_to_label or {0: 0},
                                                     ignore_index=0, return_segment_map=True)
        pixel_values = (image_t - self.mean) / self.std * pixel_mask
        return {"pixel_values": pixel_values, "pixel_mask": pixel_mask, "mask_labels": masks, "class_labels": classes}


def _file_stem(row: dict) -> str:
    name = row.get("file_name") or getattr(row.get("image"), "filename", None)
    if not name:
        raise ValueError("An example has no file name to name its result files after.")
    return Path(str(name)).stem


class ImageTask(Task):
    """What the panoptic, instance and semantic tasks share: augmentation options, the synthetic data, the model,
    training examples and batched image inference."""

    def add_arguments(self, parser, groups) -> None:
        recipe, run = groups["recipe"], groups["run"]
        recipe.add_argument("--augmentation", default="resize_crop", choices=["resize_crop", "lsj", "none"],
                            help="resize_crop: shortest edge to crop_size x U(min_scale, max_scale), random crop; "
                            "lsj: longest edge to crop_size x U(min_scale, max_scale), crop/pad to crop_size (paper: "
                            "0.1-2.0).")
        recipe.add_argument("--crop_size", type=int, default=128, help="Training crop (square, pixels).")
        recipe.add_argument("--min_scale", type=float, default=None, help="Default: 0.8 (resize_crop), 0.1 (lsj).")
        recipe.add_argument("--max_scale", type=float, default=None, help="Default: 1.25 (resize_crop), 2.0 (lsj).")
        recipe.add_argument("--no_flip", action="store_true", help="Disable random horizontal flips.")
        recipe.add_argument("--eval_size", type=int, default=None,
                            help="Shortest edge of the evaluation resize (default: crop_size, or the checkpoint "
                            "processor's size with --model_name_or_path); the longest edge is capped at "
                            "eval_size x 1333 / 800.")
        self.add_inference_arguments(run)

    def check_arguments(self, parser, args) -> None:
        defaults = {"resize_crop": (0.8, 1.25), "lsj": (0.1, 2.0), "none": (1.0, 1.0)}[args.augmentation]
        args.min_scale = defaults[0] if args.min_scale is None else args.min_scale
        args.max_scale = defaults[1] if args.max_scale is None else args.max_scale
        if not 0 < args.min_scale <= args.max_scale:
            parser.error(f"Need 0 < min_scale <= max_scale; got {args.min_scale}, {args.max_scale}.")
        if args.crop_size < 1:
            parser.error("--crop_size must be >= 1.")

    def describe_augmentation(self, args) -> str:
        return (f"{args.augmentation} (scale {args.min_scale}-{args.max_scale}, crop {args.crop_size}, "
                f"{'no flip' if args.no_flip else 'horizontal flip'})")

    def default_data_dir(self, args, accelerator) -> Path:
        config = SyntheticPanopticConfig(num_train=args.synthetic_num_train, num_val=args.synthetic_num_val)
        with accelerator.main_process_first():
            try:
                return generate_synthetic_panoptic(DEFAULT_SYNTHETIC_DIR, config)
            except FileExistsError as error:
                raise FileExistsError(
                    f"{error} (it holds a synthetic dataset with other settings: delete it, or pass --data_dir)."
                ) from error

    def build_model_and_processor(self, args, labels):
        """The model (preset, or ``--model_name_or_path`` with heads re-sized to the label set) and its
        processor."""
        id2label = labels.id2label
        overrides = {k: getattr(args, k) for k in ("num_queries", "train_num_points") if getattr(args, k) is not None}

        def eval_size_kwargs(size: int) -> dict:
            return dict(size={"shortest_edge": size, "longest_edge": int(round(size * 1333 / 800))})

        processor_kwargs = eval_size_kwargs(args.eval_size) if args.eval_size else {}
        if args.model_name_or_path:
            config = SeriesMask2FormerConfig.from_pretrained(args.model_name_or_path, **overrides)
            config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}  # sets num_labels
            model = SeriesMask2FormerForUniversalSegmentation.from_pretrained(
                args.model_name_or_path, config=config, ignore_mismatched_sizes=True
            )
            try:
                processor = SeriesMask2FormerImageProcessor.from_pretrained(args.model_name_or_path,
                                                                            **processor_kwargs)
            except OSError:
                processor = SeriesMask2FormerImageProcessor(**(processor_kwargs or eval_size_kwargs(args.crop_size)))
        else:
            config = SeriesMask2FormerConfig(**preset_config_kwargs(args.preset, id2label, **overrides))
            model = SeriesMask2FormerForUniversalSegmentation(config)
            processor = SeriesMask2FormerImageProcessor(**(processor_kwargs or eval_size_kwargs(args.crop_size)))
        return model, processor

    def row_to_segments(self, row: dict, labels: LabelSet) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
        """One row -> ``(image [H, W, 3] uint8, segment_map [H, W] int64 (0 = void), {segment id: label id})``."""
        image = self.load_inputs(row)
        segment_map, segment_to_label = self.segments_of(row, labels, image.shape[:2])
        if segment_map.shape != image.shape[:2]:
            name = getattr(row["image"], "filename", None) or row.get("file_name") or "image"
            raise ValueError(f"{name}: the annotation has size {segment_map.shape} but the image has "
                             f"{image.shape[:2]}.")
        return image, segment_map, segment_to_label

    def segments_of(self, row: dict, labels: LabelSet, size: tuple[int, int]) -> tuple[np.ndarray, dict[int, int]]:
        """The ground truth of a row as a segment map and ``{segment id: label id}``."""
        raise NotImplementedError

    def training_dataset(self, data, args, processor) -> ImageTrainingDataset:
        return ImageTrainingDataset(self, data.train, data.labels, args, processor.image_mean, processor.image_std)

    def collate(self, examples: list[dict]) -> dict[str, Any]:
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "pixel_mask": torch.stack([e["pixel_mask"] for e in examples]),
            "mask_labels": [e["mask_labels"] for e in examples],
            "class_labels": [e["class_labels"] for e in examples],
        }

    def example_key(self, row: dict) -> str:
        return _file_stem(row)

    def load_inputs(self, row: dict) -> np.ndarray:
        image = row["image"]
        if not isinstance(image, Image.Image):
            image = Image.open(image)
        return np.asarray(image.convert("RGB"))

    def preprocess(self, processor, inputs: list[np.ndarray], args) -> dict[str, torch.Tensor]:
        encoded = processor(images=inputs, return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"], "pixel_mask": encoded["pixel_mask"]}

    @torch.no_grad()
    def forward(self, model, batch: dict):
        """The model's outputs on a batch of inference inputs (no autograd graph)."""
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        inputs = batch["model_inputs"]
        return model(pixel_values=inputs["pixel_values"].to(device, dtype), pixel_mask=inputs["pixel_mask"].to(device))

    def overlay(self, row, inputs, prediction, labels) -> dict | None:
        if prediction.segment_map is None:
            return None
        truth, truth_labels = self.segments_of(row, labels, inputs.shape[:2])
        predicted, predicted_labels = self.prediction_segments(prediction, labels)
        return {"image": inputs, "truth": truth, "truth_labels": truth_labels, "prediction": predicted,
                "prediction_labels": predicted_labels}

    def prediction_segments(self, prediction: Prediction, labels: LabelSet) -> tuple[np.ndarray, dict[int, int]]:
        raise NotImplementedError
