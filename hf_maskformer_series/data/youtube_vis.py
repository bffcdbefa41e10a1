"""Read a YouTube-VIS folder into a ``datasets.Dataset`` and sample training clips as the original Mask2Former.

Layout (as the YouTube-VIS 2019/2021 downloads)::

    <split>.json                                  {"videos": [{id, width, height, length, file_names}],
                                                   "annotations": [{id, video_id, category_id, iscrowd,
                                                                    segmentations: [RLE | polygons | None per frame],
                                                                    areas, bboxes}],
                                                   "categories": [{id, name}]}
    <split>/JPEGImages/<video>/<frame>.jpg|png    frames; ``file_names`` are relative to ``<split>/JPEGImages``

(``annotations/<split>.json`` and ``instances_<split>.json`` are also looked for.) One row per video, columns:
``video_id``, ``height``, ``width``, ``length``, ``frame_paths`` (absolute paths, in order) and ``annotations``
(``[{id, category_id, iscrowd, segmentations}]``, the per-frame segmentations serialised as a JSON string).

Training clips follow ``mask2former_video/data_video/dataset_mapper.py``: a reference frame drawn uniformly, the
other ``num_frames - 1`` frames drawn WITH replacement from the frames within ``frame_range`` of it (the reference
excluded), all sorted; one resize and one flip drawn per clip and applied to every frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image

from ..post_processing import binary_mask_to_coco_rle
from .coco_panoptic import read_json
from .masks import decode_segmentation

__all__ = [
    "VIDEO_FEATURES",
    "augment_clip",
    "load_video_clip",
    "load_youtube_vis",
    "read_youtube_vis_categories",
    "sample_clip_indices",
    "write_youtube_vis_results",
    "youtube_vis_results",
]

VIDEO_FEATURES = datasets.Features(
    {
        "video_id": datasets.Value("int64"),
        "height": datasets.Value("int64"),
        "width": datasets.Value("int64"),
        "length": datasets.Value("int64"),
        "frame_paths": datasets.List(datasets.Value("string")),
        "annotations": datasets.List(
            {
                "id": datasets.Value("int64"),
                "category_id": datasets.Value("int64"),
                "iscrowd": datasets.Value("int64"),
                "segmentations": datasets.Value("string"),
            }
        ),
    }
)


def _find(root: Path, split: str) -> tuple[Path, Path]:
    files = [root / f"{split}.json", root / "annotations" / f"{split}.json", root / "annotations" /
             f"instances_{split}.json", root / split / "instances.json"]
    annotation_file = next((f for f in files if f.is_file()), None)
    if annotation_file is None:
        raise FileNotFoundError(f"No YouTube-VIS annotation JSON for split '{split}'; tried: "
                                f"{', '.join(map(str, files))}")
    frames_dir = root / split / "JPEGImages"
    if not frames_dir.is_dir():
        raise FileNotFoundError(f"Frame folder {frames_dir} for split '{split}' is missing.")
    return annotation_file, frames_dir


def read_youtube_vis_categories(data_dir: str | os.PathLike | None = None, split: str = "train",
                                annotation_file: str | os.PathLike | None = None) -> list[dict]:
    """The ``categories`` list (``{id, name, ...}``) of a YouTube-VIS annotation file."""
    if annotation_file is None:
        annotation_file = _find(Path(data_dir), split)[0]
    categories = read_json(annotation_file).get("categories")
    if not categories:
        raise ValueError(f"{annotation_file} has no 'categories'.")
    return categories


def load_youtube_vis(
    data_dir: str | os.PathLike | None,
    split: str,
    *,
    annotation_file: str | os.PathLike | None = None,
    frames_dir: str | os.PathLike | None = None,
    check_frames: bool = True,
    max_samples: int | None = None,
) -> datasets.Dataset:
    """Read one split of a YouTube-VIS folder (layout and columns in the module docstring).

    Args:
        check_frames: check that every frame file exists (one ``stat`` per frame).
        max_samples: keep the first ``max_samples`` videos.

    Raises:
        FileNotFoundError: missing folder, annotation file or frame (named).
        ValueError: empty split, unknown category id, annotation of an unknown video, or per-frame lists whose
            length is not the video length.
    """
    if annotation_file is None or frames_dir is None:
        if data_dir is None:
            raise ValueError("Give data_dir, or both annotation_file and frames_dir.")
        found = _find(Path(data_dir), split)
        annotation_file = annotation_file or found[0]
        frames_dir = frames_dir or found[1]
    annotation_file, frames_dir = Path(annotation_file), Path(frames_dir)
    content = read_json(annotation_file)
    videos = content.get("videos") or []
    if not videos:
        raise ValueError(f"Split '{split}' is empty: {annotation_file} lists no videos.")
    categories = {int(c["id"]) for c in content.get("categories") or []}
    if not categories:
        raise ValueError(f"{annotation_file} has no 'categories'.")
    video_by_id = {video["id"]: video for video in videos}
    annotations_by_video: dict[int, list[dict]] = {video_id: [] for video_id in video_by_id}
    for annotation in content.get("annotations") or []:
        video = video_by_id.get(annotation.get("video_id"))
        if video is None:
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} refers to unknown video id "
                             f"{annotation.get('video_id')}.")
        if annotation.get("category_id") not in categories:
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} (video id {video['id']}) has "
                             f"unknown category_id {annotation.get('category_id')}; known ids: {sorted(categories)}.")
        segmentations = annotation.get("segmentations")
        if not isinstance(segmentations, list) or len(segmentations) != len(video["file_names"]):
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} of video id {video['id']} has "
                             f"{len(segmentations) if isinstance(segmentations, list) else 'no'} per-frame "
                             f"segmentations for a video of {len(video['file_names'])} frames.")
        annotations_by_video[video["id"]].append({
            "id": int(annotation.get("id", 0)), "category_id": int(annotation["category_id"]),
            "iscrowd": int(annotation.get("iscrowd", 0)), "segmentations": json.dumps(segmentations),
        })
    rows = {name: [] for name in VIDEO_FEATURES}
    for video in videos[:max_samples] if max_samples is not None else videos:
        frame_paths = [frames_dir / name for name in video["file_names"]]
        if not frame_paths:
            raise ValueError(f"{annotation_file}: video id {video['id']} has no frames.")
        if check_frames:
            for path in frame_paths:
                if not path.is_file():
                    raise FileNotFoundError(f"Frame {path} of video id {video['id']} is missing.")
        rows["video_id"].append(int(video["id"]))
        rows["height"].append(int(video["height"]))
        rows["width"].append(int(video["width"]))
        rows["length"].append(len(frame_paths))
        rows["frame_paths"].append([str(p) for p in frame_paths])
        rows["annotations"].append(annotations_by_video[video["id"]])
    return datasets.Dataset.from_dict(rows, features=VIDEO_FEATURES)


def sample_clip_indices(video_length: int, num_frames: int = 2, frame_range: int = 20,
                        rng: np.random.Generator | None = None, shuffle: bool = False) -> list[int]:
    """Frame indices of one training clip, as the original ``YTVISDatasetMapper``.

    A reference frame ``ref`` is drawn uniformly from ``[0, video_length)``; ``num_frames - 1`` more are drawn
    with replacement from ``[max(0, ref - frame_range), min(video_length, ref + frame_range + 1)) \\ {ref}``;
    the reference is appended and the list sorted (or shuffled when ``shuffle``). A one-frame video repeats its
    only frame.
    """
    if video_length < 1:
        raise ValueError(f"video_length must be >= 1; got {video_length}.")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}.")
    rng = rng if rng is not None else np.random.default_rng()
    reference = int(rng.integers(video_length))
    start, end = max(0, reference - frame_range), min(video_length, reference + frame_range + 1)
    neighbours = np.array([i for i in range(start, end) if i != reference], dtype=np.int64)
    if neighbours.size == 0:
        neighbours = np.array([reference], dtype=np.int64)
    others = rng.choice(neighbours, num_frames - 1, replace=True).tolist() if num_frames > 1 else []
    indices = sorted(int(i) for i in others + [reference])
    if shuffle:
        rng.shuffle(indices)
    return indices


def load_video_clip(example: dict, frame_indices: list[int], *, keep_crowd: bool = False,
                    category_id_map: dict[int, int] | None = None) -> dict:
    """Load the frames and instance masks of one clip of a ``load_youtube_vis`` row.

    Returns a dict with ``frames`` (list of T RGB PIL images), ``masks`` (``[N, T, H, W]`` bool; an instance absent
    from a frame has an empty mask there), ``category_ids`` (``[N]`` int64) and ``instance_ids`` (``[N]`` int64).
    Only instances present in at least one of the sampled frames are kept (as the original ``prepare_targets``).
    """
    height, width, length = int(example["height"]), int(example["width"]), int(example["length"])
    if any(not 0 <= i < length for i in frame_indices):
        raise ValueError(f"Frame indices {frame_indices} out of range for a video of {length} frames.")
    frames = []
    for i in frame_indices:
        frame = Image.open(example["frame_paths"][i]).convert("RGB")
        if frame.size != (width, height):
            raise ValueError(f"Frame {example['frame_paths'][i]} is {frame.size[0]}x{frame.size[1]}, but its video "
                             f"is annotated as {width}x{height}.")
        frames.append(frame)
    masks, category_ids, instance_ids = [], [], []
    for annotation in example["annotations"]:
        if annotation.get("iscrowd", 0) and not keep_crowd:
            continue
        segmentations = annotation["segmentations"]
        if isinstance(segmentations, str):
            segmentations = json.loads(segmentations)
        clip = np.zeros((len(frame_indices), height, width), dtype=bool)
        for t, i in enumerate(frame_indices):
            mask = decode_segmentation(segmentations[i], height, width)
            if mask is not None:
                clip[t] = mask
        if not clip.any():
            continue
        category_id = int(annotation["category_id"])
        if category_id_map is not None:
            category_id = int(category_id_map[category_id])
        masks.append(clip)
        category_ids.append(category_id)
        instance_ids.append(int(annotation.get("id", len(instance_ids))))
    masks_array = np.stack(masks) if masks else np.zeros((0, len(frame_indices), height, width), dtype=bool)
    return {"frames": frames, "masks": masks_array, "category_ids": np.asarray(category_ids, dtype=np.int64),
            "instance_ids": np.asarray(instance_ids, dtype=np.int64)}


def augment_clip(frames: list[Image.Image], masks: np.ndarray, rng: np.random.Generator | None = None, *,
                 min_size_choices: tuple[int, ...] = (360, 480), max_size: int = 1333,
                 flip_prob: float = 0.5) -> tuple[list[Image.Image], np.ndarray]:
    """One ``ResizeShortestEdge`` (short side drawn from ``min_size_choices``, long side capped at ``max_size``)
    and one horizontal flip (probability ``flip_prob``), drawn once and applied to every frame of the clip.

    ``masks`` is ``[N, T, H, W]`` bool; returns the new frames and ``[N, T, H', W']`` masks (nearest resize).
    """
    rng = rng if rng is not None else np.random.default_rng()
    width, height = frames[0].size
    short = int(min_size_choices[int(rng.integers(len(min_size_choices)))])
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    new_height, new_width = int(height * scale + 0.5), int(width * scale + 0.5)
    flip = bool(rng.random() < flip_prob)
    out_frames = []
    for frame in frames:
        frame = frame.resize((new_width, new_height), Image.BILINEAR)
        out_frames.append(frame.transpose(Image.FLIP_LEFT_RIGHT) if flip else frame)
    num, length = masks.shape[:2]
    out_masks = np.zeros((num, length, new_height, new_width), dtype=bool)
    for n in range(num):
        for t in range(length):
            resized = np.asarray(Image.fromarray(masks[n, t].astype(np.uint8)).resize((new_width, new_height),
                                                                                       Image.NEAREST)).astype(bool)
            out_masks[n, t] = resized[:, ::-1] if flip else resized
    return out_frames, out_masks


def youtube_vis_results(
    predictions: Sequence[Sequence[Mapping[str, Any]]],
    video_ids: Sequence[int],
    label_id_to_category_id: Mapping[int, int] | None = None,
) -> list[dict[str, Any]]:
    """YouTube-VIS results entries (the original `instances_to_coco_json_video`).

    Args:
        predictions: per video, the list returned by the video processor's `post_process_video_instance_segmentation`.
        video_ids: the dataset's id of each video.
        label_id_to_category_id: contiguous label id → dataset category id (default: `label_id + 1`, the
            YouTube-VIS categories 1..40).

    Returns:
        One `{"video_id", "score", "category_id", "segmentations": [RLE per frame, counts as str]}` per prediction.
    """
    if len(predictions) != len(video_ids):
        raise ValueError(f"got {len(predictions)} prediction lists for {len(video_ids)} video ids")
    entries = []
    for video_id, video_predictions in zip(video_ids, predictions):
        for prediction in video_predictions:
            label = int(prediction["label_id"])
            category = label_id_to_category_id[label] if label_id_to_category_id is not None else label + 1
            segmentations = [
                frame if isinstance(frame, Mapping) else binary_mask_to_coco_rle(frame)
                for frame in prediction["segmentations"]
            ]
            entries.append(
                {
                    "video_id": int(video_id),
                    "score": float(prediction["score"]),
                    "category_id": int(category),
                    "segmentations": segmentations,
                }
            )
    return entries


def write_youtube_vis_results(
    path: str | os.PathLike,
    predictions: Sequence[Sequence[Mapping[str, Any]]],
    video_ids: Sequence[int],
    label_id_to_category_id: Mapping[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Write the YouTube-VIS results JSON (see `youtube_vis_results`) atomically and return its entries."""
    entries = youtube_vis_results(predictions, video_ids, label_id_to_category_id)
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        json.dump(entries, handle)
    os.replace(temporary, path)  # atomic: a reader never sees a half-written file
    return entries
