"""The video task: YouTube-VIS data, video Mask2Former, video inference to a YouTube-VIS results file, video AP.

- data: a YouTube-VIS folder (``hf_maskformer_series.data.youtube_vis``), by default the synthetic one
  (``hf_maskformer_series.data.synthetic_video``), generated into ``data/synthetic_youtube_vis`` if absent;
- training clips as the original ``YTVISDatasetMapper``: a reference frame and ``num_frames - 1`` frames drawn with
  replacement within ``frame_range`` of it, sorted; one shortest-edge resize (drawn from ``--min_size_train``) and
  one horizontal flip drawn per clip and applied to every frame. The random numbers come from
  ``(seed, epoch, video index)`` alone, so a resumed run sees the same clips as an uninterrupted one;
- batches: ``pixel_values_videos [batch, frames, 3, H, W]`` zero-padded bottom/right to a multiple of 32 (the
  original's ``size_divisibility``), ``pixel_mask [batch, H, W]``, per clip ``mask_labels [instances, frames, H,
  W]`` and ``class_labels [instances]`` (instances absent from every sampled frame are dropped);
- model: ``SeriesVideoMask2FormerForVideoInstanceSegmentation`` from a preset (``tiny`` by default), or from
  ``--model_name_or_path`` (a video checkpoint, or an image Mask2Former one: its weights initialise the video
  model, whose parameter names are the same);
- inference: every video in one pass (or ``--eval_window`` frames at a time with ``windowed_video_inference``),
  ``post_process_video_instance_segmentation`` (top-k over queries x classes), written as YouTube-VIS results
  (``output_dir/predictions/results.json``: ``video_id``, ``score``, ``category_id``, per-frame RLE
  ``segmentations``);
- metric: the YouTube-VIS video AP of ``hf_maskformer_series.metrics.video_ap`` (``compute_video_ap``), in %.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from task_common import LabelSet, Prediction, Task, atomic_write_json, read_categories_file, set_option

from hf_maskformer_series.configuration_mask2former import SeriesMask2FormerConfig
from hf_maskformer_series.configuration_video_mask2former import SeriesVideoMask2FormerConfig
from hf_maskformer_series.data.masks import decode_segmentation
from hf_maskformer_series.data.synthetic_video import SyntheticVideoConfig, generate_synthetic_youtube_vis
from hf_maskformer_series.data.youtube_vis import (
    augment_clip,
    load_video_clip,
    load_youtube_vis,
    read_youtube_vis_categories,
    sample_clip_indices,
    youtube_vis_results,
)
from hf_maskformer_series.metrics.video_ap.video_ap_core import compute_video_ap
from hf_maskformer_series.modeling_video_mask2former import SeriesVideoMask2FormerForVideoInstanceSegmentation
from hf_maskformer_series.presets import preset_config_kwargs
from hf_maskformer_series.video_processing import SeriesVideoMask2FormerVideoProcessor
from hf_maskformer_series.video_tracking import windowed_video_inference

DEFAULT_SYNTHETIC_VIDEO_DIR = Path("data") / "synthetic_youtube_vis"
SIZE_DIVISIBILITY = 32
VIDEO_METRIC_NAMES = {"video_ap": "AP", "video_ap_50": "AP50", "video_ap_75": "AP75", "video_ap_small": "APs",
                      "video_ap_medium": "APm", "video_ap_large": "APl", "video_ar_1": "AR1", "video_ar_10": "AR10",
                      "video_ar_100": "AR100"}


class VideoClipDataset(torch.utils.data.Dataset):
    """Augmented training clips: ``dataset[(epoch, index)]`` -> ``pixel_values_videos [T, 3, H, W]`` (normalised),
    ``mask_labels [N, T, H, W]`` float and ``class_labels [N]`` int64 (contiguous label ids)."""

    def __init__(self, rows, labels: LabelSet, args: argparse.Namespace, image_mean, image_std):
        self.rows, self.labels, self.args = rows, labels, args
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        args, row = self.args, self.rows[index]
        rng = np.random.default_rng([args.seed, epoch, index])
        frame_indices = sample_clip_indices(int(row["length"]), args.num_frames, args.frame_range, rng)
        clip = load_video_clip(row, frame_indices, category_id_map=self.labels.category_to_label)
        frames, masks = augment_clip(clip["frames"], clip["masks"], rng, min_size_choices=tuple(args.min_size_train),
                                     max_size=args.max_size_train, flip_prob=0.0 if args.no_flip else 0.5)
        pixels = torch.from_numpy(np.stack([np.asarray(frame, dtype=np.float32) for frame in frames]))
        pixels = (pixels.permute(0, 3, 1, 2) - self.mean) / self.std
        masks_t = torch.from_numpy(masks).float()
        keep = masks_t.flatten(1).any(dim=1) if len(masks_t) else torch.zeros(0, dtype=torch.bool)
        return {"pixel_values_videos": pixels, "mask_labels": masks_t[keep],
                "class_labels": torch.from_numpy(clip["category_ids"])[keep]}


def reference_tracks(row: dict, keep_crowd: bool = True) -> list[dict]:
    """The ground-truth tracks of a ``load_youtube_vis`` row: ``[{category_id, iscrowd, segmentations: [per frame
    bool [H, W] mask or None]}]``."""
    height, width = int(row["height"]), int(row["width"])
    tracks = []
    for annotation in row["annotations"]:
        if annotation.get("iscrowd", 0) and not keep_crowd:
            continue
        segmentations = annotation["segmentations"]
        if isinstance(segmentations, str):
            segmentations = json.loads(segmentations)
        tracks.append({"category_id": int(annotation["category_id"]), "iscrowd": int(annotation.get("iscrowd", 0)),
                       "segmentations": [decode_segmentation(s, height, width) for s in segmentations]})
    return tracks


def _paint(tracks: list[dict], frame: int, shape: tuple[int, int], label_of: dict[int, int]
           ) -> tuple[np.ndarray, dict[int, int]]:
    """Segment map ``[H, W]`` (ids 1.., later tracks on top) of one frame and ``{segment id: label id}``."""
    segment_map = np.zeros(shape, dtype=np.int64)
    segment_to_label = {}
    for number, track in enumerate(tracks, start=1):
        mask = track["segmentations"][frame]
        if mask is None:
            continue
        if isinstance(mask, dict):
            mask = mask_utils.decode({"size": mask["size"], "counts": mask["counts"].encode("ascii")})
        segment_map[np.asarray(mask, dtype=bool)] = number
        segment_to_label[number] = label_of[track["category_id"]]
    return segment_map, segment_to_label


class VideoAPMetric:
    """YouTube-VIS video AP / AR (in %) of YouTube-VIS result entries against ``load_youtube_vis`` rows."""

    def __init__(self, labels: LabelSet):
        self.labels = labels
        self.predictions, self.references = [], []

    def add(self, row: dict, prediction: Prediction) -> None:
        self.predictions.append(prediction.record)
        self.references.append(reference_tracks(row))

    def compute(self) -> dict:
        report = compute_video_ap(self.predictions, self.references,
                                  categories=[int(c["id"]) for c in self.labels.categories])
        return {key: 100 * max(float(report[name]), 0.0) for key, name in VIDEO_METRIC_NAMES.items()}


class VideoTask(Task):
    name = "video"
    metric_key = "video_ap"
    metric_description = "YouTube-VIS video AP (spatio-temporal mask IoU, AP 0.50:0.95 and AR), in %"
    example_unit = "videos"
    card_title = "Video Mask2Former for video instance segmentation"
    card_tags = ("video-instance-segmentation", "mask2former", "video-mask2former")
    pipeline_tag = None
    processor_auto_class = "AutoVideoProcessor"

    # --- options --------------------------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser, groups: dict[str, Any]) -> None:
        """The video task's options, and its defaults of the shared ones."""
        data, recipe, run = groups["data"], groups["recipe"], groups["run"]
        set_option(parser, "data_dir", help="A YouTube-VIS folder (<split>.json + <split>/JPEGImages/<video>/). "
                   f"Default: the synthetic dataset, generated into {DEFAULT_SYNTHETIC_VIDEO_DIR} if absent.")
        set_option(parser, "dataset_name", help="Not supported for videos (the reader needs the frame files): use "
                   "--data_dir.")
        set_option(parser, "categories_file", help="JSON with a 'categories' list (or the list itself); default: "
                   "the train annotation file's.")
        set_option(parser, "synthetic_num_train", default=SyntheticVideoConfig.num_train,
                   help="Videos of the generated train split (only when the synthetic data is used).")
        set_option(parser, "synthetic_num_val", default=SyntheticVideoConfig.num_val)
        data.add_argument("--synthetic_frame_size", type=int, default=SyntheticVideoConfig.height,
                          help="Height = width of the generated frames.")
        set_option(parser, "max_train_steps", default=600,
                   help="Optimizer steps (600 x 8 clips: 100 epochs of the 48 synthetic train videos).")
        set_option(parser, "per_device_eval_batch_size", help="Unused: the val videos are evaluated one at a time.")
        recipe.add_argument("--num_frames", type=int, default=2, help="Frames per training clip (SAMPLING_FRAME_NUM).")
        recipe.add_argument("--frame_range", type=int, default=20,
                            help="The other frames of a clip are drawn within this distance of the reference frame.")
        recipe.add_argument("--min_size_train", type=int, nargs="+", default=[80, 96],
                            help="Shortest edge of a training clip, drawn per clip from these (original: 360 480).")
        recipe.add_argument("--max_size_train", type=int, default=1333, help="Cap on the longest edge (training).")
        recipe.add_argument("--no_flip", action="store_true", help="Disable the random horizontal flip of clips.")
        recipe.add_argument("--test_size", type=int, default=None,
                            help="Shortest edge of the evaluation resize (default: the largest --min_size_train, or "
                            "the checkpoint processor's size with --model_name_or_path); longest edge capped at 1333.")
        set_option(parser, "num_overlay_images", default=4,
                   help="Val videos drawn in the overlay PNG (their middle frame: frame | ground truth | "
                   "predictions with score >= 0.5).")
        self.add_inference_arguments(run)

    def add_inference_arguments(self, parser) -> None:
        parser.add_argument("--eval_window", type=int, default=0,
                            help="Windowed inference, this many frames per clip (0: whole video at once).")
        parser.add_argument("--top_k", type=int, default=10, help="Predictions kept per video (the original's 10).")

    def check_arguments(self, parser, args) -> None:
        if args.dataset_name is not None:
            parser.error("--dataset_name is not supported by train_video.py; download the YouTube-VIS folder and "
                         "give --data_dir.")
        for name in ("num_frames", "top_k", "max_size_train"):
            if getattr(args, name) < 1:
                parser.error(f"--{name} must be >= 1.")
        if args.frame_range < 0 or args.eval_window < 0:
            parser.error("--frame_range and --eval_window must be >= 0.")
        if min(args.min_size_train) < 1 or (args.test_size is not None and args.test_size < 1):
            parser.error("--min_size_train and --test_size must be >= 1.")
        if args.synthetic_frame_size < 32:
            parser.error("--synthetic_frame_size must be >= 32.")

    def describe_augmentation(self, args) -> str:
        return (f"clips of {args.num_frames} frames within +-{args.frame_range}; shortest edge from "
                f"{tuple(args.min_size_train)} (max {args.max_size_train}) and "
                f"{'no flip' if args.no_flip else 'horizontal flip'}, drawn once per clip")

    # --- data -----------------------------------------------------------------------------------------------
    def default_data_dir(self, args, accelerator) -> Path:
        config = SyntheticVideoConfig(num_train=args.synthetic_num_train, num_val=args.synthetic_num_val,
                                      height=args.synthetic_frame_size, width=args.synthetic_frame_size)
        with accelerator.main_process_first():
            try:
                return generate_synthetic_youtube_vis(DEFAULT_SYNTHETIC_VIDEO_DIR, config)
            except FileExistsError as error:
                raise FileExistsError(f"{error} (it holds a synthetic dataset with other settings: delete it, or "
                                      "pass --data_dir).") from error

    def read_categories(self, data_dir, args, dataset=None) -> LabelSet:
        if args.categories_file:
            categories = read_categories_file(args.categories_file)
        else:
            categories = read_youtube_vis_categories(data_dir, args.train_split)
        return LabelSet.from_categories([{**c, "isthing": 1} for c in categories], str(data_dir))

    def load_split(self, data_dir, split, labels, max_samples):
        return load_youtube_vis(data_dir, split, max_samples=max_samples)

    # --- model and training ---------------------------------------------------------------------------------
    def build_model_and_processor(self, args, labels):
        """The video model (preset, or ``--model_name_or_path``: a video checkpoint, or an image Mask2Former one
        whose weights initialise it; heads re-sized to the label set) and its video processor."""
        id2label = labels.id2label
        overrides = {k: getattr(args, k) for k in ("num_queries", "train_num_points") if getattr(args, k) is not None}
        overrides.update(num_frames=args.num_frames, test_top_k=args.top_k)
        test_size = args.test_size or max(args.min_size_train)
        processor_kwargs = {"size": {"shortest_edge": test_size, "longest_edge": 1333}}
        if args.model_name_or_path:
            config_file = Path(args.model_name_or_path, "config.json")
            source = json.loads(config_file.read_text()) if config_file.is_file() else {}
            if source.get("model_type") == SeriesVideoMask2FormerConfig.model_type:
                config = SeriesVideoMask2FormerConfig.from_pretrained(args.model_name_or_path, **overrides)
            else:  # an image Mask2Former checkpoint (ours, transformers', converted)
                config = SeriesVideoMask2FormerConfig.from_image_config(
                    SeriesMask2FormerConfig.from_pretrained(args.model_name_or_path), **overrides)
            config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}  # sets num_labels
            model = SeriesVideoMask2FormerForVideoInstanceSegmentation.from_pretrained(
                args.model_name_or_path, config=config, ignore_mismatched_sizes=True
            )
            try:
                processor = SeriesVideoMask2FormerVideoProcessor.from_pretrained(
                    args.model_name_or_path, **(processor_kwargs if args.test_size else {}))
            except (OSError, ValueError):
                processor = SeriesVideoMask2FormerVideoProcessor(**processor_kwargs)
        else:
            config = SeriesVideoMask2FormerConfig(**preset_config_kwargs(args.preset, id2label, **overrides))
            model = SeriesVideoMask2FormerForVideoInstanceSegmentation(config)
            processor = SeriesVideoMask2FormerVideoProcessor(**processor_kwargs)
        return model, processor

    def training_dataset(self, data, args, processor) -> VideoClipDataset:
        return VideoClipDataset(data.train, data.labels, args, processor.image_mean, processor.image_std)

    def collate(self, examples: list[dict]) -> dict[str, Any]:
        """Zero-pad the clips bottom/right to the batch's largest size rounded up to a multiple of 32."""
        height = max(e["pixel_values_videos"].shape[-2] for e in examples)
        width = max(e["pixel_values_videos"].shape[-1] for e in examples)
        height = -(-height // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
        width = -(-width // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
        pixel_values, pixel_mask, mask_labels = [], [], []
        for example in examples:
            h, w = example["pixel_values_videos"].shape[-2:]
            pad = (0, width - w, 0, height - h)
            pixel_values.append(F.pad(example["pixel_values_videos"], pad))
            pixel_mask.append(F.pad(torch.ones(h, w, dtype=torch.int64), pad))
            mask_labels.append(F.pad(example["mask_labels"], pad))
        return {"pixel_values_videos": torch.stack(pixel_values), "pixel_mask": torch.stack(pixel_mask),
                "mask_labels": mask_labels, "class_labels": [e["class_labels"] for e in examples]}

    # --- inference, files, metric ---------------------------------------------------------------------------
    def inference_batch_size(self, args) -> int:
        return 1  # videos differ in length: one per batch

    def example_key(self, row: dict) -> str:
        return str(row["video_id"])

    def load_inputs(self, row: dict) -> list[Image.Image]:
        if row.get("video_file"):  # predict.py: a video file, decoded with PyAV
            import av

            with av.open(row["video_file"]) as container:
                return [frame.to_image().convert("RGB") for frame in container.decode(video=0)]
        return [Image.open(path).convert("RGB") for path in row["frame_paths"]]

    def preprocess(self, processor, inputs, args) -> dict[str, torch.Tensor]:
        encoded = processor(list(inputs), return_tensors="pt")
        return {"pixel_values_videos": encoded["pixel_values_videos"], "pixel_mask": encoded["pixel_mask"]}

    def infer(self, model, processor, batch, args, labels) -> list[Prediction]:
        inputs = batch["model_inputs"]
        parameter = next(model.parameters())
        pixel_values = inputs["pixel_values_videos"].to(parameter.device, parameter.dtype)
        if args.eval_window:
            outputs = windowed_video_inference(model, pixel_values, args.eval_window, pixel_mask=inputs["pixel_mask"])
        else:
            outputs = model(pixel_values_videos=pixel_values, pixel_mask=inputs["pixel_mask"].to(parameter.device),
                            output_auxiliary_logits=False)
        sizes = [(frames[0].height, frames[0].width) for frames in batch["inputs"]]
        results = processor.post_process_video_instance_segmentation(outputs, target_sizes=sizes, top_k=args.top_k,
                                                                     return_coco_annotation=True)
        predictions = []
        for row, result in zip(batch["rows"], results):
            video_id = int(row["video_id"]) if row.get("video_id") is not None else self.example_key(row)
            entries = youtube_vis_results([result], [0], labels.label_to_category)
            for entry in entries:
                entry["video_id"] = video_id
            predictions.append(Prediction(self.example_key(row), entries))
        return predictions

    def write_results_file(self, predictions, rows, folder, split, labels) -> Path:
        path = folder / "results.json"
        atomic_write_json(path, [entry for prediction in predictions for entry in prediction.record])
        return path

    def new_metric(self, labels, args) -> VideoAPMetric:
        return VideoAPMetric(labels)

    def overlay(self, row, inputs, prediction, labels) -> dict:
        """The middle frame: ground truth, and the predictions with score >= 0.5 (the best on top)."""
        middle = len(inputs) // 2
        shape = (inputs[middle].height, inputs[middle].width)
        truth, truth_labels = _paint(reference_tracks(row), middle, shape, labels.category_to_label)
        confident = [p for p in reversed(prediction.record) if p["score"] >= 0.5]
        predicted, predicted_labels = _paint(confident, middle, shape, labels.category_to_label)
        return {"image": np.asarray(inputs[middle]), "truth": truth, "truth_labels": truth_labels,
                "prediction": predicted, "prediction_labels": predicted_labels}


TASK = VideoTask()
