"""Mask2Former's masked-attention transformer decoder, for images and (with 3-D positions) videos.

Each layer runs masked cross-attention → self-attention → FFN; layer `i` attends to level `i % 3` of the
multi-scale memory (level 0 = 1/32) and is masked by the previous prediction's mask (sigmoid < 0.5 is blocked;
a query blocked everywhere attends everywhere). Predictions are made from the raw queries and after every layer.
Parameter names follow transformers' `Mask2FormerTransformerModule`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .heads import MLP, predict_masks
from .modeling_outputs import TransformerDecoderOutput
from .position_encoding import SinePositionEmbedding, SinePositionEmbedding3D


class MaskedAttentionDecoderLayer(nn.Module):
    """Cross-attention (masked) → self-attention → FFN, post-norm (or pre-norm with `pre_norm=True`)."""

    def __init__(self, hidden_dim: int, num_heads: int, dim_feedforward: int, dropout: float = 0.0,
                 pre_norm: bool = False):
        super().__init__()
        self.cross_attn = MultiHeadAttention(hidden_dim, num_heads, dropout, fused_projection=True)
        self.cross_attn_layer_norm = nn.LayerNorm(hidden_dim)
        self.self_attn = MultiHeadAttention(hidden_dim, num_heads, dropout)
        self.self_attn_layer_norm = nn.LayerNorm(hidden_dim)
        self.fc1 = nn.Linear(hidden_dim, dim_feedforward)
        self.fc2 = nn.Linear(dim_feedforward, hidden_dim)
        self.final_layer_norm = nn.LayerNorm(hidden_dim)
        self.dropout = dropout
        self.pre_norm = pre_norm

    def _residual(self, hidden_states: torch.Tensor, update: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        hidden_states = hidden_states + F.dropout(update, self.dropout, self.training)
        return hidden_states if self.pre_norm else norm(hidden_states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        query_position: torch.Tensor,
        memory: torch.Tensor,
        memory_position: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool = False,
    ):
        """
        Args:
            hidden_states: queries `[batch, queries, hidden_dim]`.
            query_position: `[1 or batch, queries, hidden_dim]`.
            memory: `[batch, sequence, hidden_dim]` (one level; for videos the sequence is frames × h × w).
            memory_position: `[1 or batch, sequence, hidden_dim]`.
            attention_mask: boolean `[batch, 1, queries, sequence]`, True where attention is allowed.

        Returns:
            `[batch, queries, hidden_dim]` and the (cross, self) attention probabilities when requested.
        """
        normed = self.cross_attn_layer_norm(hidden_states) if self.pre_norm else hidden_states
        attended, cross_probs = self.cross_attn(
            normed, memory, memory, attention_mask, output_attentions, query_position, memory_position
        )
        hidden_states = self._residual(hidden_states, attended, self.cross_attn_layer_norm)

        normed = self.self_attn_layer_norm(hidden_states) if self.pre_norm else hidden_states
        attended, self_probs = self.self_attn(normed, normed, normed, None, output_attentions, query_position,
                                              query_position)
        hidden_states = self._residual(hidden_states, attended, self.self_attn_layer_norm)

        normed = self.final_layer_norm(hidden_states) if self.pre_norm else hidden_states
        feed_forward = self.fc2(F.dropout(F.relu(self.fc1(normed)), self.dropout, self.training))
        hidden_states = self._residual(hidden_states, feed_forward, self.final_layer_norm)
        return hidden_states, (cross_probs, self_probs)


class MaskPredictor(nn.Module):
    """Mask embedding MLP; the masks are its output dotted with the per-pixel mask features."""

    def __init__(self, hidden_dim: int, mask_feature_size: int):
        super().__init__()
        self.mask_embedder = MLP(hidden_dim, hidden_dim, mask_feature_size, num_layers=3)

    def forward(self, query_states: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        """`[batch, queries, hidden]`, `[batch, (frames,) C, H, W]` → `[batch, queries, (frames,) H, W]`."""
        return predict_masks(self.mask_embedder(query_states), mask_features)


class MaskedAttentionDecoder(nn.Module):
    """The layer stack, the shared final LayerNorm and the mask predictor."""

    def __init__(self, num_layers: int, hidden_dim: int, num_heads: int, dim_feedforward: int,
                 mask_feature_size: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(
            MaskedAttentionDecoderLayer(hidden_dim, num_heads, dim_feedforward, dropout, pre_norm)
            for _ in range(num_layers)
        )
        self.layernorm = nn.LayerNorm(hidden_dim)
        self.mask_predictor = MaskPredictor(hidden_dim, mask_feature_size)


@torch.no_grad()  # a boolean mask: no autograd graph (it would keep the resized logits' sigmoid)
def attention_mask_from_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Blocked-attention mask for the next layer.

    Args:
        mask_logits: `[batch, queries, H, W]` or `[batch, queries, frames, H, W]`.
        size: the `(h, w)` of the memory level the next layer attends to.

    Returns:
        Boolean `[batch, 1, queries, (frames ×) h × w]`, True where attention is allowed. A query whose mask is
        empty everywhere may attend everywhere.
    """
    batch, queries = mask_logits.shape[:2]
    if mask_logits.dim() == 5:
        resized = F.interpolate(mask_logits.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
    else:
        resized = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    blocked = resized.reshape(batch, queries, -1).sigmoid() < 0.5
    blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
    return (~blocked).unsqueeze(1)


class MaskedAttentionTransformerModule(nn.Module):
    """Queries, level embeddings, input projections, positions and the decoder (transformers' `transformer_module`).

    Args:
        in_channels: channels of the pixel decoder's multi-scale maps.
        hidden_dim, num_queries, num_layers, num_heads, dim_feedforward, mask_feature_size, dropout, pre_norm:
            decoder sizes; `num_layers` is the number of layers (one less than the predictions).
        enforce_input_projection: use a 1×1 projection even when `in_channels == hidden_dim`.
        video: use the 3-D (time, y, x) position encoding and space-time memories.
    """

    num_levels = 3

    def __init__(self, in_channels: int, hidden_dim: int, num_queries: int, num_layers: int, num_heads: int,
                 dim_feedforward: int, mask_feature_size: int, dropout: float = 0.0, pre_norm: bool = False,
                 enforce_input_projection: bool = False, video: bool = False):
        super().__init__()
        self.video = video
        position_class = SinePositionEmbedding3D if video else SinePositionEmbedding
        self.position_embedder = position_class(hidden_dim // 2, normalize=True)
        self.queries_embedder = nn.Embedding(num_queries, hidden_dim)
        self.queries_features = nn.Embedding(num_queries, hidden_dim)
        self.input_projections = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
            if in_channels != hidden_dim or enforce_input_projection
            else nn.Sequential()
            for _ in range(self.num_levels)
        )
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        self.decoder = MaskedAttentionDecoder(
            num_layers, hidden_dim, num_heads, dim_feedforward, mask_feature_size, dropout, pre_norm
        )
        self.gradient_checkpointing = False  # set by `model.gradient_checkpointing_enable()`

    def _memory(self, features: torch.Tensor, level: int, batch: int, frames: int):
        """`[batch * frames, C, h, w]` → memory `[batch, frames * h * w, hidden]` and positions `[1, ..., hidden]`."""
        projected = self.input_projections[level](features)
        _, channels, height, width = projected.shape
        memory = projected.flatten(2) + self.level_embed.weight[level][None, :, None]
        memory = memory.view(batch, frames, channels, height * width).transpose(2, 3).reshape(batch, -1, channels)
        if self.video:
            position = self.position_embedder.encode_video(frames, height, width, memory.device, memory.dtype)
            position = position.permute(0, 1, 3, 4, 2).reshape(1, -1, channels)
        else:
            position = self.position_embedder.encode(height, width, memory.device, memory.dtype)
            position = position.flatten(2).transpose(1, 2)
        return memory, position, (height, width)

    def _predict(self, hidden_states: torch.Tensor, mask_features: torch.Tensor):
        normed = self.decoder.layernorm(hidden_states)
        return normed, self.decoder.mask_predictor(normed, mask_features)

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        mask_features: torch.Tensor,
        num_frames: int = 1,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> TransformerDecoderOutput:
        """
        Args:
            multi_scale_features: 3 maps `[batch * frames, C, h_l, w_l]`, coarse (1/32) first.
            mask_features: `[batch * frames, mask_feature_size, H/4, W/4]`; frames of a video are consecutive.
            num_frames: frames per video (videos only).

        Returns:
            `TransformerDecoderOutput` with `num_layers + 1` prediction steps (the first from the raw queries) and
            their `masks_queries_logits`; `last_hidden_state` is the last layer's un-normalised state.
        """
        batch = mask_features.shape[0] // num_frames
        if self.video:
            mask_features = mask_features.view(batch, num_frames, *mask_features.shape[1:])
        elif num_frames != 1:
            raise ValueError("num_frames > 1 needs the video decoder")
        memories, positions, sizes = zip(
            *(self._memory(multi_scale_features[level], level, batch, num_frames) for level in range(self.num_levels))
        )
        query_position = self.queries_embedder.weight.unsqueeze(0)
        hidden_states = self.queries_features.weight.unsqueeze(0).expand(batch, -1, -1)

        normed, masks = self._predict(hidden_states, mask_features)
        intermediate, all_masks = [normed], [masks]
        all_states = [hidden_states] if output_hidden_states else None
        self_attentions, cross_attentions = [], []
        attention_mask = attention_mask_from_masks(masks, sizes[0])
        for index, layer in enumerate(self.decoder.layers):
            level = index % self.num_levels
            layer_inputs = (hidden_states, query_position, memories[level], positions[level], attention_mask,
                            output_attentions)
            if self.gradient_checkpointing and self.training:
                hidden_states, (cross_probs, self_probs) = self._gradient_checkpointing_func(
                    layer.__call__, *layer_inputs
                )
            else:
                hidden_states, (cross_probs, self_probs) = layer(*layer_inputs)
            normed, masks = self._predict(hidden_states, mask_features)
            intermediate.append(normed)
            all_masks.append(masks)
            if all_states is not None:
                all_states.append(hidden_states)
            self_attentions.append(self_probs)
            cross_attentions.append(cross_probs)
            if index + 1 < len(self.decoder.layers):
                attention_mask = attention_mask_from_masks(masks, sizes[(index + 1) % self.num_levels])
        return TransformerDecoderOutput(
            intermediate_hidden_states=intermediate,
            last_hidden_state=hidden_states,
            hidden_states=all_states,
            attentions=self_attentions if output_attentions else None,
            cross_attentions=cross_attentions if output_attentions else None,
            masks_queries_logits=all_masks,
        )
