"""Swin's window attention keeping only the queries, keys and values for backward, and `make_swin_memory_lean`.

Autograd through `softmax(q kᵀ · scale + bias + mask) v` keeps the attention probabilities
(`[windows, heads, N, N]`, N = 49 tokens per window: 1.5 times the size of q, k and v together at Swin-T's
first stage) besides copies of q, k and v made by the batched matrix products. `window_attention` keeps q, k, v
(views of the projections' outputs), the `[heads, N, N]` relative position bias and the `[windows per image, N,
N]` shift mask, and computes the probabilities again in backward with the same operations on the same inputs
(the same values); the gradients come from the ops autograd itself runs (`_softmax_backward_data`, the matrix
products). The forward is that of transformers' eager Swin attention (up to float32 rounding: its SDPA path
scales q and k before their product).

`make_swin_memory_lean(module)` switches transformers' Swin backbones (`SwinBackbone`, `MaskFormerSwinBackbone`)
inside `module`: the MLPs to `gelu_linear`, the LayerNorm → linear pairs (a block's second LayerNorm and its MLP's
first projection; a patch merging's LayerNorm and reduction) to `norm_linear`, the self-attention to
`window_attention`. Class swaps: parameters, state-dict keys and the inference path are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.maskformer.modeling_maskformer_swin import (
    MaskFormerSwinIntermediate,
    MaskFormerSwinLayer,
    MaskFormerSwinPatchMerging,
    MaskFormerSwinSelfAttention,
)
from transformers.models.swin.modeling_swin import SwinAttention, SwinLayer, SwinMLP, SwinPatchMerging

from .gelu_linear import LeanSwinMLP, PreActivationMaskFormerSwinIntermediate, make_mlps_memory_lean
from .norm_linear import defer_layer_norm, records_lean
from .positioned_linear import is_plain_linear


def _attention_probabilities(query, key, bias, mask, scale: float) -> torch.Tensor:
    """`softmax(q kᵀ · scale + bias (+ mask))`: `[windows, heads, N, N]`; the windows run image-major over the
    `[windows per image, N, N]` mask."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale + bias
    if mask is not None:
        windows, heads, tokens, _ = scores.shape
        scores = scores.view(-1, mask.shape[0], heads, tokens, tokens) + mask.unsqueeze(1)
        scores = scores.view(windows, heads, tokens, tokens)
    return scores.softmax(-1)


class _WindowAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, bias, mask, scale: float):
        ctx.save_for_backward(query, key, value, bias, mask)
        ctx.scale = scale
        return torch.matmul(_attention_probabilities(query, key, bias, mask, scale), value)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        query, key, value, bias, mask = ctx.saved_tensors
        probabilities = _attention_probabilities(query, key, bias, mask, ctx.scale)
        grad_value = torch.matmul(probabilities.transpose(-1, -2), grad_output) if ctx.needs_input_grad[2] else None
        grad_probabilities = torch.matmul(grad_output, value.transpose(-1, -2))
        grad_scores = torch._softmax_backward_data(grad_probabilities, probabilities, -1, probabilities.dtype)
        del probabilities, grad_probabilities
        grad_bias = grad_scores.sum(0, keepdim=True).view(bias.shape) if ctx.needs_input_grad[3] else None
        grad_query = torch.matmul(grad_scores, key) * ctx.scale if ctx.needs_input_grad[0] else None
        grad_key = torch.matmul(grad_scores.transpose(-1, -2), query) * ctx.scale if ctx.needs_input_grad[1] else None
        return grad_query, grad_key, grad_value, grad_bias, None, None


def window_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor,
                     mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """`softmax(q kᵀ · scale + bias + mask) v`, keeping only q, k, v, `bias` and `mask` for backward.

    Args:
        query, key, value: `[windows, heads, N, head_dim]`, windows image-major (`batch · windows per image`).
        bias: the relative position bias, `[1, heads, N, N]`.
        mask: the shifted windows' additive mask `[windows per image, N, N]` (no gradient), or None.
        scale: the factor of the scores (`head_dim ** -0.5`).

    Returns:
        `[windows, heads, N, head_dim]`.
    """
    return _WindowAttentionFunction.apply(query, key, value, bias, mask, scale)


def _split_heads(states: torch.Tensor, head_dim: int) -> torch.Tensor:
    """`[windows, N, heads · head_dim]` → `[windows, heads, N, head_dim]` (a view)."""
    return states.view(*states.shape[:2], -1, head_dim).transpose(1, 2)


def _merge_heads(states: torch.Tensor) -> torch.Tensor:
    """`[windows, heads, N, head_dim]` → `[windows, N, heads · head_dim]`."""
    return states.transpose(1, 2).flatten(2)


class LeanSwinAttention(SwinAttention):
    """transformers' `SwinAttention` (`[windows, N, C]` → `[windows, N, C]`, and no attention weights) through
    `window_attention` while autograd records without attention dropout; otherwise the original."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        dropout = self.attention_dropout if self.training else 0.0
        if not records_lean() or dropout > 0 or kwargs.get("output_attentions"):
            return super().forward(hidden_states, attention_mask, **kwargs)
        query = _split_heads(self.q_proj(hidden_states), self.head_dim)
        key = _split_heads(self.k_proj(hidden_states), self.head_dim)
        value = _split_heads(self.v_proj(hidden_states), self.head_dim)
        attended = window_attention(query, key, value, self.relative_position_bias(), attention_mask, self.scaling)
        return self.o_proj(_merge_heads(attended)), None


class LeanMaskFormerSwinSelfAttention(MaskFormerSwinSelfAttention):
    """transformers' `MaskFormerSwinSelfAttention` (`[windows, N, C]` → `([windows, N, C],)`) through
    `window_attention` while autograd records without attention dropout or returned weights; otherwise the
    original."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_attentions: bool | None = False):
        if not records_lean() or output_attentions or (self.training and self.dropout.p > 0):
            return super().forward(hidden_states, attention_mask, output_attentions)
        head_dim = self.attention_head_size
        query = _split_heads(self.query(hidden_states), head_dim)
        key = _split_heads(self.key(hidden_states), head_dim)
        value = _split_heads(self.value(hidden_states), head_dim)
        tokens = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0)
        return (_merge_heads(window_attention(query, key, value, bias, attention_mask, head_dim**-0.5)),)


def make_swin_memory_lean(module: nn.Module) -> dict[str, int]:
    """Switch transformers' Swin backbones inside `module` to the memory-lean training ops, in place (same results
    up to float32 rounding, less kept for backward; see the module docstring).

    Returns:
        How many of each were switched: `{"mlps", "norm_linears", "attentions"}`.
    """
    counts = {"mlps": make_mlps_memory_lean(module), "norm_linears": 0, "attentions": 0}
    for block in list(module.modules()):
        pair = None
        if type(block) is SwinLayer and type(block.mlp) in (SwinMLP, LeanSwinMLP):
            pair = block.layernorm_after, block.mlp.fc1
        elif type(block) is MaskFormerSwinLayer and type(block.intermediate) in (
            MaskFormerSwinIntermediate, PreActivationMaskFormerSwinIntermediate
        ):
            pair = block.layernorm_after, block.intermediate.dense
        elif type(block) in (SwinPatchMerging, MaskFormerSwinPatchMerging):
            pair = block.norm, block.reduction
        if pair is not None:
            counts["norm_linears"] += defer_layer_norm(*pair)
        projections = ()
        if type(block) is SwinAttention:
            projections = block.q_proj, block.k_proj, block.v_proj
            lean_class = LeanSwinAttention
        elif type(block) is MaskFormerSwinSelfAttention:
            projections = block.query, block.key, block.value
            lean_class = LeanMaskFormerSwinSelfAttention
        if projections and all(is_plain_linear(projection) for projection in projections):
            block.__class__ = lean_class
            counts["attentions"] += 1
    return counts
