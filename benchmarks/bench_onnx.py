"""ONNX Runtime (fp32, dynamic int8) against PyTorch fp32: speed with the same weights, agreement, and PQ.

    python -m benchmarks.bench_onnx [--model outputs/train_panoptic] [--sizes 384,512] [--threads 2]
        [--repeats 7] [--pq] [--markdown FILE]

One graph with dynamic axes is exported (`conversion/export_onnx.py`) and quantized
(`conversion/onnx_runtime.quantize_dynamic_int8`); the three runners then take turns on the same inputs
(`benchmarks.common.time_interleaved`), batch 1 at each size. Agreement: max |ORT - PyTorch| of the logits (fp32
must stay below 1e-4) and, for int8, the share of pixels whose semantic class (the processor's semantic
post-processing) equals PyTorch's. `--pq` evaluates the model on the synthetic panoptic val split with each runner
(the training script's own `evaluate`), which needs a trained model (`accelerate launch
examples/train_panoptic.py` writes one to outputs/train_panoptic).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import hf_maskformer_series as hms
from benchmarks.common import format_seconds, markdown_table, time_interleaved
from conversion.export_onnx import OUTPUT_NAMES, ExportShapes, OnnxExportWrapper, export_to_onnx, load_series_model
from conversion.onnx_runtime import create_session, quantize_dynamic_int8, run_session

FP32_TOLERANCE = 1e-4


def _inputs(size: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(1, 3, size, size, generator=generator),
            "pixel_mask": torch.ones(1, size, size, dtype=torch.int64)}


class OrtModel:
    """Duck-types the bits of a PyTorch model that the examples' evaluation uses; exports (and, with `int8`,
    quantizes) one fixed-size graph per input shape it meets (the evaluation pads every batch to one size)."""

    training = False

    def __init__(self, model: torch.nn.Module, folder: Path, int8: bool, threads: int):
        self.model, self.folder, self.int8, self.threads = model, folder, int8, threads
        self.sessions: dict[tuple[int, ...], object] = {}

    def eval(self) -> OrtModel:
        return self

    def parameters(self):
        yield torch.zeros(())

    def __call__(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> dict[str, np.ndarray]:
        batch, _, height, width = pixel_values.shape
        if (batch, height, width) not in self.sessions:
            name = f"eval_{batch}x{height}x{width}"
            path = export_to_onnx(self.model, self.folder / f"{name}.onnx", ExportShapes(batch, height, width))
            if self.int8:
                path = quantize_dynamic_int8(path, self.folder / f"{name}.int8.onnx")
            self.sessions[batch, height, width] = create_session(path, intra_op_threads=self.threads)
        return run_session(self.sessions[batch, height, width], {"pixel_values": pixel_values, "pixel_mask": pixel_mask})


def panoptic_quality(runners: dict, model_folder: str) -> dict[str, float]:
    """PQ (%) of each runner on the synthetic panoptic val split, with the examples' own evaluation
    (`examples/inference.evaluate_model`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from inference import evaluate_model, make_accelerator
    from segmentation_training import parse_args
    from task_common import get_task

    arguments = json.loads((Path(model_folder) / "training_args.json").read_text())
    args = parse_args("panoptic", [])
    for key, value in arguments.items():
        setattr(args, key, value)
    task = get_task("panoptic")
    data = task.load_data(args, make_accelerator(cpu=True), splits=[args.validation_split])
    processor = hms.SeriesMask2FormerImageProcessor.from_pretrained(model_folder)
    return {name: evaluate_model(task, model, processor, data.validation, data.labels, args)[0]["pq"]
            for name, model in runners.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="outputs/train_panoptic", help="a saved Mask2Former folder")
    parser.add_argument("--sizes", default="384,512")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pq", action="store_true", help="also PQ on the synthetic val split")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_series_model(args.model)
    wrapper = OnnxExportWrapper(model).eval()
    scratch = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    processor = hms.SeriesMask2FormerImageProcessor()

    rows, export_seconds, sessions = [], {}, {}
    for size in [int(s) for s in args.sizes.split(",")]:
        # one fixed-size graph per input size: with a Swin backbone, symbolic spatial sizes make the export take
        # many minutes (see conversion/export_onnx.py)
        started = time.perf_counter()
        fp32_path = export_to_onnx(model, scratch / f"model_{size}.onnx", ExportShapes(1, size, size))
        export_seconds[size] = time.perf_counter() - started
        int8_path = quantize_dynamic_int8(fp32_path, scratch / f"model_{size}.int8.onnx")
        sessions = {"ort-fp32": create_session(fp32_path, intra_op_threads=args.threads),
                    "ort-int8": create_session(int8_path, intra_op_threads=args.threads)}
        inputs = _inputs(size, seed=size)
        with torch.no_grad():
            reference = dict(zip(OUTPUT_NAMES, wrapper(*inputs.values())))
        reference_semantic = processor.post_process_semantic_segmentation(reference)[0]
        agreement = {}
        for name, session in sessions.items():
            outputs = run_session(session, inputs)
            error = max(float(np.abs(outputs[key] - reference[key].numpy()).max())
                        for key in ("class_queries_logits", "masks_queries_logits"))
            semantic = processor.post_process_semantic_segmentation(outputs)[0]
            agreement[name] = (error, float((semantic == reference_semantic).float().mean()))
        if agreement["ort-fp32"][0] > FP32_TOLERANCE:
            raise AssertionError(f"ORT fp32 differs from PyTorch by {agreement['ort-fp32'][0]:.2e} at {size}")

        def pytorch_call(inputs=inputs):
            with torch.inference_mode():
                wrapper(*inputs.values())

        cases = {"pytorch-fp32": pytorch_call}
        for name, session in sessions.items():
            cases[name] = lambda session=session, inputs=inputs: run_session(session, inputs)
        timings = time_interleaved(cases, repeats=args.repeats, warmup=2)
        base = timings["pytorch-fp32"].median
        for name, timing in timings.items():
            error, pixels = agreement.get(name, (0.0, 1.0))
            rows.append([f"{size}²", name, format_seconds(timing.median), f"×{base / timing.median:.2f}",
                         f"{timing.spread:.0%}", f"{error:.1e}", f"{100 * pixels:.2f}%"])
    table = markdown_table(["input", "runner", "median", "speed-up vs PyTorch", "spread", "max abs Δ logits",
                            "semantic pixels = PyTorch"], rows)
    exports = ", ".join(f"{size}²: {seconds:.0f} s" for size, seconds in export_seconds.items())
    report = [f"Model: {args.model}; {args.threads} threads; {args.repeats} interleaved rounds; exports took "
              f"{exports}.", "", table]
    if args.pq:
        runners = {"pytorch-fp32": model, **{name: OrtModel(model, scratch, name == "ort-int8", args.threads)
                                             for name in sessions}}
        pq = panoptic_quality(runners, args.model)
        report += ["", markdown_table(["runner", "PQ (synthetic val)"], [[k, f"{v:.2f}"] for k, v in pq.items()])]
    text = "\n".join(report)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
