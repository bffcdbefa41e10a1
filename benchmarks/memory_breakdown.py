"""Where a training step's memory goes: tensors kept for backward, by module, and the live-tensor peak.

One model (ours or transformers', the same seeded random weights as `bench_models`), one training step (forward,
backward, AdamW), CPU, one process:

- *kept for backward*: every tensor autograd saves during the forward (`torch.autograd.graph.saved_tensors_hooks`,
  custom autograd Functions included), counted once per storage and attributed to the innermost module that was
  running, grouped to `--depth` name components;
- *live peak*: the high-water mark of the bytes held by tensors over two steps (PyTorch profiler memory events),
  and the phase it falls in; the optimizer state is allocated by the first step, so the second step's peak is the
  steady one. Peak RSS (what `bench_models` reports) adds the allocator's retained memory on top.

    python -m benchmarks.memory_breakdown --family mask2former --implementation ours --size 512 --masks 60
    python -m benchmarks.memory_breakdown --family maskformer --depth 11 --by-source --no-live --top 60

`--by-source` splits each module's bytes by the source line (in this package or transformers) that saved them
and the tensor's shape: where to look for the next saving.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_models  # noqa: E402


def _model(family: str, backbone: str, implementation: str, folder: Path):
    import transformers

    family_info = bench_models.FAMILIES[family]
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        theirs = getattr(transformers, family_info.their_model)(
            bench_models.their_config(family_info, backbone, quick=False)
        )
        bench_models._spread_untrained_parameters(theirs, class_scale=8.0)
        theirs.save_pretrained(folder)
    return bench_models._load_for_training(family_info, implementation, str(folder), "cpu")


def _source_line() -> str:
    """`file:line` of the innermost frame in the package or in transformers that is running (the op's caller)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if ("hf_maskformer_series" in path or "transformers" in path) and "torch" not in Path(path).parts:
            return f"{Path(path).name}:{frame.f_lineno}"
        frame = frame.f_back
    return "(elsewhere)"


def saved_bytes_by_module(model, step_inputs: dict, depth: int,
                          by_source: bool = False) -> tuple[collections.Counter, int]:
    """Bytes autograd keeps for backward during one forward, by module name (first `depth` components), or with
    `by_source` by module and the source line that saved it, with the tensor's shape."""
    names = {module: name for name, module in model.named_modules()}
    stack = ["(model)"]

    def enter(module, args) -> None:
        stack.append(names[module])

    def leave(module, args, output) -> None:
        stack.pop()

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    parameters = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    seen: set[int] = set()
    by_module: collections.Counter = collections.Counter()

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            key = ".".join(stack[-1].split(".")[:depth]) or "(model)"
            if by_source:
                key += f"  {_source_line()}  {tuple(tensor.shape)}"
            by_module[key] += storage.nbytes()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = model(**step_inputs).loss
    finally:
        for handle in handles:
            handle.remove()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return by_module, sum(by_module.values())


def live_peak(model, step_inputs: dict) -> dict:
    """Live-tensor bytes over two training steps: the peak, its phase, and each phase's start / max / end."""
    from torch.profiler import ProfilerActivity, profile, record_function

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.05)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        for step in range(2):
            torch.manual_seed(step)
            with record_function(f"step{step + 1}.forward"):
                outputs = model(**step_inputs)  # kept through the step, as in bench_models' training child
            with record_function(f"step{step + 1}.backward"):
                outputs.loss.backward()
            with record_function(f"step{step + 1}.optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            del outputs
    events = profiler.profiler.kineto_results.events()
    changes = sorted((event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]")
    phases = sorted((event.start_ns(), event.end_ns(), event.name()) for event in events
                    if event.name().startswith("step") and "." in event.name())
    live, timeline = 0, []
    for time_ns, change in changes:
        live += change
        timeline.append((time_ns, live))
    summary = {}
    for start, end, name in phases:
        values = [value for time_ns, value in timeline if start <= time_ns <= end]
        if values:
            summary[name] = (values[0], max(values), values[-1])
    peak_phase = max(summary, key=lambda name: summary[name][1])
    return {"peak": summary[peak_phase][1], "phase": peak_phase, "phases": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="mask2former", choices=sorted(bench_models.FAMILIES))
    parser.add_argument("--backbone", default="swin", choices=["swin", "resnet"])
    parser.add_argument("--implementation", default="ours", choices=["ours", "theirs"])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--masks", type=int, default=10, help="target masks per image")
    parser.add_argument("--depth", type=int, default=4, help="module-name components to group by")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--by-source", action="store_true",
                        help="group by module, the source line that saved each tensor and its shape")
    parser.add_argument("--top", type=int, default=25, help="groups listed")
    parser.add_argument("--no-live", action="store_true", help="skip the live-tensor peak (profiler) part")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mib = 2**20
    with tempfile.TemporaryDirectory() as folder:
        model = _model(args.family, args.backbone, args.implementation, Path(folder))
        generator = torch.Generator().manual_seed(11)
        pixel_values = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
        mask_labels, class_labels = bench_models.training_targets(
            args.batch, args.size, args.masks, model.config.num_labels,
            segment_maps=args.implementation == "ours",  # ours with lean targets, as the memory row of bench_models
        )
        inputs = dict(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels)
        by_module, total = saved_bytes_by_module(model, inputs, args.depth, args.by_source)
        print(f"{args.family} {args.backbone} {args.implementation}, {args.size}², batch {args.batch}, "
              f"{args.masks} masks per image")
        print(f"kept for backward: {total / mib:.0f} MiB")
        for name, size in by_module.most_common(args.top):
            print(f"  {size / mib:8.1f} MiB  {name}")
        if args.no_live:
            return
        peak = live_peak(model, inputs)
        print(f"live-tensor peak: {peak['peak'] / mib:.0f} MiB, in {peak['phase']}")
        for name, (start, largest, end) in peak["phases"].items():
            print(f"  {name:18s} start {start / mib:7.0f}  max {largest / mib:7.0f}  end {end / mib:7.0f} MiB")


if __name__ == "__main__":
    main()
