"""A small, deterministic synthetic YouTube-VIS dataset: coloured shapes moving and occluding over a scene.

Each video shows 2-4 shape instances (the thing classes of ``shapes.py``: circle, square, triangle, cross) moving at
constant velocity and bouncing off the image borders, drawn in a fixed depth order so they occlude one another.
Some instances enter late or leave early, so their per-frame segmentation is ``None`` in those frames, as in the
real annotations. Layout (the YouTube-VIS download's, read by ``youtube_vis.load_youtube_vis``)::

    <split>.json                                {"videos", "annotations", "categories"} (uncompressed RLE)
    <split>/JPEGImages/<video name>/<frame>.png
    generator.json                              the generator settings (a later call with the same settings
                                                reuses the folder)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .generated_folder import write_generated_folder
from .masks import encode_mask_uncompressed
from .shapes import THING_CLASSES, paint_stuff_background, shape_mask, thing_colour
from .synthetic import default_cache_dir

__all__ = [
    "SYNTHETIC_VIDEO_CATEGORIES",
    "SyntheticVideoConfig",
    "ensure_synthetic_youtube_vis",
    "generate_synthetic_youtube_vis",
    "render_video",
]

GENERATOR_VERSION = 1
_SPLIT_CODES = {"train": 11, "val": 12}
_VIDEO_ID_OFFSETS = {"train": 0, "val": 10_000}
SYNTHETIC_VIDEO_CATEGORIES = [{"id": c.id, "name": c.name, "supercategory": "shape"} for c in THING_CLASSES]


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """Settings of the synthetic YouTube-VIS dataset."""

    num_train: int = 48
    num_val: int = 12
    height: int = 96
    width: int = 96
    min_frames: int = 8
    max_frames: int = 12
    min_things: int = 2
    max_things: int = 4
    min_thing_size: float = 0.2
    max_thing_size: float = 0.36
    max_speed: float = 4.0
    min_visible_area: int = 12
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"Need 1 <= min_frames <= max_frames; got {self.min_frames}, {self.max_frames}.")
        if not 1 <= self.min_things <= self.max_things:
            raise ValueError(f"Need 1 <= min_things <= max_things; got {self.min_things}, {self.max_things}.")
        if min(self.height, self.width) < 32:
            raise ValueError(f"Frames must be at least 32x32; got {self.height}x{self.width}.")

    def num_videos(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[split]


def render_video(config: SyntheticVideoConfig, split: str, index: int) -> dict:
    """Draw one video.

    Returns ``frames`` (``[T, H, W, 3]`` uint8) and ``instances``: ``[{category_id, masks: [T, H, W] bool}]`` with the
    visible part of each instance per frame (an all-False frame means absent). Instances never visible are dropped.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'val'; got {split!r}.")
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _SPLIT_CODES[split], index]))
    height, width = config.height, config.width
    length = int(rng.integers(config.min_frames, config.max_frames + 1))
    background, _ = paint_stuff_background(height, width, rng)
    side = min(height, width)
    movers = []
    for _ in range(int(rng.integers(config.min_things, config.max_things + 1))):
        thing = THING_CLASSES[int(rng.integers(len(THING_CLASSES)))]
        size = rng.uniform(config.min_thing_size, config.max_thing_size) * side
        first, last = 0, length - 1
        if rng.random() < 0.3:  # enters late or leaves early
            if rng.random() < 0.5:
                first = int(rng.integers(1, max(2, length // 2)))
            else:
                last = int(rng.integers(length // 2, length - 1)) if length > 2 else last
        movers.append({
            "class": thing, "size": size, "first": first, "last": last, "colour": thing_colour(thing, rng),
            "position": np.array([rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)]),
            "velocity": rng.uniform(-config.max_speed, config.max_speed, size=2),
            "angle": rng.uniform(-np.pi, np.pi), "spin": rng.uniform(-0.1, 0.1),
        })
    frames = np.zeros((length, height, width, 3), dtype=np.uint8)
    visible = np.zeros((len(movers), length, height, width), dtype=bool)
    for t in range(length):
        image = background + rng.normal(0, 3, background.shape)
        owner = np.full((height, width), -1, dtype=np.int64)
        for k, mover in enumerate(movers):
            if mover["first"] <= t <= mover["last"]:
                mask, _ = shape_mask(mover["class"].name, tuple(mover["position"]), mover["size"], mover["angle"],
                                     height, width)
                owner[mask] = k
            position, velocity, half = mover["position"], mover["velocity"], mover["size"] / 2
            position += velocity
            for axis, limit in ((0, width), (1, height)):
                if position[axis] < half or position[axis] > limit - half:
                    velocity[axis] = -velocity[axis]
                    position[axis] = np.clip(position[axis], half, limit - half)
            mover["angle"] += mover["spin"]
        shading = rng.normal(0, 5, (height, width, 3))
        for k, mover in enumerate(movers):
            region = owner == k
            image[region] = mover["colour"] + shading[region]
            if region.sum() >= config.min_visible_area:
                visible[k, t] = region
        frames[t] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    instances = [{"category_id": mover["class"].id, "masks": visible[k]} for k, mover in enumerate(movers)
                 if visible[k].any()]
    return {"frames": frames, "instances": instances}


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _write_split(root: Path, config: SyntheticVideoConfig, split: str) -> None:
    videos, annotations = [], []
    for index in range(config.num_videos(split)):
        video = render_video(config, split, index)
        video_id = _VIDEO_ID_OFFSETS[split] + index + 1
        name = f"video_{video_id:05d}"
        folder = root / split / "JPEGImages" / name
        folder.mkdir(parents=True, exist_ok=True)
        file_names = []
        for t, frame in enumerate(video["frames"]):
            Image.fromarray(frame).save(folder / f"{t:05d}.png")
            file_names.append(f"{name}/{t:05d}.png")
        length = len(file_names)
        videos.append({"id": video_id, "width": config.width, "height": config.height, "length": length,
                       "file_names": file_names})
        for instance in video["instances"]:
            present = [bool(m.any()) for m in instance["masks"]]
            annotations.append({
                "id": len(annotations) + 1, "video_id": video_id, "category_id": instance["category_id"],
                "iscrowd": 0, "width": config.width, "height": config.height, "length": 1,
                "segmentations": [encode_mask_uncompressed(m) if p else None
                                  for m, p in zip(instance["masks"], present)],
                "areas": [int(m.sum()) if p else None for m, p in zip(instance["masks"], present)],
                "bboxes": [_bbox(m) if p else None for m, p in zip(instance["masks"], present)],
            })
    content = {"info": {"description": "hf_maskformer_series synthetic YouTube-VIS shapes",
                        "version": GENERATOR_VERSION},
               "videos": videos, "annotations": annotations, "categories": SYNTHETIC_VIDEO_CATEGORIES}
    with open(root / f"{split}.json", "w") as f:
        json.dump(content, f)


def generate_synthetic_youtube_vis(output_dir: str | os.PathLike, config: SyntheticVideoConfig | None = None,
                                   overwrite: bool = False) -> Path:
    """Write the synthetic YouTube-VIS dataset to ``output_dir`` (atomically, like
    ``synthetic.generate_synthetic_panoptic``) and return its path."""
    config = config or SyntheticVideoConfig()
    output_dir = Path(output_dir)
    settings = {"generator": "synthetic_youtube_vis", "version": GENERATOR_VERSION, **asdict(config)}

    def write(staging: Path) -> None:
        for split in ("train", "val"):
            _write_split(staging, config, split)

    return write_generated_folder(output_dir, settings, write, overwrite)


def ensure_synthetic_youtube_vis(output_dir: str | os.PathLike | None = None,
                                 config: SyntheticVideoConfig | None = None) -> Path:
    """Return a folder holding the synthetic YouTube-VIS dataset, generating it on first use (default folder:
    ``default_cache_dir() / "synthetic_youtube_vis_<hash of the settings>"``)."""
    config = config or SyntheticVideoConfig()
    if output_dir is None:
        digest = hashlib.sha256(json.dumps({"version": GENERATOR_VERSION, **asdict(config)}, sort_keys=True)
                                .encode()).hexdigest()[:12]
        output_dir = default_cache_dir() / f"synthetic_youtube_vis_{digest}"
    return generate_synthetic_youtube_vis(output_dir, config)
