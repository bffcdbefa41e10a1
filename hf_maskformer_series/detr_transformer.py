"""MaskFormer's DETR transformer: the encoder layers of the transformer-encoder pixel decoder (self-attention → FFN)
and the decoder layers (self-attention → cross-attention → FFN) over one feature map.

Encoder (`fpn_pixel_decoder.TransformerEncoderPixelDecoder`): queries and keys get the sine position encoding,
values do not; post-norm, or pre-norm with a final LayerNorm (as DETR).

Decoder: behaviour follows the original MaskFormer predictor: the query sequence starts at zero, the learned query
embeddings are added as positions at every layer (to queries and keys in self-attention, to queries in
cross-attention), the memory gets a 2-D sine position encoding on its keys, and a shared final LayerNorm is applied
to each layer's output *for the prediction only*: the next layer receives the un-normalised state.

Parameter names are those of transformers' MaskFormer checkpoints (`transformer_module.{queries_embedder,
input_projection, decoder.layers.{i}.{self_attn.{q,k,v,out}_proj, self_attn_layer_norm, encoder_attn.*,
encoder_attn_layer_norm, fc1, fc2, final_layer_norm}, decoder.layernorm}`: the names in the saved files and on the
Hub; transformers 5 renames `out_proj` → `o_proj` and `fc1` → `mlp.fc1` in memory only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .attention import MultiHeadAttention
from .gelu_linear import lean_feed_forward
from .modeling_outputs import TransformerDecoderOutput
from .position_encoding import SinePositionEmbedding


def _with_position(tensor: torch.Tensor, position: torch.Tensor | None) -> torch.Tensor:
    return tensor if position is None else tensor + position


class DetrEncoderLayer(nn.Module):
    """DETR encoder layer: self-attention (queries and keys + position) and FFN, post- or pre-norm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1, activation: str = "relu",
                 pre_norm: bool = False):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.activation = ACT2FN[activation]
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout = dropout
        self.pre_norm = pre_norm

    def forward(self, hidden_states: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """`hidden_states`, `position`: `[batch, tokens, dim]` → `[batch, tokens, dim]`."""
        if self.pre_norm:
            normed = self.self_attn_layer_norm(hidden_states)
            update, _ = self.self_attn(normed + position, normed + position, normed)
            hidden_states = hidden_states + F.dropout(update, self.dropout, self.training)
            update = lean_feed_forward(self, self.final_layer_norm(hidden_states))
            return hidden_states + F.dropout(update, self.dropout, self.training)
        update, _ = self.self_attn(hidden_states + position, hidden_states + position, hidden_states)
        hidden_states = self.self_attn_layer_norm(hidden_states + F.dropout(update, self.dropout, self.training))
        update = lean_feed_forward(self, hidden_states)
        return self.final_layer_norm(hidden_states + F.dropout(update, self.dropout, self.training))


class DetrEncoder(nn.Module):
    """`layers`, plus a final `layernorm` only with pre-norm layers (as DETR)."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1,
                 activation: str = "relu", pre_norm: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(
            DetrEncoderLayer(dim, num_heads, ffn_dim, dropout, activation, pre_norm) for _ in range(num_layers)
        )
        self.layernorm = nn.LayerNorm(dim) if pre_norm else None

    def forward(self, hidden_states: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states, position)
        return hidden_states if self.layernorm is None else self.layernorm(hidden_states)


class DetrDecoderLayer(nn.Module):
    """One DETR decoder layer.

    Args:
        hidden_dim: channels of queries and memory.
        num_heads: attention heads.
        ffn_dim: hidden size of the FFN.
        dropout: dropout of attention probabilities, residual branches and the FFN (as the original).
        activation: FFN activation.
        pre_norm: LayerNorm before each block instead of after (the released models are post-norm).
    """

    def __init__(self, hidden_dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1, activation: str = "relu",
                 pre_norm: bool = False):
        super().__init__()
        self.self_attn = MultiHeadAttention(hidden_dim, num_heads, dropout)
        self.self_attn_layer_norm = nn.LayerNorm(hidden_dim)
        self.encoder_attn = MultiHeadAttention(hidden_dim, num_heads, dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(hidden_dim)
        self.fc1 = nn.Linear(hidden_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, hidden_dim)
        self.activation = ACT2FN[activation]
        self.final_layer_norm = nn.LayerNorm(hidden_dim)
        self.dropout = dropout
        self.pre_norm = pre_norm

    def _residual(self, hidden_states: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return hidden_states + F.dropout(update, self.dropout, self.training)

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory: torch.Tensor,
        memory_position: torch.Tensor | None,
        query_position: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """
        Args:
            hidden_states: query states `[batch, queries, hidden]`.
            memory: `[batch, height * width, hidden]`.
            memory_position: sine encoding of the memory `[batch, height * width, hidden]`.
            query_position: learned query embeddings `[batch, queries, hidden]`.

        Returns:
            The new states `[batch, queries, hidden]` and (self-, cross-) attention probabilities or Nones.
        """
        if self.pre_norm:
            normed = self.self_attn_layer_norm(hidden_states)
            query_key = _with_position(normed, query_position)
            update, self_weights = self.self_attn(query_key, query_key, normed, output_attentions=output_attentions)
            hidden_states = self._residual(hidden_states, update)
            normed = self.encoder_attn_layer_norm(hidden_states)
            update, cross_weights = self.encoder_attn(
                _with_position(normed, query_position), _with_position(memory, memory_position), memory,
                output_attentions=output_attentions,
            )
            hidden_states = self._residual(hidden_states, update)
            hidden_states = self._residual(hidden_states, lean_feed_forward(self, self.final_layer_norm(hidden_states)))
            return hidden_states, (self_weights, cross_weights)
        query_key = _with_position(hidden_states, query_position)
        update, self_weights = self.self_attn(query_key, query_key, hidden_states, output_attentions=output_attentions)
        hidden_states = self.self_attn_layer_norm(self._residual(hidden_states, update))
        update, cross_weights = self.encoder_attn(
            _with_position(hidden_states, query_position), _with_position(memory, memory_position), memory,
            output_attentions=output_attentions,
        )
        hidden_states = self.encoder_attn_layer_norm(self._residual(hidden_states, update))
        hidden_states = self.final_layer_norm(self._residual(hidden_states, lean_feed_forward(self, hidden_states)))
        return hidden_states, (self_weights, cross_weights)


class DetrDecoder(nn.Module):
    """A stack of `DetrDecoderLayer`s with a shared output LayerNorm (`layers`, `layernorm`)."""

    def __init__(self, num_layers: int, hidden_dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1,
                 activation: str = "relu", pre_norm: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"the transformer decoder needs at least one layer, got {num_layers}")
        self.layers = nn.ModuleList(
            DetrDecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, activation, pre_norm) for _ in range(num_layers)
        )
        self.layernorm = nn.LayerNorm(hidden_dim)


class DetrTransformerModule(nn.Module):
    """Input projection, query embeddings and the DETR decoder.

    Args:
        in_channels: channels of the input map (res5 or the pixel decoder's transformer-encoder output).
        hidden_dim, num_queries, num_layers, num_heads, ffn_dim, dropout, activation, pre_norm: decoder settings.
        enforce_input_projection: use the 1×1 input projection even if `in_channels == hidden_dim`.
    """

    def __init__(self, in_channels: int, hidden_dim: int, num_queries: int, num_layers: int, num_heads: int,
                 ffn_dim: int, dropout: float = 0.1, activation: str = "relu", pre_norm: bool = False,
                 enforce_input_projection: bool = False):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"the decoder's hidden size must be even for the sine position encoding, got {hidden_dim}")
        self.position_embedder = SinePositionEmbedding(hidden_dim // 2, normalize=True)
        self.queries_embedder = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_projection:
            self.input_projection = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
        else:
            self.input_projection = None
        self.decoder = DetrDecoder(num_layers, hidden_dim, num_heads, ffn_dim, dropout, activation, pre_norm)

    def forward(self, image_features: torch.Tensor, output_attentions: bool = False) -> TransformerDecoderOutput:
        """
        Args:
            image_features: `[batch, in_channels, height, width]`.

        Returns:
            `TransformerDecoderOutput` with one prediction step per decoder layer; `hidden_states` start with the
            decoder's (zero) input.
        """
        if self.input_projection is not None:
            image_features = self.input_projection(image_features)
        batch = image_features.shape[0]
        memory = image_features.flatten(2).transpose(1, 2)  # [B, HW, C]
        memory_position = self.position_embedder(image_features).flatten(2).transpose(1, 2)
        query_position = self.queries_embedder.weight.unsqueeze(0).expand(batch, -1, -1)
        # a leaf that can carry a gradient, so `retain_grad` works on the first hidden state (as in transformers)
        hidden_states = torch.zeros_like(query_position).requires_grad_(torch.is_grad_enabled())
        intermediate, states = [], [hidden_states]
        self_attentions, cross_attentions = [], []
        for layer in self.decoder.layers:
            hidden_states, (self_weights, cross_weights) = layer(
                hidden_states, memory, memory_position, query_position, output_attentions
            )
            states.append(hidden_states)
            intermediate.append(self.decoder.layernorm(hidden_states))
            self_attentions.append(self_weights)
            cross_attentions.append(cross_weights)
        return TransformerDecoderOutput(
            intermediate_hidden_states=intermediate,
            last_hidden_state=intermediate[-1],
            hidden_states=states,
            attentions=self_attentions if output_attentions else None,
            cross_attentions=cross_attentions if output_attentions else None,
        )
