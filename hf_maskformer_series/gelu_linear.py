"""`linear(gelu(x))` that keeps only `x` for backward, the second half of a transformer MLP.

Autograd through `fc2(gelu(h))` keeps both `h` (for GELU's backward) and `gelu(h)` (for fc2's weight gradient):
two `[tokens, 4 * channels]` tensors per MLP, the largest activations of a Swin or DETR-style block. This op keeps
`h` only and evaluates `gelu(h)` again in backward (one elementwise pass; the same kernel on the same input, so the
same values), and GELU's derivative comes from ATen's own `gelu_backward`. Outputs and gradients are those of
autograd through `F.linear(F.gelu(h), W, b)`.

`make_mlps_memory_lean(module)` switches the MLPs of transformers' Swin backbones (`SwinMLP`, and the
intermediate/output pairs of MaskFormer's Swin) inside `module` to this op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation
from transformers.models.maskformer.modeling_maskformer_swin import (
    MaskFormerSwinIntermediate,
    MaskFormerSwinLayer,
    MaskFormerSwinOutput,
)
from transformers.models.swin.modeling_swin import SwinMLP

from .ms_deform_attn import is_tracing
from .positioned_linear import is_plain_linear


class _GeluLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, approximate: str):
        ctx.save_for_backward(hidden, weight)
        ctx.approximate = approximate
        return F.linear(F.gelu(hidden, approximate=approximate), weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        hidden, weight = ctx.saved_tensors
        grad_2d = grad_output.reshape(-1, grad_output.shape[-1])
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            activated = F.gelu(hidden, approximate=ctx.approximate)
            grad_weight = grad_2d.t().mm(activated.reshape(-1, hidden.shape[-1]))
            del activated
        if ctx.needs_input_grad[2]:
            grad_bias = grad_2d.sum(0)
        if ctx.needs_input_grad[0]:
            grad_activated = grad_2d.mm(weight).view(hidden.shape)
            grad_hidden = torch.ops.aten.gelu_backward(grad_activated, hidden, approximate=ctx.approximate)
        return grad_hidden, grad_weight, grad_bias, None


def gelu_linear(hidden: torch.Tensor, linear: nn.Linear, approximate: str = "none") -> torch.Tensor:
    """`linear(F.gelu(hidden, approximate))`, keeping only `hidden` for backward.

    Args:
        hidden: `[..., in_features]` (the MLP's first projection).
        linear: an `nn.Linear(in_features, out_features)`; anything else (see `positioned_linear.is_plain_linear`)
            is called as a module, as it is while tracing or without autograd.
        approximate: GELU's `"none"` (erf) or `"tanh"`.

    Returns:
        `[..., out_features]`.
    """
    plain = not torch.is_grad_enabled() or is_tracing() or not is_plain_linear(linear)
    if plain:
        return linear(F.gelu(hidden, approximate=approximate))
    return _GeluLinearFunction.apply(hidden, linear.weight, linear.bias, approximate)


def lean_feed_forward(layer: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """`layer.fc2(dropout(layer.activation(layer.fc1(x))))` of a transformer layer, keeping one `[..., ffn_dim]`
    tensor for backward: ReLU runs in place on the output of a plain linear fc1 (which fc1 does not keep); exact
    GELU (without dropout) goes through `gelu_linear`. Other activations run as they are. `[..., dim]` → `[..., dim]`.

    `layer` has `fc1`, `fc2`, `activation` (a module, e.g. from transformers' `ACT2FN`) and `dropout` (a rate).
    """
    return activated_fc2(layer, layer.fc1(hidden_states), in_place=is_plain_linear(layer.fc1))


def activated_fc2(layer: nn.Module, hidden: torch.Tensor, in_place: bool) -> torch.Tensor:
    """The second half of `lean_feed_forward`, `layer.fc2(dropout(layer.activation(hidden)))` from the output of
    `layer.fc1` (`[..., ffn_dim]` → `[..., dim]`); `in_place`: `hidden` is not kept by whoever computed it, so a
    ReLU may overwrite it."""
    activation = layer.activation
    dropout = layer.dropout if layer.training else 0.0
    if _is_exact_gelu(activation) and dropout == 0.0:
        return gelu_linear(hidden, layer.fc2)
    hidden = hidden.relu_() if in_place and type(activation) is nn.ReLU else activation(hidden)
    return layer.fc2(F.dropout(hidden, dropout, layer.training))


class LeanSwinMLP(SwinMLP):
    """transformers' `SwinMLP` (`[..., dim]` → `[..., dim]`) with its GELU → fc2 through `gelu_linear`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return gelu_linear(self.fc1(hidden_states), self.fc2)


class PreActivationMaskFormerSwinIntermediate(MaskFormerSwinIntermediate):
    """`MaskFormerSwinIntermediate` without its GELU (`[..., dim]` → `[..., 4 * dim]`), which the layer's
    `LeanMaskFormerSwinOutput` applies."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden_states)


class LeanMaskFormerSwinOutput(MaskFormerSwinOutput):
    """`MaskFormerSwinOutput` applying the GELU its intermediate left out: `gelu_linear`, `[..., 4 * dim]` →
    `[..., dim]`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(gelu_linear(hidden_states, self.dense))


def _is_exact_gelu(activation) -> bool:
    return type(activation) is GELUActivation and activation.act is F.gelu


def make_mlps_memory_lean(module: nn.Module) -> int:
    """Run the MLPs of transformers' Swin backbones inside `module` through `gelu_linear`, in place (same results,
    one `[tokens, 4 * channels]` tensor less kept for backward per MLP).

    Switched (a class swap, as `onednn_layers.use_onednn_layers`; parameters, state-dict keys and hooks unchanged),
    where the linear layers are plain (`is_plain_linear`) and the activation is transformers' exact GELU:
    every `SwinMLP` → `LeanSwinMLP`; every `MaskFormerSwinLayer`'s `intermediate` / `output` pair (the intermediate's
    only reader is the output) → `PreActivationMaskFormerSwinIntermediate` / `LeanMaskFormerSwinOutput`.

    Returns:
        The number of MLPs switched.
    """
    count = 0
    for block in module.modules():
        if (
            type(block) is SwinMLP
            and _is_exact_gelu(block.activation_fn)
            and is_plain_linear(block.fc1)
            and is_plain_linear(block.fc2)
        ):
            block.__class__ = LeanSwinMLP
            count += 1
        elif (
            type(block) is MaskFormerSwinLayer
            and type(block.intermediate) is MaskFormerSwinIntermediate
            and type(block.output) is MaskFormerSwinOutput
            and _is_exact_gelu(block.intermediate.intermediate_act_fn)
            and is_plain_linear(block.intermediate.dense)
            and is_plain_linear(block.output.dense)
        ):
            block.intermediate.__class__ = PreActivationMaskFormerSwinIntermediate
            block.output.__class__ = LeanMaskFormerSwinOutput
            count += 1
    return count
