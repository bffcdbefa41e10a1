"""Timing and memory helpers of the benchmarks: interleaved runs, warm-up, medians, peak memory, markdown tables.

Nothing here knows about models; `bench_models.py` builds the cases and calls these helpers.
"""

from __future__ import annotations

import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

_STATUS = "/proc/self/status"


def synchronize(device: str | torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU), so wall-clock timings cover the work itself."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _status_kib(field_name: str) -> int | None:
    try:
        with open(_STATUS) as handle:
            match = re.search(rf"^{field_name}:\s+(\d+)\s+kB", handle.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def current_rss_mib() -> float:
    """Resident set size of this process in MiB (`/proc/self/status`, else the peak from `resource`)."""
    value = _status_kib("VmRSS")
    if value is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return value / 1024


def peak_rss_mib() -> float:
    """High-water mark of the resident set size in MiB since the process started or the last `reset_peak_rss`."""
    value = _status_kib("VmHWM")
    if value is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return value / 1024


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark (Linux `clear_refs` 5). Returns False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@dataclass
class MemoryProbe:
    """Peak memory of a block of work: peak RSS (CPU) or `torch.cuda.max_memory_allocated` (CUDA), in MiB.

    `peak` is the process' high-water mark during the block, `baseline` the memory in use when it started; their
    difference is what the block itself needed on top of what was already resident.
    """

    device: str = "cpu"
    baseline: float = 0.0
    peak: float = 0.0
    exact_reset: bool = True

    def __enter__(self) -> MemoryProbe:
        gc.collect()
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated() / 2**20
        else:
            self.exact_reset = reset_peak_rss()
            self.baseline = current_rss_mib()
        return self

    def __exit__(self, *exc) -> None:
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak = peak_rss_mib()

    @property
    def extra(self) -> float:
        return self.peak - self.baseline


@dataclass
class Timings:
    """Seconds of every timed run of one case."""

    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the runs were."""
        if len(self.runs) < 2:
            return 0.0
        return (max(self.runs) - min(self.runs)) / self.median


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_interleaved(
    cases: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: str = "cpu",
    min_seconds: float = 0.0,
    max_repeats: int | None = None,
    clock: str = "wall",
) -> dict[str, Timings]:
    """Time several callables side by side: warm-up, then rounds in which every case runs once.

    The order inside a round alternates (forward, then reversed), so slow drifts of the machine (thermal, other
    processes) hit every case alike. Runs continue past `repeats` rounds while the total time is below
    `min_seconds` (for very fast cases), up to `max_repeats` rounds.

    `clock="cpu"` measures the CPU seconds of this process instead of wall time: on a machine shared with other
    jobs it counts the work done, not the waiting for a core (use it with 1 thread: idle worker threads that
    spin would be counted too).

    Returns:
        name -> `Timings` with one entry per round.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    timer = CLOCKS[clock]
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    synchronize(device)
    results = {name: Timings() for name in names}
    max_repeats = max_repeats or max(repeats, 1000)
    started = time.perf_counter()
    round_index = 0
    while round_index < repeats or (time.perf_counter() - started < min_seconds and round_index < max_repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            synchronize(device)
            begin = timer()
            cases[name]()
            synchronize(device)
            results[name].runs.append(timer() - begin)
        round_index += 1
    return results


def run_child(args: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None) -> dict:
    """Run `python -m benchmarks.bench_models <args>` in a fresh process; it prints one JSON line last.

    A separate process gives a clean peak-memory measurement (nothing else of the benchmark is resident).
    """
    command = [sys.executable, "-m", "benchmarks.bench_models", *args]
    child_env = dict(os.environ)
    child_env.update(env or {})
    completed = subprocess.run(
        command, capture_output=True, text=True, env=child_env, timeout=timeout,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-5000:]}")
    last_line = [line for line in completed.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last_line)


def format_seconds(seconds: float) -> str:
    """A human duration: µs / ms / s with 3 significant digits."""
    if seconds != seconds:  # nan
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (cells converted with `str`)."""
    widths = [len(str(header)) for header in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(str(cell)))

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(headers), separator, *(line(row) for row in rows)])
