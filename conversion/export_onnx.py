"""Export a MaskFormer, Mask2Former or video Mask2Former folder to ONNX, checked and ready for ONNX Runtime.

Usage::

    python -m conversion.export_onnx MODEL_FOLDER OUTPUT.onnx [--opset 18] [--batch-size N]
        [--height H --width W] [--frames T] [--fp16]

The graph (exporter: `torch.onnx.export(dynamo=True)`, i.e. `torch.export` + ONNX Script; the TorchScript
exporter freezes the spatial sizes, which enter the model as Python ints) has

- inputs `pixel_values [batch, 3, height, width]` (video: `pixel_values_videos [batch, frames, 3, height,
  width]`) and `pixel_mask [batch, height, width]` (int64, 1 on real pixels), exactly what the processors return.
  The mask does not change the logits (the models ignore padding, like the originals); it gives `image_sizes`;
- outputs `class_queries_logits [batch, queries, num_labels + 1]`, `masks_queries_logits [batch, queries,
  height / 4, width / 4]` (video: the mask tubes `[batch, queries, frames, height / 4, width / 4]`),
  `image_sizes [batch, 2]` and `padded_image_size [batch, 2]` (int64), the geometry the processors' `post_process_*`
  methods use to crop the padding.

Batch, height, width (and frames) are dynamic unless fixed with the options; dynamic heights and widths must be
multiples of 32 (what the processors produce with their default `size_divisor=32`), at least 64. Deformable attention exports
through its pure-PyTorch gather path (the Hub CUDA kernel is never used while exporting); its `embedding_bag` is
translated to `Gather` + `ReduceSum` (`embedding_bag_as_gather`), not the generic `Loop` of ONNX Script.
The exporter checks the graph with `onnx.checker` and writes the model's `config.json` and the processor config
beside the `.onnx` file.

Export time: with a Swin backbone and dynamic height/width, `torch.onnx`'s decomposition pass re-traces Swin's
window padding with symbolic sizes and takes many minutes (over 15 for a tiny Swin on a loaded 2-core machine);
fixed `--height/--width`, or a ResNet backbone, export in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import hf_maskformer_series as hms

MODEL_CLASSES = {
    hms.SeriesMask2FormerConfig.model_type: hms.SeriesMask2FormerForUniversalSegmentation,
    hms.SeriesMaskFormerConfig.model_type: hms.SeriesMaskFormerForInstanceSegmentation,
    hms.SeriesVideoMask2FormerConfig.model_type: hms.SeriesVideoMask2FormerForVideoInstanceSegmentation,
}
VIDEO_MODEL_TYPE = hms.SeriesVideoMask2FormerConfig.model_type
OUTPUT_NAMES = ("class_queries_logits", "masks_queries_logits", "image_sizes", "padded_image_size")
SPATIAL_MULTIPLE = 32
DEFAULT_OPSET = 18
MIN_DYNAMIC_SIDE = 64  # the coarsest (stride 32) map is at least 2x2
MAX_DYNAMIC_SIDE = 8192
MAX_DYNAMIC_BATCH = 1024
MAX_DYNAMIC_FRAMES = 1024


@dataclass(frozen=True)
class ExportShapes:
    """Fixed sizes of the exported graph; `None` makes the axis dynamic.

    Attributes:
        batch_size: images (videos) per call.
        height, width: padded input size (multiples of 32 when dynamic).
        frames: frames per video (video model only).
    """

    batch_size: int | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None


class OnnxExportWrapper(nn.Module):
    """The model's inference forward with ONNX-friendly inputs and outputs.

    `forward(pixel_values, pixel_mask)` → `(class_queries_logits, masks_queries_logits, image_sizes,
    padded_image_size)`; `pixel_values` is `[batch, 3, H, W]` (video: `[batch, frames, 3, H, W]`), `pixel_mask`
    `[batch, H, W]`. The geometry is computed with tensor ops from the mask (not from Python ints), so it follows
    the dynamic axes.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values, output_auxiliary_logits=False, return_dict=True)
        valid = pixel_mask > 0
        image_sizes = torch.stack((valid.any(-1).sum(-1), valid.any(-2).sum(-1)), dim=-1).to(torch.int64)
        ones = torch.ones_like(pixel_mask, dtype=torch.int64)
        padded_image_size = torch.stack((ones[:, :, 0].sum(-1), ones[:, 0, :].sum(-1)), dim=-1)
        return outputs.class_queries_logits, outputs.masks_queries_logits, image_sizes, padded_image_size


def load_series_model(folder: str | os.PathLike) -> nn.Module:
    """Load a saved model of this package (`config.json` with one of its `model_type`s), in eval mode.

    Raises:
        ValueError: the folder does not exist, has no `config.json`, or is not one of this package's models.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if not config_path.is_file():
        raise ValueError(f"{folder} has no config.json: not a saved model folder")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in MODEL_CLASSES:
        raise ValueError(
            f"{folder} holds a {model_type!r} model; the ONNX exporter handles this package's models only "
            f"({', '.join(sorted(MODEL_CLASSES))}); convert other checkpoints with conversion/convert_transformers.py "
            "or conversion/convert_original.py first"
        )
    return MODEL_CLASSES[model_type].from_pretrained(folder).eval()


def _is_video(model: nn.Module) -> bool:
    return getattr(model.config, "model_type", None) == VIDEO_MODEL_TYPE


def input_names(model: nn.Module) -> tuple[str, str]:
    """The graph's input names: the keys of the processor's output."""
    return ("pixel_values_videos" if _is_video(model) else "pixel_values", "pixel_mask")


def _check_shapes(shapes: ExportShapes, video: bool) -> None:
    for name in ("batch_size", "height", "width", "frames"):
        value = getattr(shapes, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if (shapes.height is None) != (shapes.width is None):
        raise ValueError("give both height and width (a fixed input size) or neither (dynamic sizes)")
    if shapes.height is not None and (shapes.height % SPATIAL_MULTIPLE or shapes.width % SPATIAL_MULTIPLE):
        raise ValueError(
            f"height and width must be multiples of {SPATIAL_MULTIPLE} (the processors pad to them), got "
            f"{shapes.height}x{shapes.width}"
        )
    if shapes.frames is not None and not video:
        raise ValueError("frames applies to the video model only")


def example_inputs(model: nn.Module, shapes: ExportShapes, dtype: torch.dtype = torch.float32):
    """Inputs to trace with: the fixed sizes, else 2 images (videos of 2 frames) of 64x96 (a distinct value per
    dynamic axis, so that the tracer cannot confuse them), the second one padded."""
    batch = shapes.batch_size or 2
    height, width = (shapes.height, shapes.width) if shapes.height is not None else (64, 96)
    channels = getattr(model.config.backbone_config, "num_channels", 3)
    generator = torch.Generator().manual_seed(0)
    if _is_video(model):
        frames = shapes.frames or 3
        pixel_values = torch.randn(batch, frames, channels, height, width, generator=generator, dtype=dtype)
    else:
        pixel_values = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    pixel_mask = torch.ones(batch, height, width, dtype=torch.int64)
    if batch > 1:
        pixel_mask[-1, height - height // 4 :] = 0
        pixel_mask[-1, :, width - width // 3 :] = 0
    return pixel_values, pixel_mask


def dynamic_shapes(model: nn.Module, shapes: ExportShapes) -> dict:
    """`torch.export` dynamic shapes of the wrapper's `(pixel_values, pixel_mask)` for the axes `shapes` leaves free
    (dynamic heights and widths: multiples of 32 from 64 to 8192)."""
    dim = torch.export.Dim
    batch = dim("batch", min=1, max=MAX_DYNAMIC_BATCH) if shapes.batch_size is None else None
    if shapes.height is None:
        blocks = dict(min=MIN_DYNAMIC_SIDE // SPATIAL_MULTIPLE, max=MAX_DYNAMIC_SIDE // SPATIAL_MULTIPLE)
        height = SPATIAL_MULTIPLE * dim("height_blocks", **blocks)
        width = SPATIAL_MULTIPLE * dim("width_blocks", **blocks)
    else:
        height = width = None
    spatial = {1: height, 2: width}
    if _is_video(model):
        frames = dim("frames", min=1, max=MAX_DYNAMIC_FRAMES) if shapes.frames is None else None
        values = {0: batch, 1: frames, 3: height, 4: width}
    else:
        values = {0: batch, 2: height, 3: width}
    return {
        "pixel_values": {axis: d for axis, d in values.items() if d is not None},
        "pixel_mask": {axis: d for axis, d in {0: batch, **spatial}.items() if d is not None},
    }


def embedding_bag_as_gather(
    weight,
    indices,
    offsets,
    scale_grad_by_freq: bool = False,
    mode: int = 0,
    sparse: bool = False,
    per_sample_weights=None,
    include_last_offset: bool = False,
    padding_idx: int = -1,
):
    """ONNX Script translation of `aten::_embedding_bag` for bags of equal size in "sum" mode.

    `F.embedding_bag` with 2-D `indices [bags, size]` (the deformable-attention gather) flattens them and passes
    `offsets = arange(0, bags * size, size)`; the bags are then rows of `indices.reshape(bags, size)`, and the op
    is `ReduceSum(Gather(weight, indices) * per_sample_weights, axis=1)`. `export_to_onnx` checks that every
    `embedding_bag` of the exported program has such offsets before using this translation. Only the first output
    (the bag sums) is meaningful; the other three are empty.
    """
    from onnxscript import opset18 as op

    if mode != 0 or include_last_offset:
        raise ValueError("embedding_bag_as_gather translates mode='sum' without include_last_offset only")
    rows = op.Gather(weight, indices, axis=0)  # [bags * size, dim]
    if per_sample_weights is not None:
        rows = op.Mul(rows, op.Unsqueeze(per_sample_weights, op.Constant(value_ints=[1])))
    bag_shape = op.Concat(op.Shape(offsets), op.Constant(value_ints=[-1]), op.Shape(weight, start=1), axis=0)
    sums = op.ReduceSum(op.Reshape(rows, bag_shape), op.Constant(value_ints=[1]), keepdims=0)
    empty = op.Constant(value_ints=[])
    return sums, empty, empty, empty


def _check_uniform_bags(program: torch.export.ExportedProgram) -> None:
    """Every `embedding_bag` must take `offsets = arange(0, n, size)` (bags of equal size)."""
    for node in program.graph.nodes:
        if node.op != "call_function" or "embedding_bag" not in str(node.target):
            continue
        offsets = node.args[2]
        if not (isinstance(offsets, torch.fx.Node) and "arange" in str(offsets.target)):
            raise ValueError(
                f"{node.target} with offsets from {getattr(offsets, 'target', offsets)}: only bags of equal size "
                "(2-D indices) export"
            )


def program_to_onnx(
    program: torch.export.ExportedProgram, inputs: Sequence[str], outputs: Sequence[str], opset: int = DEFAULT_OPSET
):
    """`torch.onnx.export` of an exported program, with `embedding_bag` as `Gather` + `ReduceSum`.

    Returns:
        The `torch.onnx.ONNXProgram`.
    """
    _check_uniform_bags(program)
    translations = {
        torch.ops.aten._embedding_bag.default: embedding_bag_as_gather,
        torch.ops.aten._embedding_bag_forward_only.default: embedding_bag_as_gather,
        torch.ops.aten.embedding_bag.padding_idx: embedding_bag_as_gather,
    }
    return torch.onnx.export(
        program, input_names=list(inputs), output_names=list(outputs), opset_version=opset, dynamo=True,
        custom_translation_table=translations, verbose=False,
    )


def export_to_onnx(
    model: nn.Module,
    output_path: str | os.PathLike,
    shapes: ExportShapes = ExportShapes(),
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
) -> Path:
    """Export `model` (one of the package's head models) to `output_path` and check the graph.

    Args:
        model: a `SeriesMask2FormerForUniversalSegmentation`, `SeriesMaskFormerForInstanceSegmentation` or
            `SeriesVideoMask2FormerForVideoInstanceSegmentation`.
        output_path: the `.onnx` file (written atomically; weights inside the file below 2 GB, else beside it).
        shapes: fixed sizes; the axes left `None` are dynamic.
        opset: ONNX opset version (18 or newer).
        fp16: export in float16 (inputs and outputs float16; meant for GPU execution providers).

    Returns:
        The path of the written file.
    """
    import onnx

    if not isinstance(model, tuple(MODEL_CLASSES.values())):
        raise ValueError(f"cannot export a {type(model).__name__}: expected one of the package's head models")
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    _check_shapes(shapes, _is_video(model))
    output_path = Path(output_path)
    dtype = torch.float16 if fp16 else torch.float32
    model = model.eval().to(dtype)
    backbone_config = getattr(model.model.pixel_level_module.encoder, "config", None)
    previous_attention = getattr(backbone_config, "_attn_implementation", None)
    if previous_attention is not None:
        # transformers' SDPA path of Swin does not survive torch.export's decompositions with symbolic sizes
        backbone_config._attn_implementation = "eager"
    wrapper = OnnxExportWrapper(model).eval()
    names = input_names(model)
    args = example_inputs(model, shapes, dtype)
    try:
        with torch.no_grad():
            program = torch.export.export(wrapper, args, dynamic_shapes=dynamic_shapes(model, shapes), strict=False)
    finally:
        if previous_attention is not None:
            backbone_config._attn_implementation = previous_attention
    onnx_program = program_to_onnx(program, names, OUTPUT_NAMES, opset)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_path.parent) as scratch:
        scratch_file = Path(scratch) / output_path.name
        proto = onnx_program.model_proto
        large = proto.ByteSize() > 2**31 - 2**20
        onnx_program.save(scratch_file, external_data=large)
        onnx.checker.check_model(str(scratch_file), full_check=True)
        for produced in Path(scratch).iterdir():
            os.replace(produced, output_path.parent / produced.name)
    return output_path


def write_processor_config(folder: str | os.PathLike, model: nn.Module, destination: str | os.PathLike) -> None:
    """Write the model's `config.json` (labels) and its processor's config beside the exported graph.

    The folder's own processor config is used when it has one, else the family's default processor.
    """
    from transformers import AutoImageProcessor, AutoVideoProcessor

    folder, destination = Path(folder), Path(destination)
    if _is_video(model):
        try:
            processor = AutoVideoProcessor.from_pretrained(folder)
        except (OSError, ValueError):
            processor = hms.SeriesVideoMask2FormerVideoProcessor()
    else:
        try:
            processor = AutoImageProcessor.from_pretrained(folder)
        except (OSError, ValueError):
            default = (
                hms.SeriesMaskFormerImageProcessor
                if isinstance(model, hms.SeriesMaskFormerForInstanceSegmentation)
                else hms.SeriesMask2FormerImageProcessor
            )
            processor = default()
    with tempfile.TemporaryDirectory(dir=destination) as scratch:
        processor.save_pretrained(scratch)
        model.config.to_json_file(Path(scratch) / "config.json")
        for produced in Path(scratch).iterdir():
            os.replace(produced, destination / produced.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_folder", help="a saved SeriesMask2Former / SeriesMaskFormer / video model folder")
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--batch-size", type=int, default=None, help="fixed batch size (default: dynamic)")
    parser.add_argument("--height", type=int, default=None, help="fixed padded input height (default: dynamic)")
    parser.add_argument("--width", type=int, default=None, help="fixed padded input width (default: dynamic)")
    parser.add_argument("--frames", type=int, default=None, help="video model: fixed frames (default: dynamic)")
    parser.add_argument("--fp16", action="store_true", help="float16 graph (for GPU execution providers)")
    args = parser.parse_args(argv)
    if not args.output.endswith(".onnx"):
        parser.error(f"the output must be a .onnx file, got {args.output}")
    try:
        model = load_series_model(args.model_folder)
        shapes = ExportShapes(args.batch_size, args.height, args.width, args.frames)
        path = export_to_onnx(model, args.output, shapes, opset=args.opset, fp16=args.fp16)
        write_processor_config(args.model_folder, model, path.parent)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {path} (+ config.json and the processor config beside it)")


if __name__ == "__main__":
    main()
