"""Memory-lean training ops: each gives the forward and the gradients of the plain autograd composition it
replaces, and keeps less for backward (checked with `saved_tensors_hooks`)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from hf_maskformer_series.criterion import (
    _MASKS_PER_CHUNK,
    MatchedTargets,
    _FullResolutionMaskLosses,
    _PointSampledMaskLosses,
    dice_loss,
    sigmoid_focal_loss,
)
from hf_maskformer_series.deformable_pixel_decoder import DeformableEncoderLayer, MultiScaleLayout
from hf_maskformer_series.gelu_linear import gelu_linear, lean_feed_forward, make_mlps_memory_lean
from hf_maskformer_series.ms_deform_attn import (
    _gather,
    _padded_value_table,
    _sampling_plan,
    _softmax_last_dim,
    _table_geometry,
    attention_weights_softmax,
    multi_scale_deformable_attention,
)
from hf_maskformer_series.onednn_layers import OneDnnLinear
from hf_maskformer_series.positioned_linear import positioned_linear
from tests._tiny_configs import tiny_swin

pytestmark = pytest.mark.usefixtures("single_thread")


class _SavedBytes:
    """Bytes of the distinct storages autograd keeps for backward inside the block (parameters excluded)."""

    def __init__(self, exclude=()):
        self.storages: dict[int, int] = {}
        self.excluded = {tensor.untyped_storage().data_ptr() for tensor in exclude}

    def _pack(self, tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.excluded:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def _grads(tensors):
    return [tensor.grad.clone() for tensor in tensors]


def _clear(tensors):
    for tensor in tensors:
        tensor.grad = None


class _PlainLinear(nn.Linear):
    """A Linear subclass: `positioned_linear` calls it as a module on the sum (the plain autograd path)."""


def _plain_copy(linear: nn.Linear) -> nn.Linear:
    plain = _PlainLinear(linear.in_features, linear.out_features, dtype=linear.weight.dtype)
    plain.load_state_dict(linear.state_dict())
    return plain


# --- positioned_linear ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_class", [nn.Linear, OneDnnLinear])  # the models' layers are OneDnnLinear
@pytest.mark.parametrize("position_batch", [1, 3])
def test_positioned_linear_equals_linear_of_the_sum(position_batch, layer_class):
    torch.manual_seed(0)
    states = torch.randn(3, 11, 16, dtype=torch.float64, requires_grad=True)
    positions = torch.randn(position_batch, 11, 16, dtype=torch.float64, requires_grad=True)
    layers = (layer_class(16, 12, dtype=torch.float64), layer_class(16, 6, dtype=torch.float64))
    plain_layers = tuple(_plain_copy(layer) for layer in layers)
    upstream = [torch.randn(3, 11, 12, dtype=torch.float64), torch.randn(3, 11, 6, dtype=torch.float64)]
    leaves = [states, positions]

    with _SavedBytes(exclude=[p for layer in layers for p in layer.parameters()]) as saved:
        outputs = positioned_linear(states, positions, layers)
    torch.autograd.backward(outputs, upstream)
    lean = _grads(leaves) + [p.grad.clone() for layer in layers for p in layer.parameters()]
    _clear(leaves)
    expected = positioned_linear(states, positions, plain_layers)  # not nn.Linear: the plain path
    torch.autograd.backward(expected, upstream)
    reference = _grads(leaves) + [p.grad.clone() for layer in plain_layers for p in layer.parameters()]

    for output, expected_output in zip(outputs, expected):
        torch.testing.assert_close(output, expected_output, rtol=0, atol=0)
    for grad, expected_grad in zip(lean, reference):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    # only the states and the positions are kept, not their [3, 11, 16] sum
    assert set(saved.storages) == {states.untyped_storage().data_ptr(), positions.untyped_storage().data_ptr()}


def test_positioned_linear_without_grad_or_for_other_modules_calls_the_modules():
    states, positions = torch.randn(2, 5, 8), torch.randn(1, 5, 8)
    calls = []
    layer = _PlainLinear(8, 4)
    layer.register_forward_hook(lambda *args: calls.append(1))
    (output,) = positioned_linear(states, positions, (layer,))
    torch.testing.assert_close(output, layer(states + positions))
    assert len(calls) == 2
    with torch.no_grad():
        (output,) = positioned_linear(states, positions, (nn.Linear(8, 4),))
    assert output.shape == (2, 5, 4)


# --- softmax of the attention weights ---------------------------------------------------------------------------


def test_attention_weights_softmax_keeps_only_its_output_and_gives_autograd_gradients():
    torch.manual_seed(0)
    logits = (torch.randn(2, 30, 4, 12, dtype=torch.float64) * 4).requires_grad_()
    upstream = torch.randn(2, 30, 4, 12, dtype=torch.float64)
    with _SavedBytes() as saved:
        weights = attention_weights_softmax(logits)
    weights.backward(upstream)
    lean_grad, logits.grad = logits.grad, None
    expected = _softmax_last_dim(logits)  # plain autograd through max, exp, sum, division
    expected.backward(upstream)
    torch.testing.assert_close(weights, expected, rtol=0, atol=0)
    torch.testing.assert_close(lean_grad, logits.grad, rtol=1e-12, atol=1e-14)
    assert list(saved.storages) == [weights.untyped_storage().data_ptr()]


# --- deformable attention ---------------------------------------------------------------------------------------


def _deformable_inputs(dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (3, 4), (2, 2)]
    batch, heads, head_dim, queries, points = 2, 2, 4, 9, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, head_dim, generator=generator, dtype=dtype)
    # some points outside the maps (-0.3 .. 1.3): the clamp must block their location gradients
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=generator, dtype=dtype) * 1.6 - 0.3
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=generator, dtype=dtype)
    return shapes, value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_()


def _autograd_deformable(value, shapes, locations, weights):
    """The traceable composition of the op, differentiated by autograd (the reference)."""
    batch, _, heads, head_dim = value.shape
    geometry = _table_geometry(shapes, heads)
    table = _padded_value_table(value, shapes).reshape(-1, head_dim)
    plan = _sampling_plan(locations, weights, shapes, geometry, heads)
    return _gather(table, plan).view(batch, locations.shape[1], heads * head_dim)


def test_deformable_attention_backward_from_compact_state_equals_autograd():
    shapes, value, locations, weights = _deformable_inputs(torch.float64)
    upstream = torch.randn(2, 9, 8, dtype=torch.float64)
    leaves = [value, locations, weights]
    output = multi_scale_deformable_attention(value, shapes, locations, weights)
    output.backward(upstream)
    lean = _grads(leaves)
    _clear(leaves)
    expected = _autograd_deformable(value, shapes, locations, weights)
    expected.backward(upstream)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(lean, _grads(leaves)):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert (lean[1] == 0).any() and (lean[1] != 0).any()  # outside points get no location gradient


def test_deformable_attention_keeps_about_18_bytes_per_sampling_point():
    """Per point: int32 row (4), float32 fraction (8), bool inside flags (2), plus the attention weight (4, also the
    softmax's output); not the 4 corner weights (16) nor the raw coordinates (8). Plus the padded value table."""
    shapes, value, locations, weights = _deformable_inputs(torch.float32)
    with _SavedBytes(exclude=[weights]) as saved:
        multi_scale_deformable_attention(value, shapes, locations, weights)
    num_points = weights.numel()
    table_bytes = 2 * sum((h + 3) * (w + 3) for h, w in shapes) * 2 * 4 * 4
    assert saved.total - table_bytes == num_points * (4 + 8 + 2)


# --- the deformable encoder layer -------------------------------------------------------------------------------


def test_deformable_encoder_layer_lean_ops_give_plain_autograd_results():
    """In-place ReLU, positioned projections, the lean softmax and LayerNorm → fc1 against the plain composition
    (Linear subclasses and a non-ReLU module holding a ReLU force the plain path)."""
    torch.manual_seed(0)
    layer = DeformableEncoderLayer(32, 4, 3, 2, 64).double().train()
    for parameter in layer.parameters():  # zero-initialised projections would hide gradient paths
        nn.init.normal_(parameter, std=0.2)
    plain = DeformableEncoderLayer(32, 4, 3, 2, 64).double().train()
    plain.load_state_dict(layer.state_dict())
    plain.activation = nn.Sequential(nn.ReLU())
    plain.fc1 = _plain_copy(layer.fc1)  # LayerNorm → fc1 without norm_linear
    for name in ("sampling_offsets", "attention_weights"):
        setattr(plain.self_attn, name, _plain_copy(getattr(layer.self_attn, name)))
    shapes = [(2, 3), (4, 4), (5, 6)]
    layout = MultiScaleLayout.build(shapes, torch.device("cpu"), torch.float64)
    states = torch.randn(2, sum(h * w for h, w in shapes), 32, dtype=torch.float64, requires_grad=True)
    positions = torch.randn(1, states.shape[1], 32, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn_like(states)

    with _SavedBytes(exclude=list(layer.parameters())) as saved:
        output = layer(states, positions, layout)
    output.backward(upstream)
    lean = _grads([states, positions]) + [p.grad for p in layer.parameters()]
    _clear([states, positions])
    with _SavedBytes(exclude=list(plain.parameters())) as plain_saved:
        expected = plain(states, positions, layout)
    expected.backward(upstream)
    reference = _grads([states, positions]) + [p.grad for p in plain.parameters()]

    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(lean, reference):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    # the first LayerNorm's output (kept by fc1) among others
    assert plain_saved.total - saved.total > states.nbytes


# --- MaskFormer's full-resolution mask losses -------------------------------------------------------------------


def _plain_full_resolution_losses(mask_logits, image_index, query_index, targets, num_masks):
    """The criterion's former composition: one float32 batch of all matched masks at the targets' size."""
    predictions = mask_logits[image_index, query_index].flatten(0, -3).unsqueeze(1).float()
    targets = targets.float()
    predictions = F.interpolate(predictions, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    predictions, targets = predictions.flatten(1), targets.flatten(1)
    return sigmoid_focal_loss(predictions, targets, num_masks), dice_loss(predictions, targets, num_masks)


@pytest.mark.parametrize("frames", [None, 2])
@pytest.mark.parametrize("segment_maps", [False, True])
def test_full_resolution_mask_losses_chunked_equal_autograd(frames, segment_maps):
    generator = torch.Generator().manual_seed(0)
    frame_shape = [frames] if frames else []
    matched = [_MASKS_PER_CHUNK + 3, 4]  # more than one chunk in the first image
    mask_logits = torch.randn(2, 16, *frame_shape, 6, 7, generator=generator) * 3
    mask_logits.requires_grad_()
    query_index = torch.cat([torch.randperm(16, generator=generator)[:count] for count in matched])
    image_index = torch.cat([torch.full((count,), image) for image, count in enumerate(matched)])
    maps = [torch.randint(-1, 13, (*frame_shape, 24, 28), generator=generator) for _ in matched]
    target_index = [torch.randperm(13, generator=generator)[:count] for count in matched]
    one_hot = [(segment_map[None] == torch.arange(13).view(-1, *[1] * segment_map.dim())).float()
               for segment_map in maps]
    targets = [MatchedTargets(segment_map if segment_maps else masks, index, segment_maps, mask_logits.device)
               for segment_map, masks, index in zip(maps, one_hot, target_index)]
    stacked = torch.cat([masks[index].flatten(0, -3) for masks, index in zip(one_hot, target_index)])

    losses = _FullResolutionMaskLosses.apply(mask_logits, image_index, query_index, 5.0, targets)
    (losses[0] * 20 + losses[1] * 1).backward()
    lean_grad, mask_logits.grad = mask_logits.grad, None
    expected = _plain_full_resolution_losses(mask_logits, image_index, query_index, stacked, 5.0)
    (expected[0] * 20 + expected[1] * 1).backward()
    torch.testing.assert_close(losses[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(losses[1], expected[1], rtol=0, atol=0)
    torch.testing.assert_close(lean_grad, mask_logits.grad, rtol=1e-6, atol=1e-9)
    assert lean_grad[0, query_index[0]].abs().sum() > 0


def test_full_resolution_mask_losses_keep_nothing_of_full_resolution():
    generator = torch.Generator().manual_seed(1)
    mask_logits = torch.randn(1, 20, 8, 8, generator=generator, requires_grad=True)
    segment_map = torch.randint(-1, 12, (64, 64), generator=generator)
    targets = [MatchedTargets(segment_map, torch.arange(12), True, mask_logits.device)]
    index = torch.arange(12)
    with _SavedBytes(exclude=[mask_logits]) as saved:
        _FullResolutionMaskLosses.apply(mask_logits, torch.zeros_like(index), index, 12.0, targets)
    assert saved.total == 12 * 8 * 8 * 4 + 2 * index.numel() * 8  # the 12 matched queries' logits, the indices


def test_point_sampled_mask_losses_keep_the_matched_logits_not_all_queries():
    generator = torch.Generator().manual_seed(2)
    mask_logits = torch.randn(2, 30, 16, 16, generator=generator, requires_grad=True)
    image_index, query_index = torch.tensor([0, 0, 1]), torch.tensor([3, 7, 29])
    grid = torch.rand(3, 50, 1, 2, generator=generator) * 2 - 1
    targets = (torch.rand(3, 50, generator=generator) > 0.5).float()
    with _SavedBytes(exclude=[mask_logits, grid, targets, image_index, query_index]) as saved:
        _PointSampledMaskLosses.apply(mask_logits, image_index, query_index, grid, targets, 3.0)
    assert saved.total == 3 * 16 * 16 * 4


# --- GELU → Linear and the feed-forward blocks ------------------------------------------------------------------


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_linear_keeps_only_its_input_and_gives_autograd_gradients(approximate):
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 24, dtype=torch.float64, requires_grad=True)
    linear = nn.Linear(24, 10, dtype=torch.float64)
    plain = _plain_copy(linear)
    upstream = torch.randn(3, 7, 10, dtype=torch.float64)
    with _SavedBytes(exclude=list(linear.parameters())) as saved:
        output = gelu_linear(hidden, linear, approximate)
    output.backward(upstream)
    lean = [hidden.grad.clone(), linear.weight.grad, linear.bias.grad]
    hidden.grad = None
    expected = gelu_linear(hidden, plain, approximate)  # a Linear subclass: plain autograd
    expected.backward(upstream)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(lean, [hidden.grad, plain.weight.grad, plain.bias.grad]):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert list(saved.storages) == [hidden.untyped_storage().data_ptr()]


class _FeedForward(nn.Module):
    def __init__(self, activation: str, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 32, dtype=torch.float64), nn.Linear(32, 8, dtype=torch.float64)
        self.activation = ACT2FN[activation]
        self.dropout = dropout


@pytest.mark.parametrize(("activation", "dropout"), [("relu", 0.0), ("relu", 0.3), ("gelu", 0.0), ("gelu", 0.3),
                                                     ("silu", 0.0)])
def test_lean_feed_forward_equals_the_plain_block(activation, dropout):
    torch.manual_seed(0)
    block = _FeedForward(activation, dropout).train()
    states = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.manual_seed(1)
    with _SavedBytes(exclude=list(block.parameters())) as saved:
        output = lean_feed_forward(block, states)
    output.backward(upstream)
    lean = [states.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    states.grad = None
    block.zero_grad()
    torch.manual_seed(1)
    expected = block.fc2(F.dropout(block.activation(block.fc1(states)), dropout, True))
    expected.backward(upstream)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(lean, [states.grad] + [p.grad for p in block.parameters()]):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    if activation in ("relu", "gelu") and dropout == 0.0:  # the input and one [2, 5, 32] tensor
        assert saved.total == states.numel() * 8 + 2 * 5 * 32 * 8


def _maskformer_swin_config(**overrides):
    from transformers import MaskFormerSwinConfig

    return MaskFormerSwinConfig(**{**tiny_swin().to_dict(), **overrides})


def _swin_backbone_pair(make_config):
    """A config, a float64 Swin backbone in training mode and a copy with the same weights."""
    from transformers import AutoBackbone

    torch.manual_seed(0)
    config = make_config(drop_path_rate=0.0)
    backbone = AutoBackbone.from_config(config).double().train()
    reference = AutoBackbone.from_config(config).double().train()
    reference.load_state_dict(backbone.state_dict())
    return config, backbone, reference


def _compare_training_steps(backbone, reference, pixels, tolerance: float):
    """Forward and backward through both backbones; checks feature maps (to `tolerance`) and every parameter's
    gradient; returns the lean feature maps and the bytes each side kept for backward."""
    with _SavedBytes(exclude=list(backbone.parameters())) as saved:
        lean_maps = backbone(pixels).feature_maps
    with _SavedBytes(exclude=list(reference.parameters())) as plain_saved:
        maps = reference(pixels).feature_maps
    for outputs in (lean_maps, maps):
        sum((feature * torch.linspace(-1, 1, feature.numel(), dtype=torch.float64).view_as(feature)).sum()
            for feature in outputs).backward()
    for feature, expected in zip(lean_maps, maps):
        torch.testing.assert_close(feature, expected, rtol=tolerance, atol=tolerance)
    for (name, parameter), expected in zip(backbone.named_parameters(), reference.parameters()):
        if expected.grad is None:
            assert parameter.grad is None, name
        else:
            torch.testing.assert_close(parameter.grad, expected.grad, rtol=1e-10, atol=1e-11, msg=name)
    return lean_maps, saved, plain_saved


@pytest.mark.parametrize(("make_config", "mlp_class"), [(tiny_swin, "SwinMLP"),
                                                         (_maskformer_swin_config, "MaskFormerSwinLayer")])
def test_make_mlps_memory_lean_keeps_a_swin_backbones_results(make_config, mlp_class):
    config, backbone, reference = _swin_backbone_pair(make_config)
    count = sum(1 for module in backbone.modules() if type(module).__name__ == mlp_class)
    assert make_mlps_memory_lean(backbone) == count > 0
    pixels = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    lean_maps, saved, plain_saved = _compare_training_steps(backbone, reference, pixels, tolerance=0.0)
    # one [tokens, 4 * channels] tensor less per MLP: 4 stages of 1, 1, 2, 1 blocks at 16, 8, 4, 2 tokens a side
    channels = [16, 32, 64, 128]
    expected_saving = sum(2 * side * side * 4 * dim * 8 * blocks
                          for side, dim, blocks in zip([16, 8, 4, 2], channels, [1, 1, 2, 1]))
    assert plain_saved.total - saved.total == expected_saving
    copied = copy.deepcopy(backbone)  # e.g. an EMA copy of the model keeps the switched classes
    assert {type(m).__name__ for m in copied.modules()} == {type(m).__name__ for m in backbone.modules()}
    torch.testing.assert_close(copied(pixels).feature_maps[-1], lean_maps[-1], rtol=0, atol=0)


def test_point_sampling_segment_maps_in_row_chunks_equals_one_pass():
    from hf_maskformer_series import point_sampling

    generator = torch.Generator().manual_seed(0)
    maps = torch.randint(-1, 5, (3, 20, 24), generator=generator)
    rows = point_sampling._ROWS_PER_CHUNK * 2 + 5
    map_index, target_ids = torch.randint(0, 3, (rows,), generator=generator), torch.randint(0, 5, (rows,))
    coordinates = torch.rand(rows, 40, 2, generator=generator)
    chunked = point_sampling.point_sample_segment_maps(maps, map_index, target_ids, coordinates)
    one_hot = (maps[map_index] == target_ids.view(-1, 1, 1)).float().unsqueeze(1)
    assert torch.equal(chunked, point_sampling.point_sample(one_hot, coordinates).squeeze(1))


# --- LayerNorm → Linear, window attention, the Swin switch --------------------------------------------------------


def _norm_linear_case(shape, out_features):
    """float64 states `[*shape]` (requiring grad), a LayerNorm with non-trivial affine parameters, a linear layer
    and their parameters."""
    torch.manual_seed(0)
    states = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    norm = nn.LayerNorm(shape[-1], dtype=torch.float64)
    linear = nn.Linear(shape[-1], out_features, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    return states, norm, linear, [*norm.parameters(), *linear.parameters()]


def test_layer_norm_linear_keeps_its_input_and_statistics_and_gives_autograd_gradients():
    from hf_maskformer_series.norm_linear import layer_norm_linear

    states, norm, linear, parameters = _norm_linear_case((3, 7, 24), 10)
    upstream = torch.randn(3, 7, 10, dtype=torch.float64)
    with _SavedBytes(exclude=parameters) as saved:
        output = layer_norm_linear(states, norm, linear)
    output.backward(upstream)
    lean = [states.grad.clone(), *_grads(parameters)]
    states.grad = None
    _clear(parameters)
    expected = linear(norm(states))
    expected.backward(upstream)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(lean, [states.grad, *_grads(parameters)]):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert saved.total == states.numel() * 8 + 2 * 3 * 7 * 8  # the input, its mean and 1/std per token


def test_layer_norm_linear_returning_the_normed_states_gives_autograd_gradients_of_both_readers():
    from hf_maskformer_series.norm_linear import layer_norm_linear

    states, norm, linear, parameters = _norm_linear_case((2, 5, 16), 16)
    with _SavedBytes(exclude=parameters) as saved:
        normed, output = layer_norm_linear(states, norm, linear, return_normed=True)
    (normed * 3 + output.relu_()).sum().backward()  # a residual reader and an in-place ReLU on the output
    lean = [states.grad.clone(), *_grads(parameters)]
    states.grad = None
    _clear(parameters)
    expected_normed = norm(states)
    expected = linear(expected_normed)
    (expected_normed * 3 + expected.relu()).sum().backward()
    torch.testing.assert_close(normed, expected_normed, rtol=0, atol=0)
    torch.testing.assert_close(output, expected.relu(), rtol=0, atol=0)
    for grad, expected_grad in zip(lean, [states.grad, *_grads(parameters)]):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert saved.total == states.nbytes + 2 * 2 * 5 * 8


def test_defer_layer_norm_switches_plain_pairs_and_keeps_inference_and_state_dict():
    from hf_maskformer_series.norm_linear import DeferredLayerNorm, NormedLinear, defer_layer_norm

    torch.manual_seed(0)
    block = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 8)).double()
    reference = copy.deepcopy(block)
    keys = list(block.state_dict())
    assert defer_layer_norm(block[0], block[1])
    assert (type(block[0]), type(block[1])) == (DeferredLayerNorm, NormedLinear)
    assert not defer_layer_norm(nn.LayerNorm(16), _PlainLinear(16, 8))  # not a plain linear layer
    assert not defer_layer_norm(nn.LayerNorm(16, elementwise_affine=False), nn.Linear(16, 8))
    assert list(block.state_dict()) == keys
    states = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(block[0](states), reference[0](states))  # the LayerNorm works on its own
        assert torch.equal(block(states), reference(states))
    torch.testing.assert_close(block(states), reference(states), rtol=0, atol=0)
    copied = copy.deepcopy(block)  # the reference follows the copy
    assert copied[1].__dict__["deferred_norm"] is copied[0]


def _plain_window_attention(query, key, value, bias, mask, scale):
    scores = query @ key.transpose(-1, -2) * scale + bias
    if mask is not None:
        scores = (scores.view(-1, mask.shape[0], *scores.shape[1:]) + mask.unsqueeze(1)).view(scores.shape)
    return scores.softmax(-1) @ value


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_keeps_q_k_v_and_gives_autograd_gradients(shifted):
    from hf_maskformer_series.window_attention import window_attention

    generator = torch.Generator().manual_seed(0)
    windows_per_image, heads, tokens, head_dim = 3, 2, 9, 4
    projections = torch.randn(3, 2 * windows_per_image, tokens, heads * head_dim, dtype=torch.float64,
                              generator=generator).requires_grad_()
    query, key, value = (projected.view(-1, tokens, heads, head_dim).transpose(1, 2) for projected in projections)
    bias = torch.randn(1, heads, tokens, tokens, dtype=torch.float64, generator=generator, requires_grad=True)
    mask = (torch.rand(windows_per_image, tokens, tokens, generator=generator) > 0.7).double() * -100.0
    mask = mask if shifted else None
    upstream = torch.randn(2 * windows_per_image, heads, tokens, head_dim, dtype=torch.float64, generator=generator)
    with _SavedBytes() as saved:
        output = window_attention(query, key, value, bias, mask, head_dim**-0.5)
    output.backward(upstream)
    lean = _grads([projections, bias])
    _clear([projections, bias])
    expected = _plain_window_attention(query, key, value, bias, mask, head_dim**-0.5)
    expected.backward(upstream)
    torch.testing.assert_close(output, expected, rtol=1e-14, atol=1e-14)
    for grad, expected_grad in zip(lean, _grads([projections, bias])):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    # q, k, v (one storage here), the bias and the mask: nothing of the attention probabilities' size
    assert saved.total == projections.nbytes + bias.nbytes + (mask.nbytes if shifted else 0)


@pytest.mark.parametrize("make_config", [tiny_swin, _maskformer_swin_config])
def test_make_swin_memory_lean_keeps_a_swin_backbones_results_and_keeps_less(make_config):
    from hf_maskformer_series.window_attention import make_swin_memory_lean

    config, backbone, reference = _swin_backbone_pair(make_config)
    blocks = sum(config.depths)
    merges = len(config.depths) - 1
    assert make_swin_memory_lean(backbone) == {"mlps": blocks, "norm_linears": blocks + merges, "attentions": blocks}
    assert list(backbone.state_dict()) == list(reference.state_dict())
    pixels = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():  # inference runs the original modules
        for feature, expected in zip(backbone(pixels).feature_maps, reference(pixels).feature_maps):
            assert torch.equal(feature, expected)
    _, saved, plain_saved = _compare_training_steps(backbone, reference, pixels, tolerance=1e-12)
    # at least one [tokens, 4·C] tensor per MLP, one LayerNorm output per pair and the probabilities per attention
    sides, channels, windows = [16, 8, 4, 2], [16, 32, 64, 128], [4, 1, 1, 1]
    at_least = 0
    for side, dim, count, heads, window_count in zip(sides, channels, config.depths, config.num_heads, windows):
        tokens = 2 * side * side
        window = min(side, config.window_size) ** 2
        at_least += count * 8 * (tokens * 4 * dim + tokens * dim + 2 * window_count * heads * window * window)
    assert plain_saved.total - saved.total >= at_least


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_attention_with_positions_keeps_no_sums_and_gives_autograd_gradients(fused, shared):
    from hf_maskformer_series.attention import MultiHeadAttention

    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4, fused_projection=fused).double().train()
    for parameter in attention.parameters():
        nn.init.normal_(parameter, std=0.3)
    query = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    query_position = torch.randn(1, 5, 16, dtype=torch.float64, requires_grad=True)
    memory = query if shared else torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    memory_position = query_position if shared else torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    inputs = list({id(tensor): tensor for tensor in (query, query_position, memory, memory_position)}.values())
    tensors = inputs + list(attention.parameters())
    upstream = torch.randn(2, 5, 16, dtype=torch.float64)
    with _SavedBytes(exclude=tensors) as saved:
        output, _ = attention(query, memory, memory, None, False, query_position, memory_position)
    output.backward(upstream)
    lean = _grads(tensors)
    _clear(tensors)
    with _SavedBytes(exclude=tensors) as plain_saved:
        query_sum = query + query_position
        expected, _ = attention(query_sum, query_sum if shared else memory + memory_position, memory)
    expected.backward(upstream)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(lean, _grads(tensors)):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    sums = query.nbytes + (0 if shared else memory.nbytes)  # the sums the projections no longer keep
    assert plain_saved.total - saved.total == sums
    with torch.no_grad():  # inference: the sums, as before
        assert torch.equal(attention(query, memory, memory, None, False, query_position, memory_position)[0],
                           attention(query_sum, query_sum if shared else memory + memory_position, memory)[0])
