"""The processors' fast paths give bit-identical outputs to the straightforward computation they replace.

The straightforward computation (written out here): the image as a channels-first copy, transformers' resize,
`float32(x)` rescaled and normalised by transformers' `rescale_and_normalize`, zero padding; each label map resized
with `F.interpolate(float64, "nearest-exact")`, one-hot masks as one comparison per target, padded with `F.pad`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as tvF
from PIL import Image
from transformers.image_utils import SizeDict

from hf_maskformer_series.image_processing import SeriesMask2FormerImageProcessor, SeriesMaskFormerImageProcessor
from hf_maskformer_series.target_encoding import (
    NO_TARGET,
    encode_segmentation_targets,
    resize_label_map,
    resized_image_size,
)

SIZES = [(61, 83, 64, 87), (480, 640, 384, 512), (40, 33, 97, 80), (50, 50, 50, 31), (7, 300, 13, 11), (1, 5, 3, 1)]


def _reference_resize(label_map: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    leading = label_map.shape[:-2]
    flat = label_map.reshape(1, -1, *label_map.shape[-2:]).double()
    resized = F.interpolate(flat, size=new_size, mode="nearest-exact")
    return resized.reshape(*leading, *new_size).to(label_map.dtype)


def _reference_targets(label_map: torch.Tensor, kept: torch.Tensor, padded_size: tuple[int, int] | None = None):
    """(one-hot masks, segment map) of the kept ids, by one comparison per target, padded with F.pad."""
    label_map = label_map.long()
    one_hot = (label_map.unsqueeze(0) == kept.view(-1, 1, 1)).float()
    segment_map = torch.full(label_map.shape, NO_TARGET, dtype=torch.int32)
    for index, value in enumerate(kept.tolist()):
        segment_map[label_map == value] = index
    if padded_size is not None:
        padding = (0, padded_size[1] - label_map.shape[1], 0, padded_size[0] - label_map.shape[0])
        one_hot, segment_map = F.pad(one_hot, padding, value=0), F.pad(segment_map, padding, value=NO_TARGET)
    return one_hot, segment_map


# ----------------------------------------------------------------------------------------------------------------
# Label maps
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_resize_label_map_is_nearest_exact_interpolation(sizes, dtype):
    height, width, new_height, new_width = sizes
    generator = torch.Generator().manual_seed(height * width)
    label_map = torch.randint(0, 2 if dtype == torch.bool else 200, (height, width), generator=generator).to(dtype)
    resized = resize_label_map(label_map, (new_height, new_width))
    assert resized.dtype == dtype and resized.is_contiguous()
    assert torch.equal(resized, _reference_resize(label_map, (new_height, new_width)))
    frames = torch.stack([label_map, label_map.flip(0)])  # video: [frames, H, W]
    assert torch.equal(resize_label_map(frames, (new_height, new_width)), _reference_resize(frames, (new_height, new_width)))


def test_resize_label_map_keeps_the_map_at_its_size_and_large_ids_exact():
    label_map = torch.arange(12).view(3, 4)
    assert resize_label_map(label_map, (3, 4)) is label_map
    huge = torch.tensor([[2**53 + 1, 5], [7, 2**62 + 3]])  # not representable in float64
    resized = resize_label_map(huge, (4, 4))
    assert set(resized.flatten().tolist()) == {2**53 + 1, 5, 7, 2**62 + 3}
    assert torch.equal(resized, huge.repeat_interleave(2, 0).repeat_interleave(2, 1))


ENCODING_CASES = [
    dict(),
    dict(ignore_index=0),  # void
    dict(ignore_index=255, do_reduce_labels=True),
    dict(instance_id_to_semantic_id={i: i % 3 for i in range(-1, 8)}),
    dict(instance_id_to_semantic_id={i: i % 3 + 1 for i in range(8)}, ignore_index=255, do_reduce_labels=True),
    dict(segments_info=[{"id": i, "category_id": i % 4, "iscrowd": int(i == 2)} for i in range(1, 8)]),
]


def _kept_ids(label_map: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """The ids that get a target, straightforwardly (sorted distinct values, minus void / ignored / crowd)."""
    values = torch.unique(label_map.long())
    if "segments_info" in kwargs:
        crowd = {segment["id"] for segment in kwargs["segments_info"] if segment.get("iscrowd", 0)}
        return torch.tensor([value for value in values.tolist() if value != 0 and value not in crowd], dtype=torch.long)
    if kwargs.get("do_reduce_labels"):
        return values[values != 0]  # 0 becomes ignore_index
    if kwargs.get("ignore_index") is not None:
        return values[values != kwargs["ignore_index"]]
    return values


@pytest.mark.parametrize("kwargs", ENCODING_CASES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8])
@pytest.mark.parametrize("padded_size", [None, (37, 53), (64, 60)])
def test_encoded_targets_equal_the_straightforward_ones(kwargs, dtype, padded_size):
    label_map = torch.as_tensor(np.random.default_rng(0).integers(0, 8, (37, 53))).to(dtype)
    if dtype != torch.uint8 and "instance_id_to_semantic_id" in kwargs and not kwargs.get("do_reduce_labels"):
        label_map[:3] = -1  # a negative id (still in the mapping)
    masks, labels = encode_segmentation_targets(label_map, **kwargs, padded_size=padded_size)
    segment_map, map_labels = encode_segmentation_targets(label_map, **kwargs, return_segment_map=True,
                                                          padded_size=padded_size)
    one_hot, reference_map = _reference_targets(label_map, _kept_ids(label_map, kwargs), padded_size)
    assert masks.dtype == torch.float32 and segment_map.dtype == torch.int32 and labels.dtype == torch.int64
    assert masks.is_contiguous() and segment_map.is_contiguous()
    assert torch.equal(masks, one_hot) and torch.equal(segment_map, reference_map)
    assert torch.equal(labels, map_labels) and labels.shape[0] == masks.shape[0] > 0


@pytest.mark.parametrize("return_segment_map", [False, True])
def test_encoding_without_targets_and_with_ids_beyond_the_histogram(return_segment_map):
    void = torch.zeros(5, 7, dtype=torch.int32)
    targets, labels = encode_segmentation_targets(void, ignore_index=0, return_segment_map=return_segment_map,
                                                  padded_size=(8, 8))
    assert labels.numel() == 0
    if return_segment_map:
        assert targets.shape == (8, 8) and bool((targets == NO_TARGET).all())
    else:
        assert targets.shape == (0, 8, 8) and targets.dtype == torch.float32
    far = torch.tensor([[5, 70000, -70000], [5, 5, 70000]])  # a value range too wide for the lookup table
    mapping = {5: 1, 70000: 2, -70000: 3}
    for label_map in (far, far.t()):  # also a non-contiguous map
        targets, labels = encode_segmentation_targets(label_map, instance_id_to_semantic_id=mapping,
                                                      return_segment_map=return_segment_map)
        one_hot, reference_map = _reference_targets(label_map, torch.tensor([-70000, 5, 70000]))
        assert labels.tolist() == [3, 1, 2]
        assert torch.equal(targets, reference_map if return_segment_map else one_hot)
    transposed = torch.as_tensor(np.random.default_rng(1).integers(0, 5, (9, 6))).t()
    targets, labels = encode_segmentation_targets(transposed, return_segment_map=return_segment_map)
    one_hot, reference_map = _reference_targets(transposed, torch.arange(5))
    assert torch.equal(targets, reference_map if return_segment_map else one_hot)


# ----------------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", SIZES[:5])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest-exact"])
def test_channels_last_resize_equals_channels_first(sizes, dtype, mode):
    """The kernels' property the RGB PIL fast path relies on (also the float kernel, used on CPUs where torchvision
    casts uint8 to float for bilinear)."""
    height, width, new_height, new_width = sizes
    generator = torch.Generator().manual_seed(0)
    channels_last = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).to(dtype)
    channels_last = channels_last.permute(2, 0, 1)
    channels_first = channels_last.contiguous()
    interpolation = tvF.InterpolationMode(mode)
    assert torch.equal(tvF.resize(channels_last, [new_height, new_width], interpolation=interpolation),
                       tvF.resize(channels_first, [new_height, new_width], interpolation=interpolation))


def _random_pil(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _reference_pixel_values(processor, images, sizes, padded_size, **overrides):
    """Channels-first copy, transformers' resize, `rescale_and_normalize`, zero padding."""
    settings = {name: overrides.get(name, getattr(processor, name)) for name in (
        "do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")}
    batch = []
    for image, new_size in zip(images, sizes):
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
        if settings["do_resize"]:
            tensor = processor.resize(tensor, SizeDict(height=new_size[0], width=new_size[1]),
                                      resample=settings["resample"])
        tensor = processor.rescale_and_normalize(tensor[None], settings["do_rescale"], settings["rescale_factor"],
                                                 settings["do_normalize"], tuple(settings["image_mean"]),
                                                 tuple(settings["image_std"]))[0]
        batch.append(F.pad(tensor, (0, padded_size[1] - tensor.shape[-1], 0, padded_size[0] - tensor.shape[-2])))
    return torch.stack(batch)


PROCESSOR_CASES = [
    dict(),
    dict(resample=3),  # bicubic
    dict(resample=0),  # nearest: the image is made channels-first before the resize
    dict(do_resize=False),
    dict(do_normalize=False),
    dict(do_rescale=False),
    dict(pad_size={"height": 128, "width": 160}),
    dict(snap_resize_to_size_divisor=False),
]


@pytest.mark.parametrize("processor_class", [SeriesMask2FormerImageProcessor, SeriesMaskFormerImageProcessor])
@pytest.mark.parametrize("overrides", PROCESSOR_CASES)
def test_processor_outputs_equal_the_straightforward_computation(processor_class, overrides):
    rng = np.random.default_rng(3)
    shapes = [(61, 83), (40, 33), (71, 71)]  # odd sizes, a batch of different sizes
    images = [_random_pil(rng, height, width) for height, width in shapes]
    maps = [rng.integers(0, 7, shape).astype(np.int32) for shape in shapes]
    maps[1][:] = 0  # an image without targets
    mapping = {i: i % 4 for i in range(7)}
    processor = processor_class(size={"shortest_edge": 64, "longest_edge": 1333})
    call = dict(images=images, segmentation_maps=maps, instance_id_to_semantic_id=mapping, ignore_index=0,
                return_tensors="pt", **overrides)
    one_hot, lean = processor(**call), processor(**call, return_segment_maps=True)

    size = SizeDict(shortest_edge=64, longest_edge=1333)
    snap = overrides.get("snap_resize_to_size_divisor", True)
    sizes = [resized_image_size(h, w, size, 32, snap) if overrides.get("do_resize", True) else (h, w)
             for h, w in shapes]
    padded_size = tuple(overrides["pad_size"].values()) if "pad_size" in overrides else tuple(
        -(-max(side) // 32) * 32 for side in zip(*sizes))
    pixel_values = _reference_pixel_values(processor, images, sizes, padded_size, **overrides)
    for encoded in (one_hot, lean):
        assert encoded["pixel_values"].dtype == pixel_values.dtype and encoded["pixel_values"].is_contiguous()
        assert torch.equal(encoded["pixel_values"], pixel_values)
        for index, (height, width) in enumerate(sizes):
            assert int(encoded["pixel_mask"][index].sum()) == height * width
            assert bool(encoded["pixel_mask"][index, :height, :width].all())
    for index, (label_map, new_size) in enumerate(zip(maps, sizes)):
        resized = _reference_resize(torch.from_numpy(label_map).long(), new_size)
        kept = _kept_ids(resized, dict(ignore_index=0))
        masks, segment_map = _reference_targets(resized, kept, padded_size)
        assert torch.equal(one_hot["mask_labels"][index], masks)
        assert torch.equal(lean["mask_labels"][index], segment_map)
        labels = torch.tensor([mapping[value] for value in kept.tolist()], dtype=torch.long)
        assert torch.equal(one_hot["class_labels"][index], labels) and torch.equal(lean["class_labels"][index], labels)
    assert one_hot["mask_labels"][1].shape[0] == 0 and bool((lean["mask_labels"][1] == NO_TARGET).all())


def test_rgb_pil_images_give_the_outputs_of_their_tensor_copies():
    """The PIL fast path (a channels-last view) against transformers' conversion of the same pixels (tensors)."""
    rng = np.random.default_rng(4)
    images = [_random_pil(rng, 57, 91), _random_pil(rng, 90, 45)]
    tensors = [torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous() for image in images]
    processor = SeriesMask2FormerImageProcessor(size={"shortest_edge": 48, "longest_edge": 100})
    for kwargs in (dict(return_tensors="pt"), dict()):
        from_pil, from_tensors = processor(images, **kwargs), processor(tensors, **kwargs)
        for key in ("pixel_values", "pixel_mask"):
            assert all(torch.equal(a, b) for a, b in zip(from_pil[key], from_tensors[key]))
