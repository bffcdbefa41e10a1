"""The benchmark's quick mode: every agreement check between our models / processors and transformers' passes.

Only the checks run (no timing is asserted): same weights through the checkpoint compatibility, logits to 1e-4,
identical preprocessing and target encoding, matching post-processed segments and first-step training losses.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_models import (
    Result,
    Settings,
    format_report,
    run_benchmarks,
    synthetic_outputs,
)
from benchmarks.common import markdown_table, time_interleaved


@pytest.fixture(scope="module")
def quick_results() -> list[Result]:
    settings = Settings.quick_settings(
        checks_only=True, families=("mask2former",), backbones=("swin",),
        sections=("processor", "forward", "postprocess", "pipeline", "bf16", "train", "video"),
    )
    results, environment = run_benchmarks(settings, log=lambda text: None)
    report = format_report(results, environment)
    assert "Forward (eval)" in report and "Post-processing" in report
    return results


def test_every_section_reports(quick_results):
    sections = {result.section for result in quick_results}
    assert {"processor", "encode", "forward", "postprocess", "pipeline", "bf16", "train"} <= sections
    assert len([result for result in quick_results if result.section == "postprocess"]) == 3
    assert len([result for result in quick_results if result.section == "encode"]) == 2  # one-hot and lean
    assert len([result for result in quick_results if result.section == "train"]) == 2


def test_bf16_rows_check_sign_agreement(quick_results):
    rows = [result for result in quick_results if result.section == "bf16"]
    assert len(rows) == 2  # forward at the quick size, pipeline
    for row in rows:
        assert row.agreement.startswith("mask-logit sign agreement")
        assert float(row.agreement.split()[3]) >= 0.98  # tiny random models; full size: 0.99


def test_lean_target_rows_compare_with_the_one_hot_form(quick_results):
    """The lean rows (segment maps) agree exactly with transformers' one-hot targets."""
    rows = [row for row in quick_results if "lean" in row.case]
    assert len(rows) == 2  # encoding and the training step
    for row in rows:
        assert row.agrees, row.agreement
        assert "identical" in row.agreement or "loss rel. diff" in row.agreement


@pytest.mark.parametrize(
    "section", ["processor", "encode", "forward", "postprocess", "pipeline", "bf16", "train", "video"]
)
def test_agreement_checks_pass(quick_results, section):
    rows = [result for result in quick_results if result.section == section]
    failed = [f"{row.model} {row.case}: {row.agreement}" for row in rows if not row.agrees]
    assert not failed, failed


def test_forward_logits_agree_to_1e4(quick_results):
    for row in quick_results:
        if row.section == "forward":
            assert row.agreement.startswith("logits max diff")
            assert float(row.agreement.split()[-1]) <= 1e-4


def test_maskformer_forward_agrees():
    settings = Settings.quick_settings(checks_only=True, families=("maskformer",), backbones=("resnet",),
                                       sections=("forward",))
    results, _ = run_benchmarks(settings, log=lambda text: None)
    assert results and all(result.agrees for result in results), [result.agreement for result in results]


def test_timing_helpers_interleave_and_take_medians():
    calls = []
    timings = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    # warm-up a, b; then rounds alternate their order
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert all(len(timing.runs) == 3 and timing.median >= 0 for timing in timings.values())
    table = markdown_table(["x", "y"], [[1, "long cell"]])
    assert table.splitlines()[0] == "| x | y         |"
    assert table.splitlines()[1] == "|---|-----------|"


def test_synthetic_outputs_have_the_requested_confident_queries():
    outputs = synthetic_outputs(100, 133, (96, 128), 20, image_size=(384, 512))
    scores, labels = outputs.class_queries_logits[0].softmax(-1).max(-1)
    confident = (scores > 0.9) & (labels != 133)
    assert int(confident.sum()) == 20 and len(set(labels[confident].tolist())) == 20
    assert outputs.masks_queries_logits.shape == (1, 100, 96, 128)
    assert torch.equal(outputs.image_sizes, torch.tensor([[384, 512]]))


def test_cpu_clock_counts_work_and_unknown_clocks_fail():
    def busy():
        total = 0
        for index in range(20000):
            total += index
        return total

    timings = time_interleaved({"busy": busy}, repeats=2, warmup=0, clock="cpu")
    assert len(timings["busy"].runs) == 2 and timings["busy"].median > 0
    with pytest.raises(ValueError, match="clock must be one of"):
        time_interleaved({"busy": busy}, repeats=1, clock="gpu")
