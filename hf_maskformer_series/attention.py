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

    def _project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
        if self.fused_projection:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
            return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        return self.q_proj(query), self.k_proj(key), self.v_proj(value)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            query: `[batch, queries, embed_dim]`.
            key, value: `[batch, keys, embed_dim]`.
            attention_mask: boolean `[batch, 1 or heads, queries, keys]`, True where attention is allowed.
            output_attentions: also return the attention probabilities `[batch, heads, queries, keys]`.

        Returns:
            The attended values `[batch, queries, embed_dim]` and the probabilities (or None).
        """
        batch, num_queries, _ = query.shape
        num_keys = key.shape[1]
        q, k, v = self._project(query, key, value)
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
