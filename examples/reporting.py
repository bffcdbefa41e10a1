"""Reports of the examples: the overlay PNG (image | ground truth | prediction), the model card, the push to the
Hub, the ``trainer_log.jsonl`` log and metric formatting."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from checkpointing import CHECKPOINT_PREFIX
from PIL import Image, ImageDraw
from task_common import DataBundle, LabelSet, get_task

from hf_maskformer_series.data.hub import hub_is_reachable

LOG_FILE = "trainer_log.jsonl"
OVERLAY_FILE = "val_predictions.png"


def scalar_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.2f}" for k, v in scalar_metrics(metrics).items())


class TrainerLog:
    """``output_dir/trainer_log.jsonl``: one JSON record per line (loss and lr every ``--logging_steps``,
    evaluations). ``truncate(step)`` drops the records after ``step`` (a resumed run rewrites them), atomically."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate(self, step: int) -> None:
        if not self.path.is_file():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            staging = self.path.with_name(f".{self.path.name}.tmp")
            staging.write_text("".join(line + "\n" for line in kept))
            os.replace(staging, self.path)


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


def overlay_image(image: np.ndarray, segment_map: np.ndarray, segment_to_label: dict, labels: LabelSet) -> np.ndarray:
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
        panels = [item["image"], overlay_image(item["image"], item["truth"], item["truth_labels"], labels),
                  overlay_image(item["image"], item["prediction"], item["prediction_labels"], labels)]
        for column, panel in enumerate(panels):
            canvas.paste(Image.fromarray(panel), (gap + column * (width + gap), header + gap + row * (height + gap)))
    path = Path(path)
    canvas.save(path)
    return path


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


def model_card(args: argparse.Namespace, data: DataBundle, metrics: dict, num_parameters: int,
               wall_time: float, world_size: int) -> str:
    """The README.md of the output folder: data, recipe and metrics of the run."""
    spec = get_task(args.task)
    unit = spec.example_unit
    headline = {k: round(v, 2) for k, v in metrics.items() if isinstance(v, (int, float))}
    describe_augmentation = spec.describe_augmentation
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
