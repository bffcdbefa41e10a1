"""Predict the panoptic segmentation of an image and write it as a PNG.

With no arguments it runs offline on embedded data: a generated synthetic image and a small randomly initialised
model (so the segments are meaningless; point `--model` at a trained folder, e.g. the output of
`examples/train_panoptic.py`, for real predictions).

    python examples/predict_panoptic.py [--model FOLDER_OR_HUB_ID] [--image PATH] [--output outputs/panoptic.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import hf_maskformer_series as hms
from hf_maskformer_series.image_processing import SeriesMask2FormerImageProcessor


def generated_image(seed: int = 0, size: int = 256) -> Image.Image:
    """A deterministic synthetic scene: a gradient background with coloured shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 96)], axis=-1).astype(np.uint8)
    for _ in range(5):
        cy, cx, radius = rng.integers(30, size - 30, 2).tolist() + [int(rng.integers(12, 30))]
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.integers(0, 255, 3)
    return Image.fromarray(image)


def default_model() -> tuple[hms.SeriesMask2FormerForUniversalSegmentation, SeriesMask2FormerImageProcessor]:
    """A small random Mask2Former (ResNet backbone) and a processor for 256-pixel inputs."""
    torch.manual_seed(0)
    config = hms.SeriesMask2FormerConfig(
        backbone_config={"model_type": "resnet", "embedding_size": 32, "hidden_sizes": [32, 64, 128, 256],
                         "depths": [1, 1, 1, 1], "layer_type": "basic",
                         "out_features": ["stage1", "stage2", "stage3", "stage4"]},
        hidden_dim=64, feature_size=64, mask_feature_size=64, num_queries=20, decoder_layers=4, encoder_layers=2,
        dim_feedforward=128, encoder_feedforward_dim=128, num_attention_heads=4,
        id2label={0: "background", 1: "shape"},
    )
    processor = SeriesMask2FormerImageProcessor(size={"shortest_edge": 256, "longest_edge": 512})
    return hms.SeriesMask2FormerForUniversalSegmentation(config).eval(), processor


def colorize(segmentation: np.ndarray) -> Image.Image:
    """Segment ids `[H, W]` → an RGB image, one colour per id (0 / -1 black)."""
    palette = np.random.default_rng(1).integers(40, 255, (int(segmentation.max()) + 2, 3), dtype=np.uint8)
    palette[0] = 0
    return Image.fromarray(palette[np.clip(segmentation, 0, None)])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved model folder or Hub repository (default: a small random model)")
    parser.add_argument("--image", help="an image file (default: a generated image)")
    parser.add_argument("--output", default="outputs/panoptic.png")
    parser.add_argument("--threshold", type=float, default=None, help="panoptic score threshold")
    args = parser.parse_args(argv)

    if args.model:
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        model = AutoModelForUniversalSegmentation.from_pretrained(args.model).eval()
        processor = AutoImageProcessor.from_pretrained(args.model)
    else:
        model, processor = default_model()
    threshold = args.threshold if args.threshold is not None else (0.8 if args.model else 0.0)
    image = Image.open(args.image).convert("RGB") if args.image else generated_image()

    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    result = processor.post_process_panoptic_segmentation(outputs, threshold=threshold,
                                                          target_sizes=[image.size[::-1]])[0]
    segmentation = result["segmentation"].cpu().numpy()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    colorize(segmentation).save(output)
    print(f"{len(result['segments_info'])} segments on a {segmentation.shape[1]}x{segmentation.shape[0]} image;"
          f" panoptic map written to {output}")
    for segment in result["segments_info"]:
        label = model.config.id2label.get(segment["label_id"], segment["label_id"])
        print(f"  id {segment['id']}: {label} (score {segment['score']:.3f})")
    return output


if __name__ == "__main__":
    main()
