"""The deformable-attention layer, and when it uses the compiled kernel from the Hub and how that is loaded.

The Mask2Former pixel decoders run the layer `MultiScaleDeformableAttention` defined here: it dispatches each call
to the loaded Hub kernel or to the exact pure-PyTorch op `ms_deform_attn.multi_scale_deformable_attention`, and
this module holds the kernel state (loaded kernels, the process-wide runtime failure). On CUDA, the prebuilt kernel of the Hub repository `kernels-community/deformable-detr` (version 1, layer
`MultiScaleDeformableAttention`) is loaded with the `kernels` package (`kernels.kernelize` with the pinned
mapping of `kernel_mapping()`); everywhere else the exact pure-PyTorch fallback runs. This package ships no
compiled code and calls `kernels` directly (transformers 5.x only enables its own integration for
kernels >= 0.18.2).

Switches (the kernel is on by default when the model runs on CUDA):

- config field `use_kernels` (default `True`): `Series...Config(use_kernels=False)`, or
  `Series...Model.from_pretrained(path, use_kernels=False)` (handled by `HubKernelsMixin`), or at runtime
  `model.set_use_kernels(False)` / `model.use_kernels = False`.
- environment variable `HF_MASKFORMER_SERIES_DISABLE_KERNELS=1` turns the kernel off for the process.
- `HF_HUB_OFFLINE=1`: only a kernel already in the local cache is used (`kernels` looks nowhere else).

The fallback is used, never an error, when: the model is not on CUDA; kernels are switched off; the `kernels`
package is missing; the kernel cannot be loaded (offline, Hub unreachable, no build for this machine: one
warning); while tracing or exporting; for inputs the kernel rejects; after a runtime failure of the kernel (one
warning, then the kernel is off for the process). When not offline, a connection probe of at most
`HUB_PROBE_TIMEOUT_S` seconds runs before contacting the Hub, so an unreachable Hub costs well under a second.

Exactly one log line (logger `hf_maskformer_series.kernel_loading`) says which path a model uses, each time
that path is decided or changes: INFO when the choice is expected (CPU, switched off, kernel loaded), WARNING
when the kernel was wanted but could not be loaded.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .ms_deform_attn import is_tracing, multi_scale_deformable_attention

try:
    from kernels import use_kernel_forward_from_hub
except ImportError:  # `kernels` is a dependency, but the layer must keep working without it

    def use_kernel_forward_from_hub(layer_name: str, condition=None):
        return lambda cls: cls


logger = logging.getLogger(__name__)

KERNEL_LAYER_NAME = "MultiScaleDeformableAttention"
"""Layer name shared by the kernel mapping and the `use_kernel_forward_from_hub` decorator."""

KERNEL_REPO_ID = "kernels-community/deformable-detr"
KERNEL_VERSION = 1
DISABLE_KERNELS_ENV = "HF_MASKFORMER_SERIES_DISABLE_KERNELS"
HUB_PROBE_TIMEOUT_S = 0.5
KERNEL_DEVICE_TYPES = ("cuda",)

PATH_KERNEL = "kernel"
PATH_FALLBACK = "fallback"

_load_failures: dict[str, str] = {}  # repository key -> why loading failed (once per process)


# ---------------------------------------------------------------------------------------------------------------
# Kernel state and the layer that dispatches to the kernel or the PyTorch op


@dataclass(frozen=True)
class HubKernel:
    """A loaded Hub kernel layer.

    Attributes:
        key: identifies the kernel (repository and version or path).
        forward: the kernel layer's unbound `forward(self, value, ...)`.
        device_type: device type the kernel was loaded for ("cuda"; tests use "cpu").
        has_backward: whether the kernel supports autograd.
    """

    key: str
    forward: Callable
    device_type: str
    has_backward: bool = True


_HUB_KERNELS: dict[str, HubKernel] = {}
_runtime_failure: list[str] = []  # the first runtime failure, once the kernel is disabled for the process


def register_hub_kernel(kernel: HubKernel) -> None:
    """Make `kernel` available to instances whose `_hub_kernel_key` is `kernel.key`."""
    _HUB_KERNELS[kernel.key] = kernel


def hub_kernel_failure() -> str | None:
    """The runtime failure that disabled the Hub kernel for this process, if any."""
    return _runtime_failure[0] if _runtime_failure else None


def reset_hub_kernel_state() -> None:
    """Forget loaded kernels and runtime failures (for tests)."""
    _HUB_KERNELS.clear()
    _runtime_failure.clear()


def _disable_hub_kernel(error: Exception) -> None:
    if not _runtime_failure:
        _runtime_failure.append(f"{type(error).__name__}: {error}")
        logger.warning(
            "The Hub deformable-attention kernel failed at runtime (%s: %s); it is disabled for this process and "
            "the PyTorch implementation is used from now on.",
            type(error).__name__,
            error,
        )


def _kernel_accepts(
    kernel: HubKernel,
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int,
) -> bool:
    """The compiled op's own input requirements (it asserts on them instead of falling back)."""
    tensors = (value, value_spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if any(t.device.type != kernel.device_type or not t.is_contiguous() for t in tensors):
        return False
    batch = value.shape[0]
    if im2col_step < 1 or batch % min(batch, im2col_step) != 0:
        return False
    if not kernel.has_backward and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return True


@use_kernel_forward_from_hub(KERNEL_LAYER_NAME)
class MultiScaleDeformableAttention(nn.Module):
    """The deformable-attention op (no parameters), with the Hub kernel layer's forward signature.

    `kernels.kernelize` (through `maybe_kernelize`) installs the compiled kernel; otherwise, and
    whenever the kernel cannot take the call, the pure-PyTorch `multi_scale_deformable_attention` runs.
    """

    def forward(
        self,
        value: torch.Tensor,
        value_spatial_shapes: torch.Tensor,
        value_spatial_shapes_list: list[tuple[int, int]],
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        im2col_step: int,
    ) -> torch.Tensor:
        """
        Args:
            value: `[batch, sum(H_l * W_l), heads, head_dim]`.
            value_spatial_shapes: LongTensor `[levels, 2]`, `(H_l, W_l)`.
            value_spatial_shapes_list: the same as Python ints.
            level_start_index: LongTensor `[levels]`, first position of each level in `value`.
            sampling_locations: `[batch, queries, heads, levels, points, 2]`, (x, y) in [0, 1].
            attention_weights: `[batch, queries, heads, levels, points]`.
            im2col_step: batch chunk of the compiled kernel (ignored by the fallback).

        Returns:
            `[batch, queries, heads * head_dim]`.
        """
        if not is_tracing() and not _runtime_failure:
            kernel = _HUB_KERNELS.get(self.__dict__.get("_hub_kernel_key"))
            if kernel is not None and _kernel_accepts(
                kernel,
                value,
                value_spatial_shapes,
                level_start_index,
                sampling_locations,
                attention_weights,
                im2col_step,
            ):
                try:
                    return kernel.forward(
                        self,
                        value,
                        value_spatial_shapes,
                        value_spatial_shapes_list,
                        level_start_index,
                        sampling_locations,
                        attention_weights,
                        im2col_step,
                    )
                except Exception as error:  # noqa: BLE001 - any kernel failure falls back
                    _disable_hub_kernel(error)
        return multi_scale_deformable_attention(
            value, value_spatial_shapes_list, sampling_locations, attention_weights
        )


# ---------------------------------------------------------------------------------------------------------------
# Loading policy


def kernels_disabled_by_env() -> bool:
    """True when `HF_MASKFORMER_SERIES_DISABLE_KERNELS` is set to a true value (1, true, yes, on)."""
    return os.environ.get(DISABLE_KERNELS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def default_kernel_repository():
    """The pinned Hub layer: `kernels-community/deformable-detr`, version 1, layer `MultiScaleDeformableAttention`."""
    from kernels import LayerRepository

    return LayerRepository(repo_id=KERNEL_REPO_ID, layer_name=KERNEL_LAYER_NAME, version=KERNEL_VERSION)


def kernel_mapping(device_types: tuple[str, ...] = KERNEL_DEVICE_TYPES, repository: Any = None) -> dict:
    """The `kernels` mapping `{layer name: {device type: repository}}` (the pinned Hub layer by default)."""
    repository = default_kernel_repository() if repository is None else repository
    return {KERNEL_LAYER_NAME: dict.fromkeys(device_types, repository)}


def _repository_key(repository: Any) -> str:
    path = getattr(repository, "_repo_path", None)
    if path is not None:
        return f"local:{path}:{repository.layer_name}"
    repo_id = getattr(repository, "_repo_id", None)
    if repo_id is not None:
        version = getattr(repository, "_version", None)
        revision = getattr(repository, "_revision", None)
        return f"hub:{repo_id}@{'v' + str(version) if version is not None else revision}:{repository.layer_name}"
    return f"other:{id(repository)}"


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint (or the HTTPS proxy) opens within `timeout` seconds.

    Runs in a daemon thread so that a slow name lookup cannot hold the caller longer than `timeout`.
    """
    from huggingface_hub import constants

    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    target = urllib.parse.urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else endpoint
    host = target.hostname
    if not host:
        return False
    port = target.port or (443 if target.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, name="hf-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _model_device_type(model: nn.Module) -> str:
    for tensor in model.parameters():
        return tensor.device.type
    for tensor in model.buffers():
        return tensor.device.type
    return "cpu"


def _config_use_kernels(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "use_kernels", True))


def _load_kernel(repository: Any, device_type: str, probe: bool) -> tuple[HubKernel | None, str, bool]:
    """Load the kernel layer through `kernels.kernelize`.

    Returns:
        `(kernel, reason, new_failure)`: the kernel (or `None` and why not), and whether this call found a new
        failure (it is warned about once per process; later models log it at INFO).
    """
    key = _repository_key(repository)
    if key in _load_failures:
        return None, _load_failures[key], False
    try:
        from kernels import Mode, kernelize, use_kernel_mapping
    except ImportError as error:
        _load_failures[key] = f"the `kernels` package cannot be imported ({error})"
        return None, _load_failures[key], True
    if probe and not _hub_offline() and not _hub_reachable():
        _load_failures[key] = (
            "the Hugging Face Hub cannot be reached (set HF_HUB_OFFLINE=1 to use a kernel already cached)"
        )
        return None, _load_failures[key], True
    probe_module = MultiScaleDeformableAttention()
    try:
        with use_kernel_mapping(kernel_mapping((device_type,), repository), inherit_mapping=False):
            kernelize(probe_module, mode=Mode.INFERENCE, device=device_type, use_fallback=False)
    except Exception as error:  # noqa: BLE001 - offline ValueError, connection errors, missing builds, ...
        _load_failures[key] = f"the kernel could not be loaded ({type(error).__name__}: {error})"
        return None, _load_failures[key], True
    function = getattr(probe_module.__dict__.get("forward"), "__func__", None)
    if function is None or function is MultiScaleDeformableAttention.forward:
        _load_failures[key] = "kernelize kept the PyTorch forward"
        return None, _load_failures[key], True
    owner_name = getattr(function, "__qualname__", "").split(".")[0]
    owner = getattr(sys.modules.get(getattr(function, "__module__", "")), owner_name, None)
    has_backward = bool(getattr(owner, "has_backward", True))
    kernel = HubKernel(key=key, forward=function, device_type=device_type, has_backward=has_backward)
    register_hub_kernel(kernel)
    return kernel, f"{key} on {device_type}", False


def _announce(layers: list[nn.Module], path: str, reason: str, level: int) -> None:
    """Log one line when the layers' path or its reason changed (a model nested in another logs nothing new)."""
    decision = (path, reason)
    if all(layer.__dict__.get("_msda_kernel_decision") == decision for layer in layers):
        return
    for layer in layers:
        layer.__dict__["_msda_kernel_decision"] = decision
    if path == PATH_KERNEL:
        logger.log(level, "Multi-scale deformable attention: using the Hub kernel %s.", reason)
    else:
        logger.log(level, "Multi-scale deformable attention: using the PyTorch fallback (%s).", reason)


def maybe_kernelize(
    model: nn.Module,
    use_kernels: bool | None = None,
    *,
    repository: Any = None,
    device_types: tuple[str, ...] = KERNEL_DEVICE_TYPES,
) -> str:
    """Give the model's deformable-attention layers the Hub kernel when the policy allows it.

    Cheap when nothing changed since the last call (it is meant to run before every forward, see
    `kernel_forward_pre_hook`). Never raises for kernel problems: the fallback is used instead.

    Args:
        model: a model containing `MultiScaleDeformableAttention` layers (or such a layer).
        use_kernels: `None` reads `model.config.use_kernels` (default `True`); `False` switches the kernel off.
        repository: a `kernels` layer repository replacing the pinned Hub layer (tests, local builds).
        device_types: device types on which the kernel is used.

    Returns:
        `"kernel"` or `"fallback"`: the path the layers use from now on.
    """
    if is_tracing():
        return PATH_FALLBACK
    enabled = _config_use_kernels(model) if use_kernels is None else bool(use_kernels)
    device_type = _model_device_type(model)
    repository_key = "default" if repository is None else _repository_key(repository)
    state = (enabled, kernels_disabled_by_env(), device_type, hub_kernel_failure(), repository_key, device_types)
    cached = model.__dict__.get("_msda_kernel_state")
    if cached is not None and cached[0] == state:
        return cached[1]
    layers = [module for module in model.modules() if isinstance(module, MultiScaleDeformableAttention)]
    if not layers:
        model.__dict__["_msda_kernel_state"] = (state, PATH_FALLBACK)
        return PATH_FALLBACK

    kernel: HubKernel | None = None
    level = logging.INFO
    if not enabled:
        reason = "switched off by use_kernels=False"
    elif kernels_disabled_by_env():
        reason = f"switched off by {DISABLE_KERNELS_ENV}"
    elif device_type not in device_types:
        reason = f"the model is on {device_type}; the Hub kernel is used on {'/'.join(device_types)} only"
    elif hub_kernel_failure() is not None:
        reason = f"the kernel failed at runtime earlier in this process: {hub_kernel_failure()}"
    else:
        try:
            repo = default_kernel_repository() if repository is None else repository
            kernel, reason, new_failure = _load_kernel(repo, device_type, probe=repository is None)
        except ImportError as error:
            kernel, reason, new_failure = None, f"the `kernels` package cannot be imported ({error})", True
        if new_failure:
            level = logging.WARNING

    for layer in layers:
        layer._hub_kernel_key = kernel.key if kernel is not None else None
    path = PATH_KERNEL if kernel is not None else PATH_FALLBACK
    _announce(layers, path, reason, level)
    model.__dict__["_msda_kernel_state"] = (state, path)
    return path


def kernel_forward_pre_hook(model: nn.Module, args: Any) -> None:
    """`model.register_forward_pre_hook(kernel_forward_pre_hook)`: decide the path before each forward.

    Picks up device moves (`.to("cuda")`), config changes and the environment variable; a no-op while tracing.
    """
    if not torch.compiler.is_compiling():
        maybe_kernelize(model)


class HubKernelsMixin:
    """Mixin for the package's `PreTrainedModel`s (list it before `PreTrainedModel`).

    - `from_pretrained(..., use_kernels=False)` stores the switch in `config.use_kernels` (transformers itself
      pops `use_kernels` from the kwargs, so a plain config override would never arrive).
    - `set_use_kernels` and the `use_kernels` property use this package's policy instead of transformers'
      (which needs kernels >= 0.18.2).
    """

    @classmethod
    def from_pretrained(cls, *args, use_kernels: bool | None = None, **kwargs):
        # transformers calls `model.set_use_kernels(use_kernels, kernel_config)` at the end of loading
        return super().from_pretrained(*args, use_kernels=use_kernels, **kwargs)

    def set_use_kernels(self, use_kernels: bool | None, kernel_config: Any = None, mode: Any = None) -> None:
        """Switch the Hub kernel on or off (`None`: keep `config.use_kernels`), then apply the policy."""
        if kernel_config is not None:
            logger.warning("kernel_config is ignored: the deformable-attention kernel mapping is pinned.")
        if use_kernels is not None:
            self.config.use_kernels = bool(use_kernels)
            maybe_kernelize(self)

    @property
    def use_kernels(self) -> bool:
        return bool(getattr(self.config, "use_kernels", True))

    @use_kernels.setter
    def use_kernels(self, value: bool) -> None:
        self.set_use_kernels(bool(value))
