"""Shapes, colours and textures shared by the synthetic image and video generators.

Every "thing" class is one shape drawn in one colour family, so a small model can tell the classes apart by shape
and by colour. Shapes are polygons rasterised with pycocotools, so the polygon written to a COCO instance file
reproduces the drawn mask exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .masks import polygons_to_mask

__all__ = ["STUFF_CLASSES", "THING_CLASSES", "SyntheticClass", "paint_stuff_background", "shape_polygon"]


@dataclass(frozen=True)
class SyntheticClass:
    """One synthetic category: COCO id, name, whether it is a countable thing, display colour (RGB)."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]


THING_CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass(1, "circle", True, (220, 40, 40)),
    SyntheticClass(2, "square", True, (40, 190, 70)),
    SyntheticClass(3, "triangle", True, (50, 80, 235)),
    SyntheticClass(4, "cross", True, (240, 200, 30)),
)
STUFF_CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass(5, "sky", False, (150, 200, 240)),
    SyntheticClass(6, "ground", False, (115, 85, 55)),
    SyntheticClass(7, "wall", False, (160, 160, 160)),
)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def shape_polygon(name: str, center: tuple[float, float], size: float, angle: float) -> list[float]:
    """Flat COCO polygon ``[x1, y1, x2, y2, ...]`` of a shape of the given bounding size, centred at (x, y)."""
    half = size / 2.0
    if name == "circle":
        theta = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)
        points = np.stack([np.cos(theta), np.sin(theta)], axis=1) * half
    elif name == "square":
        points = _rotate(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * half * 0.85, angle * 0.4)
    elif name == "triangle":
        theta = angle + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) - np.pi / 2
        points = np.stack([np.cos(theta), np.sin(theta)], axis=1) * half * 1.1
    elif name == "cross":
        arm = 0.33
        unit = np.array(
            [[-arm, -1], [arm, -1], [arm, -arm], [1, -arm], [1, arm], [arm, arm], [arm, 1], [-arm, 1], [-arm, arm],
             [-1, arm], [-1, -arm], [-arm, -arm]],
            dtype=float,
        )
        points = _rotate(unit * half, angle * 0.3)
    else:
        raise ValueError(f"Unknown synthetic shape '{name}'.")
    points = points + np.asarray(center, dtype=float)
    return [round(float(v), 2) for v in points.reshape(-1)]


def shape_mask(name: str, center: tuple[float, float], size: float, angle: float, height: int, width: int):
    """``([height, width] bool mask, polygon)`` of one shape."""
    polygon = shape_polygon(name, center, size, angle)
    return polygons_to_mask([polygon], height, width), polygon


def thing_colour(thing: SyntheticClass, rng: np.random.Generator) -> np.ndarray:
    """The class colour with a small per-instance jitter (float RGB, shape [3])."""
    return np.clip(np.asarray(thing.color, dtype=float) + rng.uniform(-18, 18, size=3), 0, 255)


def paint_stuff_background(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw a sky / ground / wall scene.

    Returns:
        image: ``[height, width, 3]`` float RGB with texture and noise.
        stuff_label: ``[height, width]`` int64 category ids of the stuff class at each pixel.
    """
    sky, ground, wall = STUFF_CLASSES
    ys, xs = np.mgrid[0:height, 0:width]
    horizon = rng.uniform(0.35, 0.65) * height
    amplitude = rng.uniform(0.0, 0.06) * height
    period = rng.uniform(0.5, 1.5) * width
    phase = rng.uniform(0, 2 * np.pi)
    horizon_line = horizon + amplitude * np.sin(2 * np.pi * xs / period + phase)
    stuff_label = np.where(ys < horizon_line, sky.id, ground.id).astype(np.int64)
    if rng.random() < 0.75:
        wall_width = int(rng.uniform(0.25, 0.5) * width)
        wall_left = int(rng.integers(0, width - wall_width + 1))
        wall_top = int(rng.uniform(0.05, 0.3) * height)
        wall_bottom = int(min(height, horizon + rng.uniform(0.05, 0.2) * height))
        stuff_label[wall_top:wall_bottom, wall_left : wall_left + wall_width] = wall.id

    image = np.zeros((height, width, 3), dtype=float)
    gradient = (ys / max(height - 1, 1))[..., None]
    sky_rgb = np.asarray(sky.color, dtype=float) * (1.0 - 0.25 * gradient) + rng.normal(0, 4, (height, width, 3))
    ground_rgb = np.asarray(ground.color, dtype=float) + rng.normal(0, 14, (height, width, 3))
    bricks = ((ys % 8) == 0) | (((xs + 8 * ((ys // 8) % 2)) % 16) == 0)
    wall_rgb = np.asarray(wall.color, dtype=float) - 45.0 * bricks[..., None] + rng.normal(0, 6, (height, width, 3))
    for stuff, rgb in ((sky, sky_rgb), (ground, ground_rgb), (wall, wall_rgb)):
        region = stuff_label == stuff.id
        image[region] = rgb[region]
    return image, stuff_label
