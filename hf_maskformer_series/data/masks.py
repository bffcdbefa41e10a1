"""Binary-mask encodings used by COCO-style annotation files: polygons, RLE and the panoptic RGB id encoding.

COCO stores an object's mask as a list of polygons (``[[x1, y1, x2, y2, ...], ...]``), as an uncompressed RLE
(``{"size": [h, w], "counts": [int, ...]}``) or as a compressed RLE (``{"size": [h, w], "counts": "<str>"}``).
YouTube-VIS uses the same encodings per frame, with ``None`` for a frame where the object is absent. COCO panoptic
stores a segment-id map as an RGB PNG with ``id = R + 256 * G + 256**2 * B`` (id 0 = void).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    "decode_segmentation",
    "encode_mask",
    "encode_mask_uncompressed",
    "id_to_rgb",
    "polygons_to_mask",
    "rgb_to_id",
]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Decode a panoptic PNG: ``[height, width, 3]`` uint8 RGB -> ``[height, width]`` int64 segment ids."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"A panoptic PNG must be RGB with shape [height, width, 3]; got shape {tuple(rgb.shape)}.")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(segment_ids: np.ndarray) -> np.ndarray:
    """Encode ``[height, width]`` segment ids (0 <= id < 256**3) as a ``[height, width, 3]`` uint8 RGB array."""
    segment_ids = np.asarray(segment_ids, dtype=np.int64)
    if segment_ids.size and (segment_ids.min() < 0 or segment_ids.max() >= 256**3):
        raise ValueError("Panoptic segment ids must lie in [0, 256**3) to be stored as an RGB PNG.")
    rgb = np.empty(segment_ids.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = segment_ids % 256
    rgb[..., 1] = (segment_ids // 256) % 256
    rgb[..., 2] = segment_ids // (256 * 256)
    return rgb


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` into a ``[height, width]`` bool mask (pycocotools)."""
    polygons = [list(map(float, polygon)) for polygon in polygons if len(polygon) >= 6]
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a ``[height, width]`` bool mask, JSON-ready (``counts`` is a ``str``)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def encode_mask_uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed RLE (``counts`` is a list of run lengths, column-major, starting with zeros) of a bool mask."""
    mask = np.asarray(mask, dtype=bool)
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    boundaries = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(boundaries).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """Decode one COCO/YouTube-VIS segmentation into a ``[height, width]`` bool mask.

    Accepts polygons, uncompressed RLE, compressed RLE (``counts`` as ``str`` or ``bytes``) and ``None``
    (returned as ``None``: the object is absent from that frame).
    """
    if segmentation is None:
        return None
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(s) for s in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} does not match the image size {[height, width]}.")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        else:
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_utils.decode(rle).astype(bool)
    raise ValueError(
        "A segmentation must be a list of polygons, an RLE dict with 'size' and 'counts', or None; "
        f"got {type(segmentation).__name__}."
    )
