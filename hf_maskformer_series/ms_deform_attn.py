"""Multi-scale deformable attention: the pure-PyTorch op shared by the Mask2Former image and video pixel decoders.

`multi_scale_deformable_attention` is exact (bilinear sampling with zero padding and `align_corners=False`, as
`grid_sample` and the original CUDA op). The layer `MultiScaleDeformableAttention`, which runs the Hub kernel
`kernels-community/deformable-detr` when it can and this op otherwise, lives in `kernel_loading.py` with the kernel
state and loading policy (importing it from here still works).

How the op computes: bilinear sampling followed by the attention-weighted sum is one sparse weighted sum of rows of
the value tensor. Every (batch, query, head) output is `sum_k weight_k * value_row[index_k]` over
`levels * points * 4` bilinear corners, the attention weight folded into the corner weights, computed by a single
`F.embedding_bag(mode="sum")` over `value` viewed as rows `[batch * sequence * heads, head_dim]`: no per-level
`grid_sample`, no `[batch * heads, head_dim, queries, levels * points]` intermediate, and the output comes out in
its final `[batch, queries, heads * head_dim]` layout without a transpose. Each level map is zero-padded by one
pixel before and two after on both axes, so clamping pixel coordinates to `[-1, size]` replaces the in-bounds
tests of zero padding exactly (a corner outside the map reads a zero row). In eager mode the backward pass uses
a sorted segment sum instead of the generic `embedding_bag` backward (several times faster on CPU); while tracing
or exporting (`is_tracing`) a traceable composition that autograd differentiates runs instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Padding of each level map in the fallback's value table: 1 pixel before, 2 after (x and y).
_PAD_BEFORE = 1
_PAD_AFTER = 2


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes_list: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be [batch, sequence, heads, head_dim], got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be [batch, queries, heads, levels, points, 2], "
            f"got shape {tuple(sampling_locations.shape)}"
        )
    if tuple(attention_weights.shape) != tuple(sampling_locations.shape[:-1]):
        raise ValueError(
            f"attention_weights shape {tuple(attention_weights.shape)} must be sampling_locations' shape without "
            f"the last dimension, {tuple(sampling_locations.shape[:-1])}"
        )
    batch, sequence, heads, _ = value.shape
    if sampling_locations.shape[0] != batch or sampling_locations.shape[2] != heads:
        raise ValueError(
            f"sampling_locations (batch {sampling_locations.shape[0]}, heads {sampling_locations.shape[2]}) and "
            f"value (batch {batch}, heads {heads}) disagree"
        )
    if len(spatial_shapes_list) != sampling_locations.shape[3]:
        raise ValueError(
            f"spatial_shapes_list has {len(spatial_shapes_list)} levels, sampling_locations has "
            f"{sampling_locations.shape[3]}"
        )
    positions = sum(h * w for h, w in spatial_shapes_list)  # no int(): it would freeze symbolic (exported) sizes
    if positions != sequence:
        raise ValueError(
            f"value has {sequence} positions, but the spatial shapes {list(spatial_shapes_list)} add up to {positions}"
        )


def _padded_value_table(value: torch.Tensor, spatial_shapes_list: list[tuple[int, int]]) -> torch.Tensor:
    """`[batch, sequence, heads, head_dim]` → `[batch, sum((H_l + 3) * (W_l + 3)), heads, head_dim]`.

    Each level map is zero-padded by `_PAD_BEFORE` pixels before and `_PAD_AFTER` after, on both axes.
    """
    batch, _, heads, head_dim = value.shape
    pad = (0, 0, _PAD_BEFORE, _PAD_AFTER, _PAD_BEFORE, _PAD_AFTER)
    levels = value.split([h * w for h, w in spatial_shapes_list], dim=1)
    padded = [
        F.pad(level.reshape(batch, h, w, heads * head_dim), pad).reshape(batch, -1, heads, head_dim)
        for level, (h, w) in zip(levels, spatial_shapes_list)
    ]
    return torch.cat(padded, dim=1)


def _level_interiors(table: torch.Tensor, spatial_shapes_list: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Views `[batch, H_l, W_l, heads, head_dim]` of the unpadded maps inside a padded table."""
    batch, _, heads, head_dim = table.shape
    views, start = [], 0
    for height, width in spatial_shapes_list:
        padded_h, padded_w = height + _PAD_BEFORE + _PAD_AFTER, width + _PAD_BEFORE + _PAD_AFTER
        level = table[:, start : start + padded_h * padded_w].view(batch, padded_h, padded_w, heads, head_dim)
        views.append(level[:, _PAD_BEFORE : _PAD_BEFORE + height, _PAD_BEFORE : _PAD_BEFORE + width])
        start += padded_h * padded_w
    return views


@dataclass(frozen=True)
class _TableGeometry:
    """Where each level lives in the padded value table, in table rows of one batch element.

    Attributes:
        level_rows: per level, `(first_row, end_row, corner_row_offsets)`, with the row offsets of the 4 bilinear
            corners (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1) relative to the (x0, y0) row.
        rows_per_batch: `padded_sequence * heads`.
    """

    level_rows: tuple[tuple[int, int, tuple[int, int, int, int]], ...]
    rows_per_batch: int


def _table_geometry(spatial_shapes_list: list[tuple[int, int]], heads: int) -> _TableGeometry:
    level_rows = []
    start = 0
    for height, width in spatial_shapes_list:
        padded_h, padded_w = height + _PAD_BEFORE + _PAD_AFTER, width + _PAD_BEFORE + _PAD_AFTER
        corners = (0, heads, padded_w * heads, (padded_w + 1) * heads)
        level_rows.append((start * heads, (start + padded_h * padded_w) * heads, corners))
        start += padded_h * padded_w
    return _TableGeometry(tuple(level_rows), start * heads)


@dataclass
class _SamplingPlan:
    """The weighted gather that computes the op.

    Attributes:
        rows: int `[batch * queries * heads, levels * points]`, table row of each point's (x0, y0) corner.
        corner_offsets: int `[levels * points, 4]`, row offsets of the 4 corners.
        corner_weights: `[batch * queries * heads, levels * points, 4]`, bilinear weight × attention weight.
        fraction: `[batch, queries, heads, levels, points, 2]`, position inside the pixel cell, (fx, fy).
        sizes: `[levels, points, 2]`, `(W_l, H_l)`.
        inside: bool `[batch, queries, heads, levels, points, 2]`, where the clamp of the pixel coordinates passes
            gradients (the coordinate is within `[-1, size]`); None unless requested.
    """

    rows: torch.Tensor
    corner_offsets: torch.Tensor
    corner_weights: torch.Tensor
    fraction: torch.Tensor
    sizes: torch.Tensor
    inside: torch.Tensor | None


def _sampling_plan(
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    spatial_shapes_list: list[tuple[int, int]],
    geometry: _TableGeometry,
    heads: int,
    with_inside: bool = False,
) -> _SamplingPlan:
    """Corner rows and weights of every sampling point (differentiable in locations and attention weights).

    Per-level constants are materialised as `[levels, points(, 2)]` so that every elementwise op broadcasts over
    leading dimensions only (CPU kernels vectorise the contiguous inner block).
    """
    batch, queries, _, levels, points, _ = sampling_locations.shape
    dtype, device = sampling_locations.dtype, sampling_locations.device
    sampling_locations, attention_weights = sampling_locations.contiguous(), attention_weights.contiguous()
    num_rows = batch * geometry.rows_per_batch
    # table rows as floats stay exact below 2**24 in float32
    symbolic = isinstance(num_rows, torch.SymInt)  # exported with dynamic sizes: no size-dependent choices
    index_dtype = dtype if (not symbolic and num_rows < 2**24) or dtype == torch.float64 else torch.float64
    if not symbolic and num_rows >= 2**53:
        raise ValueError(f"the value table has {num_rows} rows, too many to index")

    # pixel coordinates (x, y) = location * size - 0.5, clamped into the padded map (NaN -> -1: zero padding)
    sizes = torch.tensor([[w, h] for h, w in spatial_shapes_list], dtype=dtype, device=device)
    sizes = sizes.view(levels, 1, 2).expand(levels, points, 2).contiguous()
    raw = torch.addcmul(torch.full((), -0.5, dtype=dtype, device=device), sampling_locations, sizes)
    pixels = torch.minimum(torch.where(raw >= -1.0, raw, torch.full((), -1.0, dtype=dtype, device=device)), sizes)
    corner = pixels.floor()
    fraction = pixels - corner

    # row of the (x0, y0) corner: (b * padded_sequence + level_start + (y0 + 1) * padded_W + x0 + 1) * heads + h
    row_strides, level_bases = [], []
    for (first, _, _), (_, width) in zip(geometry.level_rows, spatial_shapes_list):
        padded_w = width + _PAD_BEFORE + _PAD_AFTER
        row_strides.append(padded_w * heads)
        level_bases.append(first + (padded_w + 1) * _PAD_BEFORE * heads)
    row_strides = torch.tensor(row_strides, dtype=index_dtype, device=device).view(levels, 1).expand(levels, points)
    bases = torch.tensor(level_bases, dtype=index_dtype, device=device).view(1, 1, 1, levels, 1)
    batch_head = torch.arange(batch, dtype=index_dtype, device=device).view(batch, 1, 1, 1, 1)
    batch_head = batch_head * geometry.rows_per_batch + torch.arange(heads, dtype=index_dtype, device=device).view(
        1, 1, heads, 1, 1
    )
    constant = (bases + batch_head).expand(batch, 1, heads, levels, points).contiguous()
    corner = corner.to(index_dtype)
    rows = torch.addcmul(corner[..., 0] * heads, corner[..., 1], row_strides.contiguous()) + constant
    rows = rows.to(torch.int32 if not symbolic and num_rows < 2**31 else torch.int64).view(batch * queries * heads, levels * points)
    corner_offsets = torch.tensor([c for _, _, c in geometry.level_rows], dtype=rows.dtype, device=device)
    corner_offsets = corner_offsets.view(levels, 1, 4).expand(levels, points, 4).reshape(levels * points, 4)

    corner_weights = _corner_weights(fraction, attention_weights)
    inside = pixels == raw if with_inside else None  # False where clamped, and for NaN
    return _SamplingPlan(rows, corner_offsets, corner_weights, fraction, sizes, inside)


def _corner_weights(fraction: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Bilinear corner weights (y0x0, y0x1, y1x0, y1x1) with the attention weight folded in.

    Args:
        fraction: `[batch, queries, heads, levels, points, 2]`, position inside the pixel cell (fx, fy).
        attention_weights: `[batch, queries, heads, levels, points]`.

    Returns:
        `[batch * queries * heads, levels * points, 4]`.
    """
    batch, queries, heads, levels, points = attention_weights.shape
    fraction_x, fraction_y = fraction.unbind(-1)
    weight_y1 = fraction_y * attention_weights
    weight_y0 = attention_weights - weight_y1
    weight_x0 = 1 - fraction_x
    return torch.stack(
        (weight_y0 * weight_x0, weight_y0 * fraction_x, weight_y1 * weight_x0, weight_y1 * fraction_x), dim=-1
    ).view(batch * queries * heads, levels * points, 4)


def _gather(table_rows: torch.Tensor, plan: _SamplingPlan) -> torch.Tensor:
    """`[rows, head_dim]` → `[batch * queries * heads, head_dim]`: the weighted sum of each bag's corner rows."""
    num_bags, points = plan.rows.shape
    indices = (plan.rows.unsqueeze(-1) + plan.corner_offsets).view(num_bags, points * 4)
    return F.embedding_bag(
        indices, table_rows, per_sample_weights=plan.corner_weights.view(num_bags, points * 4), mode="sum"
    )


class _DeformableAttentionFunction(torch.autograd.Function):
    """The op with a hand-written backward (eager mode): about half the work of autograd through the gather.

    Inputs are in the compute dtype: value `[B, S, heads, D]`, locations `[B, Q, heads, L, P, 2]`, weights
    `[B, Q, heads, L, P]`; output `[B, Q, heads * D]`.

    Kept for backward (per point, `N = B * Q * heads * L * P` points): the padded value table, the attention
    weights (the softmax's output, kept by it anyway), the int32 (x0, y0) row (`N`), the cell fraction (`2N`) and,
    when the locations need a gradient, a bool "inside the clamp" flag (`2N` bytes). The corner weights (`4N`) are
    recomputed in backward from the fraction and the attention weights with the forward's arithmetic (bitwise the
    same values), and the unclamped coordinates (`2N`) are not kept.
    """

    @staticmethod
    def forward(ctx, value, sampling_locations, attention_weights, spatial_shapes: tuple[tuple[int, int], ...]):
        batch, _, heads, head_dim = value.shape
        queries = sampling_locations.shape[1]
        geometry = _table_geometry(list(spatial_shapes), heads)
        table = value.new_zeros(batch, geometry.rows_per_batch // heads, heads, head_dim)
        for interior, level in zip(
            _level_interiors(table, list(spatial_shapes)), value.split([h * w for h, w in spatial_shapes], dim=1)
        ):
            interior.copy_(level.view(interior.shape))
        table_rows = table.view(-1, head_dim)
        plan = _sampling_plan(sampling_locations, attention_weights, list(spatial_shapes), geometry, heads,
                              with_inside=ctx.needs_input_grad[1])
        output = _gather(table_rows, plan)
        ctx.save_for_backward(table_rows, attention_weights, plan.rows, plan.fraction, plan.inside)
        ctx.corner_offsets = plan.corner_offsets
        ctx.sizes = plan.sizes
        ctx.geometry = geometry
        ctx.spatial_shapes = spatial_shapes
        ctx.value_shape = value.shape
        return output.view(batch, queries, heads * head_dim)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        table_rows, attention_weights, rows, fraction, inside = ctx.saved_tensors
        batch, _, heads, head_dim = ctx.value_shape
        num_bags, points = rows.shape
        grad_out = grad_output.reshape(num_bags, head_dim).contiguous()
        grad_value = grad_locations = grad_weights = None

        if ctx.needs_input_grad[0]:
            # Transposed gather: sort the (x0, y0) rows once, then one segment sum per corner; corner c of a
            # point lands `corner_offsets[c]` rows after its (x0, y0) row, a constant shift within each level.
            num_rows = table_rows.shape[0]
            sorted_rows, order = torch.sort(rows.reshape(-1))
            bags = torch.div(order, points, rounding_mode="floor")
            counts = torch.bincount(sorted_rows, minlength=num_rows)
            offsets = torch.zeros(num_rows, dtype=torch.long, device=grad_out.device)
            torch.cumsum(counts[:-1], 0, out=offsets[1:])
            corner_weights = _corner_weights(fraction, attention_weights)
            corner_weights = corner_weights.reshape(-1, 4).index_select(0, order).t().contiguous()
            per_corner = [
                F.embedding_bag(bags, grad_out, offsets, mode="sum", per_sample_weights=corner_weights[c])
                for c in range(4)
            ]
            del corner_weights, order, bags, sorted_rows
            grad_table = per_corner[0].view(batch, ctx.geometry.rows_per_batch, head_dim)
            for corner in range(1, 4):
                shifted = per_corner[corner].view(batch, ctx.geometry.rows_per_batch, head_dim)
                for first, end, shifts in ctx.geometry.level_rows:
                    shift = shifts[corner]
                    grad_table[:, first + shift : end] += shifted[:, first : end - shift]
            del per_corner, shifted
            interiors = _level_interiors(grad_table.view(batch, -1, heads, head_dim), list(ctx.spatial_shapes))
            grad_value = torch.cat([level.reshape(batch, -1, heads, head_dim) for level in interiors], dim=1)

        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # d[n, k, c] = <grad_out[n], table[row of corner c of point k]>, then the chain rule by hand
            width = points * 4
            indices = (rows.unsqueeze(-1) + ctx.corner_offsets).reshape(-1)
            bag_offsets = torch.arange(0, num_bags * width, width, dtype=indices.dtype, device=indices.device)
            offset2bag = torch.arange(num_bags, dtype=indices.dtype, device=indices.device).repeat_interleave(width)
            dots = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad_out, table_rows, indices, bag_offsets, offset2bag, 0, -1
            )
            dot_00, dot_01, dot_10, dot_11 = dots.view(fraction.shape[:-1] + (4,)).unbind(-1)  # (y, x)
            fraction_x, fraction_y = fraction.unbind(-1)
            weight_x0 = 1 - fraction_x
            along_y0 = torch.addcmul(dot_00 * weight_x0, dot_01, fraction_x)  # interpolated along x, at y0
            slope_y = torch.addcmul(dot_10 * weight_x0, dot_11, fraction_x) - along_y0
            if ctx.needs_input_grad[2]:
                grad_weights = torch.addcmul(along_y0, fraction_y, slope_y)
            if ctx.needs_input_grad[1]:
                along_x0 = torch.addcmul(dot_00, fraction_y, dot_10 - dot_00)  # interpolated along y, at x0
                slope_x = torch.addcmul(dot_01, fraction_y, dot_11 - dot_01) - along_x0
                grad_locations = torch.stack((slope_x * attention_weights, slope_y * attention_weights), dim=-1)
                grad_locations = grad_locations * ctx.sizes * inside
        return grad_value, grad_locations, grad_weights, None


def is_tracing() -> bool:
    """True under `torch.compile`, `torch.export`, `torch.jit.trace` and ONNX export."""
    return bool(
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    )


class _SoftmaxFunction(torch.autograd.Function):
    """Softmax over the last dimension that keeps only its output for backward (autograd through max, exp, sum
    and division would keep the logits and the exponentials as well): `grad = y * (g - sum(g * y))`."""

    @staticmethod
    def forward(ctx, logits):
        weights = _softmax_last_dim(logits)
        ctx.save_for_backward(weights)
        return weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_weights):
        (weights,) = ctx.saved_tensors
        return weights * (grad_weights - (grad_weights * weights).sum(-1, keepdim=True))


def _softmax_last_dim(logits: torch.Tensor) -> torch.Tensor:
    weights = (logits - logits.amax(-1, keepdim=True)).exp()
    return weights / weights.sum(-1, keepdim=True)


def attention_weights_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension (a head's `levels * points` logits), in at least float32.

    Half-precision logits are normalised in float32 (the op computes in float32 anyway). Written as max, exp, sum
    instead of `torch.softmax`: over a last dimension this short (8 to 16) the CPU softmax kernel does not
    vectorise and is about 5× slower; the result matches it to float32 rounding. With autograd (eager mode) only
    the output is kept for backward, which the deformable-attention op keeps anyway.

    Args:
        logits: `[..., levels * points]`.

    Returns:
        The same shape, float32 (or float64 for float64 logits), summing to 1 over the last dimension.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if logits.requires_grad and torch.is_grad_enabled() and not is_tracing():
        return _SoftmaxFunction.apply(logits)
    return _softmax_last_dim(logits)


def _size(value) -> int:
    """A Python int, except a `torch.SymInt` (export with dynamic sizes), which `int()` would freeze."""
    return value if isinstance(value, torch.SymInt) else int(value)


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes_list: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Pure-PyTorch multi-scale deformable attention (exact; float32, float64, float16 and bfloat16).

    Bilinear sampling with zero padding and `align_corners=False`, as `grid_sample` and the original CUDA op.
    Half-precision inputs are computed in float32; the output has `value`'s dtype.

    Args:
        value: `[batch, sum(H_l * W_l), heads, head_dim]`, levels flattened row-major one after the other.
        spatial_shapes_list: `(H_l, W_l)` of each level, as Python ints.
        sampling_locations: `[batch, queries, heads, levels, points, 2]`, (x, y) in [0, 1] (outside: zeros).
        attention_weights: `[batch, queries, heads, levels, points]`, softmaxed over levels × points.

    Returns:
        `[batch, queries, heads * head_dim]`.
    """
    _check_inputs(value, spatial_shapes_list, sampling_locations, attention_weights)
    shapes = tuple((_size(h), _size(w)) for h, w in spatial_shapes_list)
    batch, _, heads, head_dim = value.shape
    queries = sampling_locations.shape[1]
    compute_dtype = torch.promote_types(
        torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype
    )
    if compute_dtype in (torch.float16, torch.bfloat16):
        compute_dtype = torch.float32
    value_c = value.to(compute_dtype)
    locations_c = sampling_locations.to(compute_dtype)
    weights_c = attention_weights.to(compute_dtype)

    if not is_tracing():
        output = _DeformableAttentionFunction.apply(value_c, locations_c, weights_c, shapes)
    else:
        # traceable composition (autograd differentiates it; no data-dependent shapes)
        geometry = _table_geometry(list(shapes), heads)
        table_rows = _padded_value_table(value_c, list(shapes)).reshape(-1, head_dim)
        plan = _sampling_plan(locations_c, weights_c, list(shapes), geometry, heads)
        output = _gather(table_rows, plan).view(batch, queries, heads * head_dim)
    return output.to(value.dtype)


def __getattr__(name: str):
    # the layer moved to kernel_loading.py with the kernel dispatch; `from .ms_deform_attn import
    # MultiScaleDeformableAttention` keeps working (imported lazily: kernel_loading imports this module)
    if name == "MultiScaleDeformableAttention":
        from .kernel_loading import MultiScaleDeformableAttention

        return MultiScaleDeformableAttention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
