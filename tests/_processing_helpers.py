"""Helpers for the processor / post-processing tests: fixture cases and result comparisons."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from hf_maskformer_series.post_processing import upsample_crop_resize

FIXTURES = Path(__file__).parent / "fixtures"
IMAGE_FIXTURES = ["m2f_image_swin", "m2f_image_r50", "maskformer_fpn_swin", "maskformer_tenc_r50"]
STUFF_IDS = {3, 4}  # fixtures README: things [0, 1, 2], stuff [3, 4]
SCORE_ATOL = 1e-5


@functools.cache
def load_postprocess(name: str) -> dict:
    """The `postprocess` entry plus the stored `outputs` of one fixture file."""
    data = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    return {"postprocess": data["postprocess"], "outputs": data["outputs"], "is_v1": name.startswith("maskformer")}


def settings_of(name: str) -> list[str]:
    return [setting for setting in ("real", "low", "instance_only") if setting in load_postprocess(name)["postprocess"]]


def model_cases(name: str) -> list[dict]:
    """Per image of the stored model outputs: low-level inputs (upsampled per the README) and references."""
    fixture = load_postprocess(name)
    postprocess, outputs = fixture["postprocess"], fixture["outputs"]
    cases = []
    for index in range(outputs["pred_logits"].shape[0]):
        mask_pred = upsample_crop_resize(
            outputs["pred_masks"][index],
            postprocess["padded_input_size"],
            postprocess["image_sizes"][index],
            postprocess["output_sizes"][index],
        )
        references = {setting: postprocess[setting]["per_image"][index] for setting in settings_of(name)}
        cases.append({"name": f"image{index}", "mask_cls": outputs["pred_logits"][index], "mask_pred": mask_pred,
                      "references": references})
    return cases


def synthetic_cases(name: str) -> list[dict]:
    postprocess = load_postprocess(name)["postprocess"]
    return [
        {"name": case["name"], "mask_cls": case["mask_cls"], "mask_pred": case["mask_pred"],
         "references": {setting: case[setting] for setting in settings_of(name)}}
        for case in postprocess["synthetic"]
    ]


def model_outputs_dict(name: str) -> dict:
    """The stored outputs in our model's output format (with the input geometry)."""
    fixture = load_postprocess(name)
    postprocess, outputs = fixture["postprocess"], fixture["outputs"]
    return {
        "class_queries_logits": outputs["pred_logits"],
        "masks_queries_logits": outputs["pred_masks"],
        "image_sizes": torch.tensor(postprocess["image_sizes"]),
        "padded_image_size": torch.tensor(postprocess["padded_input_size"]),
    }


def synthetic_outputs_dict(case: dict) -> dict:
    """A synthetic case as a batch of one whose masks are already at the output size (no resizing)."""
    size = torch.tensor(case["mask_pred"].shape[-2:])
    return {
        "class_queries_logits": case["mask_cls"][None],
        "masks_queries_logits": case["mask_pred"][None],
        "image_sizes": size[None],
        "padded_image_size": size,
    }


def setting_arguments(name: str, setting: str) -> dict:
    settings = load_postprocess(name)["postprocess"][setting]["settings"]
    return settings


def assert_segments_match(ours: list[dict], reference: list[dict]) -> None:
    """Our `segments_info` (transformers' keys) against the original's (`id`, `isthing`, `category_id`)."""
    got = [(segment["id"], segment["label_id"], segment["was_fused"]) for segment in ours]
    expected = [(segment["id"], segment["category_id"], not segment["isthing"]) for segment in reference]
    assert got == expected


def assert_instances_match(masks: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, reference: dict) -> None:
    """Compare instances as sets: every reference (class, mask, score) has exactly one equal partner."""
    ref_masks, ref_scores, ref_labels = reference["pred_masks"].bool(), reference["scores"], reference["pred_classes"]
    assert masks.shape[0] == ref_masks.shape[0], (masks.shape, ref_masks.shape)
    masks = masks.bool()
    used = torch.zeros(masks.shape[0], dtype=torch.bool)
    for ref_mask, ref_score, ref_label in zip(ref_masks, ref_scores, ref_labels):
        candidates = (
            ~used
            & (labels == ref_label)
            & ((scores - ref_score).abs() <= SCORE_ATOL)
            & (masks == ref_mask).flatten(1).all(1)
        ).nonzero().flatten()
        assert candidates.numel() >= 1, f"no match for instance of class {int(ref_label)}, score {float(ref_score)}"
        used[candidates[0]] = True
    assert bool(used.all())
