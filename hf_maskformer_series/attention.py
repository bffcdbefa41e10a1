"""Multi-head attention on `scaled_dot_product_attention`, shared by every decoder in the package.

Two parameter layouts are supported so checkpoints in either naming load without renaming:
- split: `q_proj`, `k_proj`, `v_proj`, `out_proj` (transformers' DETR-style layers);
- fused: `in_proj_weight`, `in_proj_bias`, `out_proj` (the layout of `torch.nn.MultiheadAttention`,
  rows in the order q, k, v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .positioned_linear import positioned_linear, positioned_projections


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first.

    Args:
        embed_dim: channels of queries, keys and values.
        num_heads: number of heads; `embed_dim` must be divisible by it.
        dropout: attention-probability dropout (training only).
        fused_projection: store the q/k/v projections as one `in_proj_weight` (`nn.MultiheadAttention` layout).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, fused_projection: bool = False):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.fused_projection = fused_projection
        if fused_projection:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        else:
            self.q_proj = nn.Linear(embed_dim, embed_dim)
            self.k_proj = nn.Linear(embed_dim, embed_dim)
            self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        if fused_projection:
            nn.init.xavier_uniform_(self.in_proj_weight)

    def _project(self, query, key, value, query_position=None, key_position=None):
        """q, k, v projections of `query + query_position`, `key + key_position` and `value`; the sums with
        positions go through `positioned_linear` / `positioned_projections` (not kept for backward), queries and
        keys in one call where they are the same sum."""
        if self.fused_projection:
            (w_q, w_k, w_v), (b_q, b_k, b_v) = self.in_proj_weight.chunk(3), self.in_proj_bias.chunk(3)
            project, q_proj, k_proj = positioned_projections, (w_q, b_q), (w_k, b_k)
            projected_value = F.linear(value, w_v, b_v)
        else:
            project, q_proj, k_proj = positioned_linear, self.q_proj, self.k_proj
            projected_value = self.v_proj(value)
        if query is key and query_position is key_position:
            q, k = project(query, query_position, (q_proj, k_proj))
        else:
            (q,), (k,) = project(query, query_position, (q_proj,)), project(key, key_position, (k_proj,))
        return q, k, projected_value

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        query_position: torch.Tensor | None = None,
        key_position: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            query: `[batch, queries, embed_dim]`.
            key, value: `[batch, keys, embed_dim]`.
            attention_mask: boolean `[batch, 1 or heads, queries, keys]`, True where attention is allowed.
            output_attentions: also return the attention probabilities `[batch, heads, queries, keys]`.
            query_position, key_position: added to `query` / `key` (`[1 or batch, ..., embed_dim]`) before their
                projections, without keeping the sums for backward.

        Returns:
            The attended values `[batch, queries, embed_dim]` and the probabilities (or None).
        """
        batch, num_queries, _ = query.shape
        num_keys = key.shape[1]
        q, k, v = self._project(query, key, value, query_position, key_position)
        q = q.view(batch, num_queries, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, num_keys, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, num_keys, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            probs = scores.softmax(-1)
            attended = F.dropout(probs, dropout, self.training) @ v
        else:
            probs = None
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout)
        attended = attended.transpose(1, 2).reshape(batch, num_queries, self.embed_dim)
        return self.out_proj(attended), probs
