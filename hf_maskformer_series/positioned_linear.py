"""Linear projections of `states + positions` that keep only `states` and `positions` for backward.

Attention layers project queries (and keys) that are the sum of the states and a position encoding:
`F.linear(states + positions, W, b)`. Autograd keeps that sum for the weight gradient, one
`[batch, tokens, channels]` tensor per layer, although the states themselves are kept anyway (the value
projection reads them) and the positions are one tensor shared by every layer. `positioned_linear` runs the same
forward, keeps `states` and `positions`, and adds them again in backward (one elementwise add); several
projections of the same sum share one call. Results and gradients are those of autograd through
`F.linear(states + positions, ...)` (the same matrix products, summed in the same order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ms_deform_attn import is_tracing
from .onednn_layers import OneDnnLinear


def is_plain_linear(module: nn.Module) -> bool:
    """Whether `module(x)` is `F.linear(x, module.weight, module.bias)` whenever autograd records: an `nn.Linear`
    or its oneDNN inference subclass, not another subclass or an adapter wrapping the layer."""
    return type(module) in (nn.Linear, OneDnnLinear)


def _reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a gradient `[batch, ...]` over the dimensions `shape` broadcast (size 1 there)."""
    dims = [dim for dim, (size, target) in enumerate(zip(grad.shape, shape)) if target == 1 and size != 1]
    return grad.sum(dims, keepdim=True) if dims else grad


class _PositionedLinearFunction(torch.autograd.Function):
    """`(states + positions) @ W_i^T + b_i` for each `(W_i, b_i)`; saves `states` and `positions`, not the sum."""

    @staticmethod
    def forward(ctx, states, positions, *weights_and_biases):
        summed = states + positions
        pairs = list(zip(weights_and_biases[0::2], weights_and_biases[1::2]))
        outputs = tuple(F.linear(summed, weight, bias) for weight, bias in pairs)
        ctx.save_for_backward(states, positions, *weights_and_biases[0::2])
        ctx.has_bias = tuple(bias is not None for _, bias in pairs)
        return outputs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_outputs):
        states, positions, *weights = ctx.saved_tensors
        channels = states.shape[-1]
        needs_sum = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        summed_2d = None
        grad_summed = None
        grads = []
        for index, (weight, grad) in enumerate(zip(weights, grad_outputs)):
            grad_2d = grad.reshape(-1, grad.shape[-1])
            grad_weight = grad_bias = None
            if ctx.needs_input_grad[2 + 2 * index]:
                if summed_2d is None:
                    summed_2d = (states + positions).reshape(-1, channels)
                grad_weight = grad_2d.t().mm(summed_2d)
            if ctx.has_bias[index] and ctx.needs_input_grad[3 + 2 * index]:
                grad_bias = grad_2d.sum(0)
            if needs_sum:
                term = grad_2d.mm(weight)
                grad_summed = term if grad_summed is None else grad_summed + term
            grads += [grad_weight, grad_bias]
        grad_states = grad_positions = None
        if needs_sum:
            broadcast_shape = torch.broadcast_shapes(states.shape, positions.shape)
            grad_summed = grad_summed.view(broadcast_shape)
            if ctx.needs_input_grad[0]:
                grad_states = _reduce_to(grad_summed, states.shape)
            if ctx.needs_input_grad[1]:
                grad_positions = _reduce_to(grad_summed, positions.shape)
        return (grad_states, grad_positions, *grads)


def _keeps_the_sum_out(states: torch.Tensor, positions: torch.Tensor) -> bool:
    """Whether the projections of `states + positions` go through `_PositionedLinearFunction`: autograd records,
    nothing traces, and `positions` broadcasts to `states` (not the other way round)."""
    return (
        torch.is_grad_enabled()
        and not is_tracing()
        and states.shape == torch.broadcast_shapes(states.shape, positions.shape)
    )


def positioned_projections(states: torch.Tensor, positions: torch.Tensor | None,
                           weights_and_biases: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]):
    """`tuple(F.linear(states + positions, weight, bias) for weight, bias in weights_and_biases)`, keeping only
    `states` and `positions` for backward while autograd records (`positioned_linear` for weights that are not
    whole linear layers, e.g. the rows of a fused q/k/v projection). `positions=None`: no position is added.

    Shapes as `positioned_linear`; returns one `[batch, tokens, out_i]` per pair.
    """
    if positions is None:
        return tuple(F.linear(states, weight, bias) for weight, bias in weights_and_biases)
    if not _keeps_the_sum_out(states, positions):
        summed = states + positions
        return tuple(F.linear(summed, weight, bias) for weight, bias in weights_and_biases)
    return _PositionedLinearFunction.apply(states, positions, *[tensor for pair in weights_and_biases for tensor in pair])


def positioned_linear(states: torch.Tensor, positions: torch.Tensor | None, layers: tuple[nn.Linear, ...]):
    """`tuple(layer(states + positions) for layer in layers)`, keeping only `states` and `positions` for backward.

    Args:
        states: `[batch, tokens, channels]`.
        positions: broadcastable to `states` (`[1 or batch, tokens, channels]`); None: no position is added.
        layers: `nn.Linear(channels, out_i)` modules. Anything else (see `is_plain_linear`) is called as a
            module on the sum, as are all of them while tracing or without autograd.

    Returns:
        One `[batch, tokens, out_i]` per layer.
    """
    if positions is None:
        return tuple(layer(states) for layer in layers)
    if not (_keeps_the_sum_out(states, positions) and all(is_plain_linear(layer) for layer in layers)):
        summed = states + positions
        return tuple(layer(summed) for layer in layers)
    parameters = [tensor for layer in layers for tensor in (layer.weight, layer.bias)]
    return _PositionedLinearFunction.apply(states, positions, *parameters)
