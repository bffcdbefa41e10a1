"""Multi-scale deformable attention: this package's fallback against transformers' `multi_scale_deformable_attention`.

Shapes of a 512×512 Mask2Former input: levels 64², 32², 16² (strides 8, 16, 32), 8 heads × 32 channels, 4 points
per level, one query per pixel of the 3 levels (the pixel-decoder encoder). Sampling locations are, as in a
trained model, each query's own reference point plus offsets of a few pixels (`--spread`, standard deviation in
pixels of each level); `--uniform` samples anywhere instead. Both implementations run in the same process,
interleaved (the order alternates), on the same inputs; the outputs must agree within 1e-5 and the gradients
within 1e-5 relative to their largest entry. Reported times are medians after warm-up.

    python benchmarks/bench_msda.py --threads 2             # CPU, float32
    python benchmarks/bench_msda.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402
from transformers.models.mask2former.modeling_mask2former import (  # noqa: E402
    multi_scale_deformable_attention as transformers_msda,
)

from hf_maskformer_series.ms_deform_attn import multi_scale_deformable_attention as ours_msda  # noqa: E402

SPATIAL_SHAPES = [(64, 64), (32, 32), (16, 16)]
HEADS, HEAD_DIM, POINTS = 8, 32, 4


def make_inputs(batch: int, device: str, dtype: torch.dtype, spread: float, uniform: bool, seed: int = 0):
    """value `[B, S, 8, 32]`, locations `[B, S, 8, 3, 4, 2]`, weights `[B, S, 8, 3, 4]` (S = Q = 5376)."""
    generator = torch.Generator().manual_seed(seed)
    levels = len(SPATIAL_SHAPES)
    sequence = sum(h * w for h, w in SPATIAL_SHAPES)
    value = torch.randn(batch, sequence, HEADS, HEAD_DIM, generator=generator)
    if uniform:
        locations = torch.rand(batch, sequence, HEADS, levels, POINTS, 2, generator=generator) * 1.2 - 0.1
    else:
        centres = []
        for height, width in SPATIAL_SHAPES:
            ys, xs = torch.meshgrid((torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width,
                                    indexing="ij")
            centres.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
        reference = torch.cat(centres).view(1, sequence, 1, 1, 1, 2)
        sizes = torch.tensor([[w, h] for h, w in SPATIAL_SHAPES], dtype=torch.float32).view(1, 1, 1, levels, 1, 2)
        offsets = torch.randn(batch, sequence, HEADS, levels, POINTS, 2, generator=generator) * spread
        locations = reference + offsets / sizes
    logits = torch.randn(batch, sequence, HEADS, levels * POINTS, generator=generator)
    weights = logits.softmax(-1).view(batch, sequence, HEADS, levels, POINTS)
    return [t.to(device=device, dtype=dtype) for t in (value, locations, weights)]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run(fn, inputs, backward: bool, grad_output=None):
    value, locations, weights = inputs
    if not backward:
        with torch.no_grad():
            return fn(value, SPATIAL_SHAPES, locations, weights), None
    leaves = [t.detach().requires_grad_() for t in inputs]
    output = fn(leaves[0], SPATIAL_SHAPES, leaves[1], leaves[2])
    grads = torch.autograd.grad(output, leaves, grad_output)
    return output.detach(), grads


def timed(fn, inputs, backward, grad_output, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run(fn, inputs, backward, grad_output)
    synchronize(device)
    return time.perf_counter() - start


def check_equal(inputs, backward, grad_output):
    reference, reference_grads = run(transformers_msda, inputs, backward, grad_output)
    output, grads = run(ours_msda, inputs, backward, grad_output)
    output_error = (output.float() - reference.float()).abs().max().item()
    assert output_error <= 1e-5, f"outputs differ by {output_error}"
    grad_error = 0.0
    if backward:
        for mine, theirs in zip(grads, reference_grads):
            scale = theirs.float().abs().max().item()
            grad_error = max(grad_error, (mine.float() - theirs.float()).abs().max().item() / scale)
        assert grad_error <= 1e-5, f"gradients differ by {grad_error} (relative to their largest entry)"
    return output_error, grad_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--spread", type=float, default=2.0, help="offset std in pixels of each level")
    parser.add_argument("--uniform", action="store_true", help="sampling locations uniform over the maps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    device_name = platform.processor() or platform.machine()
    if args.device == "cuda":
        device_name = torch.cuda.get_device_name()
    print(f"device: {args.device} ({device_name}), threads: {torch.get_num_threads()}, dtype: {args.dtype}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}, "
          f"load average before the run: {os.getloadavg()[0]:.1f}")
    print(f"locations: {'uniform' if args.uniform else f'reference point + N(0, {args.spread} px)'}; "
          f"median of {args.repeats} interleaved runs after {args.warmup} warm-up runs\n")
    print("| batch | pass | transformers (ms) | ours (ms) | speed-up | max abs diff (out) | max rel diff (grads) |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batches:
        inputs = make_inputs(batch, args.device, dtype, args.spread, args.uniform)
        sequence = inputs[0].shape[1]
        grad_output = torch.randn(batch, sequence, HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(1))
        grad_output = grad_output.to(device=args.device, dtype=dtype)
        for backward in (False, True):
            # equality is checked in float32 (half precision differs from transformers by rounding, not method)
            check_inputs = [t.float() for t in inputs] if dtype != torch.float32 else inputs
            output_error, grad_error = check_equal(check_inputs, backward, grad_output.float())
            for _ in range(args.warmup):
                timed(transformers_msda, inputs, backward, grad_output, args.device)
                timed(ours_msda, inputs, backward, grad_output, args.device)
            times = {"transformers": [], "ours": []}
            for repeat in range(args.repeats):
                order = ["transformers", "ours"] if repeat % 2 == 0 else ["ours", "transformers"]
                for name in order:
                    fn = transformers_msda if name == "transformers" else ours_msda
                    times[name].append(timed(fn, inputs, backward, grad_output, args.device))
            reference_ms = statistics.median(times["transformers"]) * 1e3
            ours_ms = statistics.median(times["ours"]) * 1e3
            pass_name = "forward + backward" if backward else "forward"
            grads = f"{grad_error:.1e}" if backward else "—"
            print(f"| {batch} | {pass_name} | {reference_ms:.1f} | {ours_ms:.1f} | {reference_ms / ours_ms:.2f}× "
                  f"| {output_error:.1e} | {grads} |", flush=True)


if __name__ == "__main__":
    main()
