"""`linear(layer_norm(x))` that keeps only `x` (and LayerNorm's per-token statistics) for backward.

Autograd through `fc(norm(x))` keeps `x` (for LayerNorm's backward) and `norm(x)` (for the linear's weight
gradient): two `[tokens, channels]` tensors. This op keeps `x`, the mean and the reciprocal standard deviation
(`[tokens, 1]` each), and evaluates `norm(x)` again in backward with the same ATen kernel on the same input (so the
same values); the gradients come from the ops autograd itself runs (`native_layer_norm_backward`, the matrix
products of `linear`'s backward).

`defer_layer_norm(norm, linear)` applies it to a LayerNorm whose only reader is one linear layer (the second
LayerNorm of a Swin block and its MLP's first projection, the LayerNorm and the reduction of a Swin patch merging):
while autograd records, the LayerNorm passes its input through and the linear layer applies both, else each does
its own work as before. Parameters, state-dict keys and the inference path are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ms_deform_attn import is_tracing
from .onednn_layers import OneDnnLinear


class _LayerNormLinearFunction(torch.autograd.Function):
    """`(norm(x), linear(norm(x)))` (or the latter alone); saves `x`, the statistics and the parameters."""

    @staticmethod
    def forward(ctx, states, norm_weight, norm_bias, eps: float, weight, bias, return_normed: bool):
        shape = (states.shape[-1],)
        normed, mean, rstd = torch.ops.aten.native_layer_norm(states, shape, norm_weight, norm_bias, eps)
        ctx.save_for_backward(states, mean, rstd, norm_weight, norm_bias, weight)
        ctx.eps = eps
        ctx.has_bias = bias is not None
        ctx.return_normed = return_normed
        if not return_normed:
            return F.linear(normed, weight, bias)
        # F.linear's result is a view of its 2-D product, which a caller could not modify in place (e.g. a ReLU)
        # among several outputs: the same product, written into a tensor of the output's shape
        output = normed.new_empty(*normed.shape[:-1], weight.shape[0])
        flat_normed, flat_output = normed.reshape(-1, shape[0]), output.view(-1, weight.shape[0])
        if bias is None:
            torch.mm(flat_normed, weight.t(), out=flat_output)
        else:
            torch.addmm(bias, flat_normed, weight.t(), out=flat_output)
        return normed, output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        states, mean, rstd, norm_weight, norm_bias, weight = ctx.saved_tensors
        grad_normed_output, grad_output = grads if ctx.return_normed else (None, grads[0])
        shape = (states.shape[-1],)
        needs = ctx.needs_input_grad
        grad_2d = grad_output.reshape(-1, grad_output.shape[-1])
        grad_weight = grad_bias = None
        if needs[4]:
            normed = torch.ops.aten.native_layer_norm(states, shape, norm_weight, norm_bias, ctx.eps)[0]
            grad_weight = grad_2d.t().mm(normed.reshape(-1, shape[0]))
            del normed
        if ctx.has_bias and needs[5]:
            grad_bias = grad_2d.sum(0)
        grad_states = grad_norm_weight = grad_norm_bias = None
        if needs[0] or needs[1] or needs[2]:
            grad_normed = grad_2d.mm(weight).view(states.shape)
            if grad_normed_output is not None:
                grad_normed = grad_normed + grad_normed_output
            grad_states, grad_norm_weight, grad_norm_bias = torch.ops.aten.native_layer_norm_backward(
                grad_normed, states, shape, mean, rstd, norm_weight, norm_bias,
                [needs[0], needs[1] and norm_weight is not None, needs[2] and norm_bias is not None],
            )
        return grad_states, grad_norm_weight, grad_norm_bias, None, grad_weight, grad_bias, None


def records_lean() -> bool:
    """Whether the lean training ops run: autograd records and no tracing / export is under way."""
    return torch.is_grad_enabled() and not is_tracing()


def layer_norm_linear(states: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear, return_normed: bool = False):
    """`linear(norm(states))` keeping only `states` (and `[..., 1]` statistics) for backward.

    Args:
        states: `[..., channels]`.
        norm: an `nn.LayerNorm(channels)` (over the last dimension only).
        linear: `nn.Linear(channels, out_features)`.
        return_normed: also return `norm(states)` (e.g. for a residual branch), first; it is not kept either.

    Returns:
        `[..., out_features]`, or `([..., channels], [..., out_features])` with `return_normed`.
    """
    return _LayerNormLinearFunction.apply(
        states, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias, return_normed
    )


def is_plain_layer_norm(norm: nn.Module) -> bool:
    """Whether `norm` is a plain affine `nn.LayerNorm` over the last dimension (what `layer_norm_linear` takes)."""
    return type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1 and norm.elementwise_affine


class DeferredLayerNorm(nn.LayerNorm):
    """A LayerNorm (`[..., C]` → `[..., C]`) applied by its only reader, a `NormedLinear`, while autograd records
    (it returns its input then); otherwise `nn.LayerNorm`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if records_lean():
            return input
        return super().forward(input)


class NormedLinear(OneDnnLinear):
    """The linear layer reading a `DeferredLayerNorm` (`[..., in_features]` → `[..., out_features]`): while
    autograd records it applies that LayerNorm too, through `layer_norm_linear`; otherwise the plain (oneDNN)
    linear layer."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if records_lean():
            return layer_norm_linear(input, self.__dict__["deferred_norm"], self)
        return super().forward(input)


def _deferrable(norm: nn.Module, linear: nn.Module) -> bool:
    return (
        is_plain_layer_norm(norm)
        and type(linear) in (nn.Linear, OneDnnLinear)
        and linear.in_features == norm.normalized_shape[0]
    )


def defer_layer_norm(norm: nn.Module, linear: nn.Module) -> bool:
    """Make `linear` apply `norm` through `layer_norm_linear` while autograd records, in place (class swaps;
    parameters, state-dict keys and hooks unchanged). `norm`'s output must have no reader but `linear`.

    Returns:
        Whether the pair was switched (a plain affine `nn.LayerNorm` over the last dimension and a plain linear
        layer reading its channels; anything else is left as it is).
    """
    if not _deferrable(norm, linear):
        return False
    norm.__class__ = DeferredLayerNorm
    linear.__class__ = NormedLinear
    linear.__dict__["deferred_norm"] = norm  # a reference, not a submodule: the state dict is unchanged
    return True
