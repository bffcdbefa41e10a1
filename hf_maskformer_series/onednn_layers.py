"""Float32 CPU inference through oneDNN: linear layers and convolutions.

PyTorch runs a float32 `F.linear` on CPU through MKL's sgemm, and a 1×1 convolution of a small batch on one thread
through its own im2col + sgemm path. On some CPUs (the AMD EPYC with AVX-512 this project is measured on) MKL's
sgemm runs at under half of oneDNN's throughput for the shapes of these models (Swin-T's `[12288, 96] × [96, 384]`:
9.3 ms against 3.9 ms on one thread; `benchmarks/README.md`), while oneDNN — which PyTorch already uses for most
convolutions and for bfloat16 matmuls — reaches the machine's peak.

`OneDnnLinear` / `OneDnnConv2d` are `nn.Linear` / `nn.Conv2d` (same parameters, same state-dict keys, same result up
to float32 summation order) whose forward calls oneDNN's primitives (`torch.ops.mkldnn._linear_pointwise`,
`_convolution_pointwise`) for float32 CPU inputs when no gradient is needed. Training, other dtypes and devices,
`torch.compile`/`torch.export`, TorchScript and ONNX export take the plain `F.linear` / `F.conv2d`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ms_deform_attn import is_tracing

_ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and all(
    hasattr(torch.ops.mkldnn, name) for name in ("_linear_pointwise", "_convolution_pointwise")
)


def uses_onednn(input: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the layers send this call to oneDNN: float32 CPU tensors, no gradient needed, not tracing."""
    return (
        _ONEDNN_AVAILABLE
        and input.dtype == torch.float32
        and weight.dtype == torch.float32
        and input.device.type == "cpu"
        and not (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))
        and not is_tracing()
        and input.numel() > 0
    )


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` (`input [..., K]`, `weight [N, K]` → `[..., N]`), through oneDNN where :func:`uses_onednn`."""
    if input.dim() >= 2 and uses_onednn(input, weight):
        return torch.ops.mkldnn._linear_pointwise(input, weight, bias, "none", [], "")
    return F.linear(input, weight, bias)


class OneDnnLinear(nn.Linear):
    """`nn.Linear` (`input [..., in_features]` → `[..., out_features]`) through oneDNN for float32 CPU inference."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias)


class OneDnnConv2d(nn.Conv2d):
    """`nn.Conv2d` (`[batch, C_in, H, W]` → `[batch, C_out, H', W']`) through oneDNN for float32 CPU inference."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        explicit_padding = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        if explicit_padding and input.dim() == 4 and uses_onednn(input, self.weight):
            return torch.ops.mkldnn._convolution_pointwise(
                input, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups,
                "none", [], "",
            )
        return super().forward(input)


def use_onednn_layers(module: nn.Module) -> None:
    """Turn every plain `nn.Linear` / `nn.Conv2d` inside `module` (the backbone's included) into its oneDNN
    subclass, in place.

    Parameters, buffers, hooks and state-dict keys are untouched; subclasses (e.g. the output projection of
    `nn.MultiheadAttention`) keep their class. Run again after replacing submodules.
    """
    if not _ONEDNN_AVAILABLE:
        return
    swaps = {nn.Linear: OneDnnLinear, nn.Conv2d: OneDnnConv2d}
    for submodule in module.modules():
        if type(submodule) in swaps:
            submodule.__class__ = swaps[type(submodule)]
