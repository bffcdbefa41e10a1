"""Multi-scale deformable attention: the exact fallback, and the Hub-kernel loading policy (no network, no GPU).

The kernel tests build kernel repositories on disk, laid out like a Hub kernel (`build/torch-universal/<package>/`
with `layers.py` and `metadata.json`), and load them through `kernels` itself (`LocalLayerRepository`, and
`LOCAL_KERNELS` for the pinned repository id), mapped for device "cpu".
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants
import kernels
import kernels.layer.layer
import pytest
import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    multi_scale_deformable_attention as transformers_msda,
)

from hf_maskformer_series import kernel_loading
from hf_maskformer_series.kernel_loading import (
    DISABLE_KERNELS_ENV,
    KERNEL_REPO_ID,
    HubKernelsMixin,
    MultiScaleDeformableAttention,
    hub_kernel_failure,
    kernel_forward_pre_hook,
    maybe_kernelize,
    reset_hub_kernel_state,
)
from hf_maskformer_series.ms_deform_attn import attention_weights_softmax, multi_scale_deformable_attention

FIXTURES = Path(__file__).parent / "fixtures"
LOGGER = "hf_maskformer_series.kernel_loading"

# An independent implementation written like a compiled kernel: it reads `level_start_index` and
# `value_spatial_shapes`, asserts the compiled op's input requirements, and records its calls.
WORKING_KERNEL = '''
import torch
import torch.nn.functional as F
from torch import nn

CALLS = []


class MultiScaleDeformableAttention(nn.Module):
    def forward(self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index,
                sampling_locations, attention_weights, im2col_step):
        batch, _, heads, head_dim = value.shape
        if not value.is_contiguous():
            raise RuntimeError("value tensor has to be contiguous")
        if batch % min(batch, im2col_step) != 0:
            raise RuntimeError("batch must divide im2col_step")
        CALLS.append(batch)
        _, queries, _, levels, points, _ = sampling_locations.shape
        output = value.new_zeros(batch, heads, head_dim, queries)
        for level in range(levels):
            start = int(level_start_index[level])
            height, width = (int(s) for s in value_spatial_shapes[level])
            level_value = value[:, start:start + height * width].permute(0, 2, 3, 1)
            level_value = level_value.reshape(batch * heads, head_dim, height, width)
            grid = 2 * sampling_locations[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 2) - 1
            sampled = F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            weight = attention_weights[:, :, :, level].transpose(1, 2).reshape(batch * heads, 1, queries, points)
            output += (sampled * weight).sum(-1).view(batch, heads, head_dim, queries)
        return output.permute(0, 3, 1, 2).reshape(batch, queries, heads * head_dim)
'''

BROKEN_KERNEL = '''
from torch import nn

CALLS = []


class MultiScaleDeformableAttention(nn.Module):
    def forward(self, value, value_spatial_shapes, value_spatial_shapes_list, level_start_index,
                sampling_locations, attention_weights, im2col_step):
        CALLS.append(value.shape[0])
        raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
'''


def build_kernel_repo(root: Path, layers_source: str) -> tuple[Path, str]:
    """A kernel repository as on the Hub: `build/torch-universal/{metadata.json, <package>/__init__.py, layers.py}`.

    Returns the repository path and the kernel id (its module is `sys.modules[f"{id}.layers"]`).
    """
    kernel_id = f"msda_test_{uuid.uuid4().hex[:10]}"
    variant = root / "build" / "torch-universal"
    package = variant / "msda_test_kernel"
    package.mkdir(parents=True)
    metadata = {
        "id": kernel_id,
        "name": "msda-test-kernel",
        "version": 1,
        "license": "Apache-2.0",
        "python-depends": [],
        "backend": {"type": "cpu"},
    }
    (variant / "metadata.json").write_text(json.dumps(metadata))
    (package / "__init__.py").write_text("from . import layers\n")
    (package / "layers.py").write_text(layers_source)
    return root, kernel_id


def kernel_calls(kernel_id: str) -> list:
    return sys.modules[f"{kernel_id}.layers"].CALLS


def local_repository(path: Path):
    return kernels.LocalLayerRepository(repo_path=path, layer_name="MultiScaleDeformableAttention")


@pytest.fixture(autouse=True)
def clean_kernel_state(monkeypatch):
    """Every test starts without loaded kernels, failures, switches or kernels' own layer cache."""
    reset_hub_kernel_state()
    kernel_loading._load_failures.clear()
    monkeypatch.setattr(kernels.layer.layer, "_CACHED_LAYER", {})
    monkeypatch.delenv(DISABLE_KERNELS_ENV, raising=False)
    monkeypatch.delenv("LOCAL_KERNELS", raising=False)
    yield
    reset_hub_kernel_state()
    kernel_loading._load_failures.clear()


@pytest.fixture
def working_kernel(tmp_path):
    return build_kernel_repo(tmp_path / "working", WORKING_KERNEL)


def random_case(batch=2, spatial_shapes=((6, 5), (3, 3), (2, 1)), heads=2, head_dim=4, queries=7, points=3,
                dtype=torch.float32, seed=0):
    """Inputs of the op; about 1 in 6 sampling points lies outside the maps."""
    generator = torch.Generator().manual_seed(seed)
    levels = len(spatial_shapes)
    sequence = sum(h * w for h, w in spatial_shapes)
    value = torch.randn(batch, sequence, heads, head_dim, generator=generator, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=torch.float64)
    locations = locations * 1.3 - 0.15
    logits = torch.randn(batch, queries, heads, levels * points, generator=generator, dtype=torch.float64)
    weights = logits.softmax(-1).view(batch, queries, heads, levels, points)
    shapes_list = [tuple(s) for s in spatial_shapes]
    shapes = torch.tensor(shapes_list, dtype=torch.long)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return {
        "value": value.to(dtype),
        "value_spatial_shapes": shapes,
        "value_spatial_shapes_list": shapes_list,
        "level_start_index": starts,
        "sampling_locations": locations.to(dtype),
        "attention_weights": weights.to(dtype),
        "im2col_step": 64,
    }


def op_args(case):
    return (
        case["value"],
        case["value_spatial_shapes"],
        case["value_spatial_shapes_list"],
        case["level_start_index"],
        case["sampling_locations"],
        case["attention_weights"],
        case["im2col_step"],
    )


def fallback(case):
    return multi_scale_deformable_attention(
        case["value"], case["value_spatial_shapes_list"], case["sampling_locations"], case["attention_weights"]
    )


class TinyModel(nn.Module):
    """A parameter (it sets the device), a config with `use_kernels`, and two deformable-attention layers."""

    def __init__(self, use_kernels=True):
        super().__init__()
        self.config = SimpleNamespace(use_kernels=use_kernels)
        self.scale = nn.Parameter(torch.ones(()))
        self.attn = MultiScaleDeformableAttention()
        self.other = MultiScaleDeformableAttention()

    def forward(self, *args):
        return self.attn(*args) * self.scale


def records(caplog, level=logging.INFO, name=LOGGER):
    return [r for r in caplog.records if r.name == name and r.levelno >= level]


# ----------------------------------------------------------------------------------------------------------------
# The fallback


def test_fallback_matches_original_core_fixture():
    case = torch.load(FIXTURES / "m2f_image_swin.pt", weights_only=True)["msda_core"]
    locations = case["sampling_locations"]
    assert ((locations < 0) | (locations > 1)).any(), "the fixture covers points outside the maps"
    output = multi_scale_deformable_attention(
        case["value"], case["spatial_shapes"].tolist(), locations, case["attention_weights"]
    )
    assert output.shape == case["output"].shape == (2, 11, 64)
    torch.testing.assert_close(output, case["output"], atol=1e-5, rtol=1e-5)


def test_fallback_forward_and_backward_match_transformers_in_float64():
    case = random_case(dtype=torch.float64, seed=1)
    inputs = [case["value"], case["sampling_locations"], case["attention_weights"]]
    ours_inputs = [t.clone().requires_grad_() for t in inputs]
    reference_inputs = [t.clone().requires_grad_() for t in inputs]
    shapes = case["value_spatial_shapes_list"]
    ours = multi_scale_deformable_attention(ours_inputs[0], shapes, ours_inputs[1], ours_inputs[2])
    reference = transformers_msda(reference_inputs[0], shapes, reference_inputs[1], reference_inputs[2])
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=1e-12)
    grad_output = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, ours_inputs, grad_output)
    reference_grads = torch.autograd.grad(reference, reference_inputs, grad_output)
    for name, mine, theirs in zip(("value", "sampling_locations", "attention_weights"), ours_grads, reference_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-10, rtol=1e-10, msg=f"gradient of {name}")


def test_fallback_gradcheck_float64():
    case = random_case(batch=2, spatial_shapes=((3, 4), (2, 2)), heads=2, head_dim=3, queries=4, points=2,
                       dtype=torch.float64, seed=2)
    shapes = case["value_spatial_shapes_list"]
    inputs = tuple(t.clone().requires_grad_() for t in
                   (case["value"], case["sampling_locations"], case["attention_weights"]))
    assert torch.autograd.gradcheck(
        lambda value, locations, weights: multi_scale_deformable_attention(value, shapes, locations, weights),
        inputs,
    )


def test_fallback_matches_transformers_at_pixel_centres_and_borders():
    """Points exactly on pixel centres, on the map borders and just outside them."""
    case = random_case(batch=1, spatial_shapes=((4, 4), (2, 3)), queries=5, points=4, dtype=torch.float64)
    edges = torch.tensor([0.0, 1.0, 0.125, 0.875, -0.125, 1.125, 0.5, 1 / 3], dtype=torch.float64)
    locations = edges[torch.randint(0, len(edges), case["sampling_locations"].shape)]
    ours = multi_scale_deformable_attention(case["value"], case["value_spatial_shapes_list"], locations,
                                            case["attention_weights"])
    reference = transformers_msda(case["value"], case["value_spatial_shapes_list"], locations,
                                  case["attention_weights"])
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_returns_input_dtype_close_to_float32(dtype, tolerance):
    case = random_case(dtype=dtype, seed=3)
    output = fallback(case)
    assert output.dtype == dtype
    full = multi_scale_deformable_attention(
        case["value"].float(), case["value_spatial_shapes_list"], case["sampling_locations"].float(),
        case["attention_weights"].float(),
    )
    torch.testing.assert_close(output.float(), full, atol=tolerance, rtol=tolerance)
    # gradients flow back in the input dtype
    value = case["value"].clone().requires_grad_()
    multi_scale_deformable_attention(value, case["value_spatial_shapes_list"], case["sampling_locations"],
                                     case["attention_weights"]).sum().backward()
    assert value.grad.dtype == dtype and torch.isfinite(value.grad.float()).all()


def test_non_contiguous_inputs_and_module_forward():
    case = random_case(seed=4)
    expected = fallback(case)
    strided = dict(case)
    strided["value"] = case["value"].transpose(0, 1).contiguous().transpose(0, 1)
    strided["sampling_locations"] = case["sampling_locations"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided["value"].is_contiguous()
    torch.testing.assert_close(MultiScaleDeformableAttention()(*op_args(strided)), expected, atol=0, rtol=0)


def test_nan_locations_sample_zeros_instead_of_crashing():
    case = random_case(seed=5)
    locations = case["sampling_locations"].clone()
    locations[0, 0] = float("nan")
    output = multi_scale_deformable_attention(case["value"], case["value_spatial_shapes_list"], locations,
                                              case["attention_weights"])
    assert torch.isfinite(output).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(value=c["value"][:, :-1]), "add up to"),
        (lambda c: c.update(value=c["value"][0]), "value must be"),
        (lambda c: c.update(attention_weights=c["attention_weights"][..., :-1]), "attention_weights shape"),
        (lambda c: c.update(value_spatial_shapes_list=c["value_spatial_shapes_list"][:-1]), "levels"),
        (lambda c: c.update(sampling_locations=c["sampling_locations"][..., :1]), "sampling_locations must be"),
    ],
)
def test_bad_inputs_raise_value_error(change, message):
    case = random_case()
    change(case)
    with pytest.raises(ValueError, match=message):
        fallback(case)


def test_torch_export_of_a_module_using_the_op():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.attn = MultiScaleDeformableAttention()

        def forward(self, value, shapes, locations, weights):
            starts = torch.tensor([0, 30, 39])
            return self.attn(self.proj(value), shapes, [(6, 5), (3, 3), (2, 1)], starts, locations, weights, 64)

    case = random_case(seed=6)
    block = Block()
    args = (case["value"], case["value_spatial_shapes"], case["sampling_locations"], case["attention_weights"])
    program = torch.export.export(block, args)
    assert "embedding_bag" in str(program.graph)
    torch.testing.assert_close(program.module()(*args), block(*args), atol=1e-6, rtol=1e-6)


def test_torch_compile_fullgraph_forward_and_backward():
    """Whole-graph capture (dynamo + AOT autograd) of the op; inductor's C++ compile is left out for time."""
    case = random_case(seed=7)
    op = MultiScaleDeformableAttention()
    compiled = torch.compile(op, backend="aot_eager", fullgraph=True)
    value = case["value"].clone().requires_grad_()
    args = list(op_args(case))
    args[0] = value
    output = compiled(*args)
    torch.testing.assert_close(output, fallback(case), atol=1e-6, rtol=1e-6)
    output.square().sum().backward()
    reference = case["value"].clone().requires_grad_()
    multi_scale_deformable_attention(reference, case["value_spatial_shapes_list"], case["sampling_locations"],
                                     case["attention_weights"]).square().sum().backward()
    torch.testing.assert_close(value.grad, reference.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="inductor's CPU compile takes about a minute on 2 cores "
                                                          "(set RUN_SLOW=1)")
def test_torch_compile_inductor_fullgraph():
    case = random_case(seed=8)
    compiled = torch.compile(MultiScaleDeformableAttention(), fullgraph=True)
    torch.testing.assert_close(compiled(*op_args(case)), fallback(case), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Loading the kernel


def test_local_layer_repository_swaps_the_forward(working_kernel, caplog):
    path, kernel_id = working_kernel
    model = TinyModel()
    case = random_case(seed=9)
    expected = fallback(case)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert maybe_kernelize(model, repository=local_repository(path), device_types=("cpu",)) == "kernel"
        # a second call with nothing changed is free and silent
        assert maybe_kernelize(model, repository=local_repository(path), device_types=("cpu",)) == "kernel"
    lines = records(caplog)
    assert len(lines) == 1 and "Hub kernel" in lines[0].getMessage() and str(path) in lines[0].getMessage()
    assert model.attn._hub_kernel_key == model.other._hub_kernel_key is not None
    output = model(*op_args(case))
    assert kernel_calls(kernel_id) == [2], "the kernel's forward ran"
    torch.testing.assert_close(output, expected, atol=1e-6, rtol=1e-6)
    # the instance keeps the class forward (with its guards); kernelize's bound forward was taken over
    assert "forward" not in model.attn.__dict__


def test_local_kernels_env_resolves_the_pinned_repository(tmp_path, monkeypatch, caplog):
    """The production mapping (repo `kernels-community/deformable-detr`, version 1) resolved offline via
    `LOCAL_KERNELS` and a cached `v1` ref: the whole `LayerRepository` path of `kernels` runs."""
    path, kernel_id = build_kernel_repo(tmp_path / "pinned", WORKING_KERNEL)
    cache = tmp_path / "cache"
    refs = cache / ("kernels--" + KERNEL_REPO_ID.replace("/", "--")) / "refs"
    refs.mkdir(parents=True)
    (refs / "v1").write_text("0" * 40)
    monkeypatch.setenv("KERNELS_CACHE", str(cache))
    monkeypatch.setenv("LOCAL_KERNELS", f"{KERNEL_REPO_ID}={path}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = TinyModel()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert maybe_kernelize(model, device_types=("cpu",)) == "kernel"
    assert f"{KERNEL_REPO_ID}@v1" in records(caplog)[0].getMessage()
    case = random_case(seed=10)
    torch.testing.assert_close(model(*op_args(case)), fallback(case), atol=1e-6, rtol=1e-6)
    assert kernel_calls(kernel_id) == [2]


def test_offline_hub_falls_back_with_one_warning_quickly(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KERNELS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = TinyModel()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        start = time.perf_counter()
        assert maybe_kernelize(model, device_types=("cpu",)) == "fallback"
        elapsed = time.perf_counter() - start
        assert maybe_kernelize(TinyModel(), device_types=("cpu",)) == "fallback"
    assert elapsed < 1.0
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "could not be loaded" in warnings[0].getMessage()
    assert len(records(caplog)) == 2, "the second model logs its path once, at INFO"
    case = random_case(seed=11)
    torch.testing.assert_close(model(*op_args(case)), fallback(case), atol=0, rtol=0)


@pytest.fixture
def online_without_proxy(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_unreachable_hub_falls_back_with_one_warning(online_without_proxy, monkeypatch, caplog):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.invalid")  # never resolves
    with caplog.at_level(logging.INFO, logger=LOGGER):
        start = time.perf_counter()
        assert maybe_kernelize(TinyModel(), device_types=("cpu",)) == "fallback"
        elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "cannot be reached" in warnings[0].getMessage()


def test_a_hanging_connection_costs_at_most_the_probe_timeout(online_without_proxy, monkeypatch, caplog):
    def hang(*args, **kwargs):
        time.sleep(3)
        raise OSError("timed out")

    monkeypatch.setattr(kernel_loading.socket, "create_connection", hang)
    start = time.perf_counter()
    assert maybe_kernelize(TinyModel(), device_types=("cpu",)) == "fallback"
    assert time.perf_counter() - start < kernel_loading.HUB_PROBE_TIMEOUT_S + 0.3


def test_cpu_model_uses_the_fallback_without_loading(working_kernel, caplog):
    path, kernel_id = working_kernel
    model = TinyModel()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert maybe_kernelize(model, repository=local_repository(path)) == "fallback"  # default: CUDA only
    lines = records(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and "on cpu" in lines[0].getMessage()
    assert f"{kernel_id}.layers" not in sys.modules, "nothing was loaded"


@pytest.mark.parametrize("switch", ["config", "argument", "environment"])
def test_switches_turn_the_kernel_off(working_kernel, monkeypatch, caplog, switch):
    path, kernel_id = working_kernel
    model = TinyModel(use_kernels=switch != "config")
    if switch == "environment":
        monkeypatch.setenv(DISABLE_KERNELS_ENV, "1")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        path_used = maybe_kernelize(model, use_kernels=False if switch == "argument" else None,
                                    repository=local_repository(path), device_types=("cpu",))
    assert path_used == "fallback"
    assert "switched off" in records(caplog)[0].getMessage()
    model(*op_args(random_case()))
    assert f"{kernel_id}.layers" not in sys.modules


def test_switching_the_kernel_off_and_on_again(working_kernel):
    path, kernel_id = working_kernel
    model = TinyModel()
    repository = local_repository(path)
    case = random_case(seed=12)
    assert maybe_kernelize(model, repository=repository, device_types=("cpu",)) == "kernel"
    model(*op_args(case))
    assert maybe_kernelize(model, use_kernels=False, repository=repository, device_types=("cpu",)) == "fallback"
    model(*op_args(case))
    assert kernel_calls(kernel_id) == [2]
    assert maybe_kernelize(model, repository=repository, device_types=("cpu",)) == "kernel"
    model(*op_args(case))
    assert kernel_calls(kernel_id) == [2, 2]


def test_forward_pre_hook_decides_once_for_nested_models(caplog):
    """A model with the hook inside another one with the hook (as a task model wraps its base model)."""

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(use_kernels=True)
            self.model = TinyModel()
            self.model.register_forward_pre_hook(kernel_forward_pre_hook)

        def forward(self, *args):
            return self.model(*args)

    model = Outer()
    model.register_forward_pre_hook(kernel_forward_pre_hook)
    case = random_case(seed=13)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(3):
            model(*op_args(case))
    lines = records(caplog)
    assert len(lines) == 1 and "on cpu" in lines[0].getMessage()


# ----------------------------------------------------------------------------------------------------------------
# Falling back from an installed kernel


@pytest.fixture
def kernelized(working_kernel):
    path, kernel_id = working_kernel
    model = TinyModel()
    assert maybe_kernelize(model, repository=local_repository(path), device_types=("cpu",)) == "kernel"
    return model, kernel_id


def test_batch_not_divisible_by_im2col_step_uses_the_fallback(kernelized, caplog):
    model, kernel_id = kernelized
    case = random_case(batch=3, seed=14)
    case["im2col_step"] = 2
    with caplog.at_level(logging.WARNING):
        output = model(*op_args(case))
    torch.testing.assert_close(output, fallback(case), atol=0, rtol=0)
    assert kernel_calls(kernel_id) == [] and not records(caplog, name=LOGGER)
    case["im2col_step"] = 3
    model(*op_args(case))
    assert kernel_calls(kernel_id) == [3]


def test_non_contiguous_value_uses_the_fallback(kernelized, caplog):
    model, kernel_id = kernelized
    case = random_case(seed=15)
    case["value"] = case["value"].transpose(0, 1).contiguous().transpose(0, 1)
    with caplog.at_level(logging.WARNING):
        output = model(*op_args(case))
    torch.testing.assert_close(output, fallback(case), atol=0, rtol=0)
    assert kernel_calls(kernel_id) == [] and not records(caplog, name=LOGGER)


def test_tracing_and_exporting_use_the_fallback(kernelized, monkeypatch):
    model, kernel_id = kernelized
    case = random_case(seed=16)
    expected = fallback(case)
    program = torch.export.export(model, op_args(case))
    torch.testing.assert_close(program.module()(*op_args(case)), expected, atol=1e-6, rtol=1e-6)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(*op_args(case)), expected, atol=1e-6, rtol=1e-6)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    torch.testing.assert_close(model(*op_args(case)), expected, atol=0, rtol=0)
    assert kernel_calls(kernel_id) == []
    monkeypatch.undo()
    model(*op_args(case))
    assert kernel_calls(kernel_id) == [2], "eager calls still use the kernel"


def test_runtime_failure_disables_the_kernel_for_the_process(tmp_path, caplog):
    path, kernel_id = build_kernel_repo(tmp_path / "broken", BROKEN_KERNEL)
    model = TinyModel()
    assert maybe_kernelize(model, repository=local_repository(path), device_types=("cpu",)) == "kernel"
    case = random_case(seed=17)
    with caplog.at_level(logging.INFO):
        first = model(*op_args(case))
        second = model(*op_args(case))
        other = TinyModel()
        assert maybe_kernelize(other, repository=local_repository(path), device_types=("cpu",)) == "fallback"
    torch.testing.assert_close(first, fallback(case), atol=0, rtol=0)
    torch.testing.assert_close(second, first, atol=0, rtol=0)
    assert kernel_calls(kernel_id) == [2], "not called again after the failure"
    warnings = records(caplog, logging.WARNING, LOGGER)
    assert len(warnings) == 1 and "illegal memory access" in warnings[0].getMessage()
    assert "illegal memory access" in hub_kernel_failure()
    assert "failed at runtime" in records(caplog, name=LOGGER)[-1].getMessage()


# ----------------------------------------------------------------------------------------------------------------
# The switch through from_pretrained


def test_from_pretrained_use_kernels_switch(tmp_path):
    from transformers import PreTrainedConfig, PreTrainedModel

    class SwitchConfig(PreTrainedConfig):
        model_type = "msda_switch_test"

        def __init__(self, use_kernels=True, **kwargs):
            self.use_kernels = use_kernels
            super().__init__(**kwargs)

    class SwitchModel(HubKernelsMixin, PreTrainedModel):
        config_class = SwitchConfig
        base_model_prefix = "switch"

        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(2, 2)
            self.attn = MultiScaleDeformableAttention()
            self.post_init()

    SwitchModel(SwitchConfig()).save_pretrained(tmp_path)
    assert SwitchModel.from_pretrained(tmp_path).config.use_kernels is True
    model = SwitchModel.from_pretrained(tmp_path, use_kernels=False)
    assert model.config.use_kernels is False and model.use_kernels is False
    assert maybe_kernelize(model, device_types=("cpu",)) == "fallback"
    model.use_kernels = True
    assert model.config.use_kernels is True
    model.train()  # transformers re-applies kernels on mode changes: it must route here, not to transformers
    assert model.use_kernels is True


def test_the_layer_is_still_importable_from_the_op_module():
    from hf_maskformer_series import ms_deform_attn

    assert ms_deform_attn.MultiScaleDeformableAttention is MultiScaleDeformableAttention
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        ms_deform_attn.missing  # noqa: B018


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_attention_weights_softmax_is_a_float32_softmax(dtype):
    logits = (torch.randn(2, 50, 8, 12, generator=torch.Generator().manual_seed(0)) * 4).to(dtype)
    weights = attention_weights_softmax(logits)
    assert weights.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    reference = logits.to(weights.dtype).softmax(-1)
    torch.testing.assert_close(weights, reference, atol=1e-6, rtol=0)
