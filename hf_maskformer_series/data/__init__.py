"""Dataset readers (COCO panoptic, ADE20K-style semantic, COCO instances, YouTube-VIS) and synthetic generators.

Data code is never imported by the model code, so it may live in a subpackage.
"""

from .coco_instance import decode_instance_masks, instances_to_segment_map, load_coco_instances
from .coco_panoptic import (
    find_coco_panoptic_paths,
    load_coco_panoptic,
    panoptic_to_segment_map,
    read_panoptic_categories,
    verify_panoptic_png,
)
from .hub import hub_is_reachable, load_hub_dataset
from .hub_layouts import HUB_LAYOUTS, detect_hub_layout, hub_categories, prepare_hub_dataset
from .masks import decode_segmentation, encode_mask, encode_mask_uncompressed, id_to_rgb, rgb_to_id
from .semantic import load_semantic_segmentation, read_label_map
from .synthetic import (
    SYNTHETIC_CATEGORIES,
    SyntheticPanopticConfig,
    default_cache_dir,
    ensure_synthetic_panoptic,
    generate_synthetic_panoptic,
)
from .synthetic_video import (
    SYNTHETIC_VIDEO_CATEGORIES,
    SyntheticVideoConfig,
    ensure_synthetic_youtube_vis,
    generate_synthetic_youtube_vis,
)
from .youtube_vis import (
    augment_clip,
    load_video_clip,
    load_youtube_vis,
    read_youtube_vis_categories,
    sample_clip_indices,
    write_youtube_vis_results,
    youtube_vis_results,
)

__all__ = [
    "HUB_LAYOUTS",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_VIDEO_CATEGORIES",
    "SyntheticPanopticConfig",
    "SyntheticVideoConfig",
    "augment_clip",
    "decode_instance_masks",
    "decode_segmentation",
    "default_cache_dir",
    "detect_hub_layout",
    "encode_mask",
    "encode_mask_uncompressed",
    "ensure_synthetic_panoptic",
    "ensure_synthetic_youtube_vis",
    "find_coco_panoptic_paths",
    "generate_synthetic_panoptic",
    "generate_synthetic_youtube_vis",
    "hub_categories",
    "hub_is_reachable",
    "id_to_rgb",
    "instances_to_segment_map",
    "load_coco_instances",
    "load_coco_panoptic",
    "load_hub_dataset",
    "load_semantic_segmentation",
    "load_video_clip",
    "load_youtube_vis",
    "panoptic_to_segment_map",
    "prepare_hub_dataset",
    "read_label_map",
    "read_panoptic_categories",
    "read_youtube_vis_categories",
    "rgb_to_id",
    "sample_clip_indices",
    "write_youtube_vis_results",
    "youtube_vis_results",
    "verify_panoptic_png",
]
