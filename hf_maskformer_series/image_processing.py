"""Image processors for MaskFormer and Mask2Former: pre-processing, target encoding and post-processing.

``SeriesMask2FormerImageProcessor`` and ``SeriesMaskFormerImageProcessor`` share everything except the
panoptic rule (see :class:`SeriesSegmentationImageProcessorBase`). Both read the ``preprocessor_config.json``
files that transformers' ``Mask2FormerImageProcessor`` / ``MaskFormerImageProcessor`` write (same parameter
names) and save themselves under their own ``image_processor_type``.

The tensor work of post-processing lives in :mod:`post_processing` so the video processor can share it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature, get_size_dict
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    PILImageResampling,
    SizeDict,
    get_image_size_for_max_height_width,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType

from .post_processing import SegmentationPostProcessingMixin

__all__ = [
    "SeriesMask2FormerImageProcessor",
    "SeriesMaskFormerImageProcessor",
    "SeriesSegmentationImageProcessorBase",
    "encode_segmentation_targets",
    "rgb_to_panoptic_id",
]


class SeriesSegmentationImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    ignore_index (`int`, *optional*):
        Label value that carries no target (no mask is made for it). With `do_reduce_labels`, label 0 becomes it.
    do_reduce_labels (`bool`, *optional*, defaults to `False`):
        Map label 0 to `ignore_index` and subtract 1 from every other label (class ids of semantic maps,
        instance ids and the classes they map to, panoptic `category_id`s). Requires `ignore_index`.
    num_labels (`int`, *optional*):
        Number of classes; when set, encoded class ids outside `[0, num_labels)` raise a `ValueError`.
    size_divisor (`int`, *optional*, defaults to 32):
        The padded batch size is rounded up to a multiple of it.
    snap_resize_to_size_divisor (`bool`, *optional*, defaults to `True`):
        `True` (transformers' behaviour): the resized size is rounded up to a multiple of `size_divisor`
        (the image is stretched slightly). `False` (the original detectron2 behaviour): the aspect ratio is
        kept and the multiple is reached by padding only.
    """

    ignore_index: int | None
    do_reduce_labels: bool
    num_labels: int | None
    size_divisor: int
    snap_resize_to_size_divisor: bool


# ----------------------------------------------------------------------------------------------------------------
# Target encoding (pure functions, shared with the video processor)
# ----------------------------------------------------------------------------------------------------------------


def rgb_to_panoptic_id(rgb: torch.Tensor) -> torch.Tensor:
    """Decode a COCO panoptic PNG: ``id = R + 256 * G + 256**2 * B``.

    Args:
        rgb: ``[height, width, 3]`` or ``[3, height, width]`` integer tensor.

    Returns:
        ``[height, width]`` int64 segment ids.
    """
    rgb = rgb.long()
    if rgb.ndim != 3 or 3 not in (rgb.shape[0], rgb.shape[-1]):
        raise ValueError(f"A panoptic RGB map must be [H, W, 3] or [3, H, W], got shape {tuple(rgb.shape)}.")
    if rgb.shape[-1] != 3:
        rgb = rgb.permute(1, 2, 0)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _reduce_labels(values: torch.Tensor, ignore_index: int) -> torch.Tensor:
    return torch.where(values == 0, torch.full_like(values, ignore_index), values - 1)


def _check_label_range(labels: torch.Tensor, num_labels: int | None, source: str) -> None:
    if labels.numel() == 0:
        return
    bad = labels < 0
    if num_labels is not None:
        bad = bad | (labels >= num_labels)
    if bool(bad.any()):
        offending = sorted(set(labels[bad].tolist()))
        allowed = f"[0, {num_labels})" if num_labels is not None else "non-negative ids"
        raise ValueError(
            f"Label ids {offending} from the {source} are outside the configured labels ({allowed}). Check "
            "`num_labels`, `ignore_index` (pixels that carry no target) and `do_reduce_labels`."
        )


def _present_values(label_map: torch.Tensor) -> torch.Tensor:
    """Sorted distinct values of an integer map (a histogram for small non-negative ids, faster than `unique`)."""
    flat = label_map.flatten()
    if flat.numel() and 0 <= int(flat.min()) and int(flat.max()) < 65536:
        return torch.bincount(flat).nonzero().flatten()
    return torch.unique(flat)


def encode_segmentation_targets(
    label_map: torch.Tensor,
    instance_id_to_semantic_id: Mapping[int, int] | None = None,
    segments_info: Sequence[Mapping[str, Any]] | None = None,
    ignore_index: int | None = None,
    do_reduce_labels: bool = False,
    num_labels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn one label map into binary masks and class ids (the label contract of the processors).

    The map's kind is chosen by the extra argument: `segments_info` -> COCO panoptic segment-id map,
    `instance_id_to_semantic_id` -> instance-id map, neither -> semantic map. See
    :class:`SeriesSegmentationImageProcessorBase` for the contract.

    Args:
        label_map: ``[height, width]`` integer map.
        instance_id_to_semantic_id: instance id -> class id.
        segments_info: COCO panoptic segments (dicts with ``id``, ``category_id``, optional ``iscrowd``).
        ignore_index: label that carries no target.
        do_reduce_labels: 0 -> `ignore_index`, others -1.
        num_labels: when set, class ids must lie in ``[0, num_labels)``.

    Returns:
        ``masks [num_masks, height, width]`` float 0/1 and ``labels [num_masks]`` int64.
    """
    if instance_id_to_semantic_id is not None and segments_info is not None:
        raise ValueError("Pass either `instance_id_to_semantic_id` (instance maps) or `segments_info` (panoptic).")
    if do_reduce_labels and ignore_index is None:
        raise ValueError("`do_reduce_labels=True` needs `ignore_index` (label 0 is mapped to it).")
    label_map = label_map.long()
    device = label_map.device

    if segments_info is not None:
        segment_ids = _present_values(label_map)
        segment_ids = segment_ids[segment_ids != 0]  # 0 = void / unlabelled in COCO panoptic
        by_id = {}
        for segment in segments_info:
            if "id" not in segment or "category_id" not in segment:
                raise ValueError(f"Each panoptic segment needs 'id' and 'category_id', got {dict(segment)}.")
            by_id[int(segment["id"])] = segment
        present = segment_ids.tolist()
        missing = [segment_id for segment_id in present if segment_id not in by_id]
        if missing:
            raise ValueError(
                f"Panoptic segment ids {missing[:10]} appear in the segmentation map but not in `segments_info`."
            )
        kept_ids, classes = [], []
        for segment_id in present:
            segment = by_id[segment_id]
            if segment.get("iscrowd", 0):
                continue
            kept_ids.append(segment_id)
            classes.append(int(segment["category_id"]))
        kept = torch.tensor(kept_ids, dtype=torch.long, device=device)
        labels = torch.tensor(classes, dtype=torch.long, device=device)
        if do_reduce_labels:
            labels = _reduce_labels(labels, ignore_index)
        if ignore_index is not None:
            valid = labels != ignore_index
            kept, labels = kept[valid], labels[valid]
        _check_label_range(labels, num_labels, "panoptic `segments_info`")
        masks = label_map.unsqueeze(0) == kept.view(-1, 1, 1)
        return masks.float(), labels

    if do_reduce_labels:
        label_map = _reduce_labels(label_map, ignore_index)
    values = _present_values(label_map)
    if ignore_index is not None:
        values = values[values != ignore_index]
    masks = label_map.unsqueeze(0) == values.view(-1, 1, 1)

    if instance_id_to_semantic_id is None:
        _check_label_range(values, num_labels, "semantic segmentation map")
        return masks.float(), values

    mapping = {int(key): int(value) for key, value in instance_id_to_semantic_id.items()}
    instance_ids = values.tolist()
    lookup_ids = [instance_id + 1 if do_reduce_labels else instance_id for instance_id in instance_ids]
    missing = [instance_id for instance_id in lookup_ids if instance_id not in mapping]
    if missing:
        raise ValueError(
            f"Instance ids {missing[:10]} appear in the instance map but not in `instance_id_to_semantic_id` "
            f"({len(lookup_ids)} instances in the map, {len(mapping)} entries in the mapping)."
        )
    labels = torch.tensor([mapping[instance_id] for instance_id in lookup_ids], dtype=torch.long, device=device)
    if do_reduce_labels:
        labels = labels - 1
    _check_label_range(labels, num_labels, "`instance_id_to_semantic_id` mapping")
    return masks.float(), labels


def _label_map_to_tensor(label_map: Any, panoptic: bool) -> torch.Tensor:
    """A label map (PIL, numpy, torch) as an int64 ``[height, width]`` tensor (COCO RGB decoded when panoptic)."""
    if hasattr(label_map, "mode") and hasattr(label_map, "size") and not isinstance(label_map, np.ndarray):
        label_map = np.array(label_map)
    tensor = torch.as_tensor(np.asarray(label_map) if not isinstance(label_map, torch.Tensor) else label_map)
    if tensor.ndim == 3 and 1 in (tensor.shape[0], tensor.shape[-1]) and 3 not in (tensor.shape[0], tensor.shape[-1]):
        tensor = tensor.squeeze(0) if tensor.shape[0] == 1 else tensor.squeeze(-1)
    if tensor.ndim == 3 and panoptic:
        return rgb_to_panoptic_id(tensor)
    if tensor.ndim != 2:
        raise ValueError(
            f"A segmentation map must be [height, width] (or an RGB COCO panoptic map with `segments_info`), got "
            f"shape {tuple(tensor.shape)}."
        )
    if tensor.is_floating_point():
        if not bool((tensor == tensor.round()).all()):
            raise ValueError("A segmentation map must hold integer label ids, got non-integer values.")
    return tensor.long()


def _as_per_image_list(value: Any, batch_size: int, name: str) -> list:
    """Broadcast a single per-image argument (dict / list of dicts) to a list of length `batch_size`."""
    if value is None:
        return [None] * batch_size
    if isinstance(value, Mapping):
        return [value] * batch_size
    value = list(value)
    if len(value) != batch_size:
        raise ValueError(f"Got {len(value)} entries in `{name}` for {batch_size} images.")
    return value


# ----------------------------------------------------------------------------------------------------------------
# The processors
# ----------------------------------------------------------------------------------------------------------------


class SeriesSegmentationImageProcessorBase(SegmentationPostProcessingMixin, TorchvisionBackend):
    r"""Shared image processor of the MaskFormer family (pre-processing, targets, post-processing).

    **Pre-processing** (`__call__` / `preprocess`): resize (`size` as in transformers: `shortest_edge` +
    `longest_edge`, `shortest_edge`, `max_height` + `max_width`, or `height` + `width`; with
    `snap_resize_to_size_divisor` the result is rounded up to a multiple of `size_divisor`, as transformers'
    `Mask2FormerImageProcessor` does), rescale, normalise, then pad bottom/right with zeros to the batch's
    largest size rounded up to `size_divisor` (or exactly to `pad_size`). Returns `pixel_values
    [batch, 3, height, width]` and `pixel_mask [batch, height, width]` (1 = real pixel). Images must have 3
    channels (grayscale / RGBA only with `do_convert_rgb=True`).

    **Label contract** (training targets). Pass one label map per image as `segmentation_maps`; it must have
    the image's size (before resizing) and is resized with nearest-exact interpolation together with the image.
    Its kind is set by the extra argument:

    - semantic map (no extra argument): each pixel is a class id; one mask per class present.
    - instance map + `instance_id_to_semantic_id` (a dict, or one dict per image): each pixel is an instance id;
      one mask per instance, class = `instance_id_to_semantic_id[instance_id]`. Every instance id in the map
      (except `ignore_index`) must be in the mapping.
    - COCO panoptic + `segments_info` (one list of segment dicts per image, each with `id`, `category_id`,
      optional `iscrowd`): the map holds segment ids (or is the RGB panoptic PNG, decoded as
      `R + 256 G + 256^2 B`). Id 0 is void (no target); crowd segments get no mask (as the original's COCO
      panoptic mapper); every non-zero id in the map must be listed in `segments_info`.

    Label values are class ids in the model's label space, `0 .. num_labels - 1`. `ignore_index` marks "no
    target": semantic pixels / instance ids / panoptic categories equal to it produce no mask (they are
    background the loss never sees, not a class). With `do_reduce_labels`, value 0 (the dataset's background)
    becomes `ignore_index` and every other label (class ids, instance ids and the classes they map to,
    panoptic `category_id`s) is decremented by 1, like ADE20K's 1-based classes; it requires `ignore_index`.
    When `num_labels` is set, an encoded class outside `[0, num_labels)` is a `ValueError`. The outputs are
    `mask_labels` (list of `[num_masks, height, width]` float 0/1, padded with zeros like the image) and
    `class_labels` (list of `[num_masks]` int64).

    Compared with transformers' `Mask2FormerImageProcessor`: same `pixel_values` (same torchvision resize),
    `pixel_mask`, `mask_labels` and `class_labels` on valid inputs, except that (a) the padded size is
    rounded up to `size_divisor` also when `do_resize=False` (transformers only pads to the batch maximum)
    and (b) `mask_labels` are padded with 0, where transformers fills the padding of the binary masks with
    `ignore_index`.

    **Post-processing**: see the `post_process_*` methods. Masks are upsampled to the real padded input size
    (from the model's `padded_image_size`), the padding is cropped (from `image_sizes`) and the result is
    resized to `target_sizes` -- the original implementation's order. Subclasses set
    `panoptic_intersects_with_mask` (Mask2Former: a panoptic segment is its arg-max area intersected with
    `mask_prob >= mask_threshold`; MaskFormer v1: the arg-max area alone).
    """

    valid_kwargs = SeriesSegmentationImageProcessorKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 800, "longest_edge": 1333}
    default_to_square = False
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    model_input_names = ["pixel_values", "pixel_mask"]
    size_divisor = 32
    do_reduce_labels = False
    snap_resize_to_size_divisor = True

    panoptic_intersects_with_mask: bool = True

    def __init__(self, **kwargs: Unpack[SeriesSegmentationImageProcessorKwargs]) -> None:
        # Legacy names found in older preprocessor_config.json files.
        if "reduce_labels" in kwargs:
            reduce_labels = kwargs.pop("reduce_labels")
            kwargs.setdefault("do_reduce_labels", reduce_labels)
        if "size_divisibility" in kwargs:
            size_divisibility = kwargs.pop("size_divisibility")
            kwargs.setdefault("size_divisor", size_divisibility)
        size = kwargs.pop("size", None)
        max_size = kwargs.pop("max_size", None)
        if size is None:
            size = dict(self.size)
            if max_size is not None:
                size["longest_edge"] = max_size
        kwargs["size"] = get_size_dict(size, max_size=max_size, default_to_square=False)
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Serializable attributes (what `save_pretrained` writes), without transformers' legacy `_max_size`."""
        output = super().to_dict()
        output.pop("_max_size", None)
        auto_map = output.get("auto_map")
        if isinstance(auto_map, dict) and isinstance(auto_map.get("AutoImageProcessor"), str):
            # the per-backend form: transformers 5.x otherwise derives a bogus `...VideoProcessor` remote class from a
            # plain string and makes `pipeline()` ask whether to trust remote code even though ours is installed
            output["auto_map"] = {**auto_map, "AutoImageProcessor": {"torchvision": auto_map["AutoImageProcessor"]}}
        return output

    # ------------------------------------------------------------------------------------------------------------
    # Pre-processing
    # ------------------------------------------------------------------------------------------------------------

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any = None,
        instance_id_to_semantic_id: list[dict[int, int]] | dict[int, int] | None = None,
        segments_info: list[list[dict]] | None = None,
        **kwargs: Unpack[SeriesSegmentationImageProcessorKwargs],
    ) -> BatchFeature:
        """Pre-process images (and encode training targets).

        Args:
            images: one image or a list (PIL, numpy or torch; channels first or last).
            segmentation_maps: one label map per image (see the class docstring for the label contract).
            instance_id_to_semantic_id: instance id -> class id (one dict for all images, or one per image).
            segments_info: COCO panoptic segments, one list per image.
            **kwargs: any processor attribute, overriding it for this call.

        Returns:
            `BatchFeature` with `pixel_values [batch, 3, H, W]`, `pixel_mask [batch, H, W]` and, with labels,
            `mask_labels` (list of `[num_masks, H, W]`) and `class_labels` (list of `[num_masks]`).
        """
        return super().preprocess(images, segmentation_maps, instance_id_to_semantic_id, segments_info, **kwargs)

    @staticmethod
    def _check_raw_channels(images: Any) -> None:
        items = images if isinstance(images, list | tuple) else [images]
        for image in items:
            if isinstance(image, list | tuple):
                SeriesSegmentationImageProcessorBase._check_raw_channels(image)
                continue
            if isinstance(image, np.ndarray | torch.Tensor) and image.ndim == 3:
                if image.shape[0] not in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
                    raise ValueError(
                        f"Images must have 3 (RGB) channels, first or last; got an image of shape "
                        f"{tuple(image.shape)}."
                    )

    def _preprocess_image_like_inputs(
        self,
        images: Any,
        segmentation_maps: Any,
        instance_id_to_semantic_id: Any,
        segments_info: Any,
        do_convert_rgb: bool | None,
        input_data_format: Any,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        self._check_raw_channels(images)
        prepared = self._prepare_image_like_inputs(
            images=images, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, device=device
        )
        for image in prepared:
            if image.shape[0] != 3:
                raise ValueError(
                    f"Images must have 3 (RGB) channels, got {image.shape[0]} (shape {tuple(image.shape)}); pass "
                    "`do_convert_rgb=True` to convert grayscale or RGBA images."
                )
        label_maps = None
        if segmentation_maps is not None:
            panoptic = segments_info is not None
            if isinstance(segmentation_maps, list | tuple):
                raw_maps = list(segmentation_maps)
            elif isinstance(segmentation_maps, np.ndarray | torch.Tensor) and segmentation_maps.ndim == 3 and not (
                panoptic and segmentation_maps.shape[-1] == 3
            ):
                raw_maps = list(segmentation_maps)
            else:
                raw_maps = [segmentation_maps]
            if len(raw_maps) != len(prepared):
                raise ValueError(f"Got {len(raw_maps)} segmentation maps for {len(prepared)} images.")
            label_maps = [_label_map_to_tensor(label_map, panoptic).to(prepared[0].device) for label_map in raw_maps]
        elif instance_id_to_semantic_id is not None or segments_info is not None:
            raise ValueError("`instance_id_to_semantic_id` / `segments_info` need `segmentation_maps`.")
        return self._preprocess(prepared, label_maps, instance_id_to_semantic_id, segments_info, **kwargs)

    def _resized_size(
        self, height: int, width: int, size: SizeDict, size_divisor: int, snap: bool
    ) -> tuple[int, int]:
        if size.shortest_edge and size.longest_edge:
            new_height, new_width = get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
        elif size.shortest_edge:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = size.shortest_edge, int(size.shortest_edge * long / short)
            new_height, new_width = (new_long, new_short) if width <= height else (new_short, new_long)
        elif size.max_height and size.max_width:
            new_height, new_width = get_image_size_for_max_height_width((height, width), size.max_height, size.max_width)
        elif size.height and size.width:
            new_height, new_width = size.height, size.width
        else:
            raise ValueError(
                "`size` must hold 'shortest_edge' (+ optional 'longest_edge'), 'max_height' + 'max_width', or "
                f"'height' + 'width'; got {dict(size)}."
            )
        if snap and size_divisor:
            new_height = -(-new_height // size_divisor) * size_divisor
            new_width = -(-new_width // size_divisor) * size_divisor
        return int(new_height), int(new_width)

    @staticmethod
    def _resize_label_map(label_map: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
        if tuple(label_map.shape) == new_size:
            return label_map
        # nearest resizing of integer ids: float64 keeps panoptic ids (up to 256^3) exact
        resized = F.interpolate(label_map[None, None].double(), size=new_size, mode="nearest-exact")
        return resized[0, 0].long()

    def _preprocess(
        self,
        images: list[torch.Tensor],
        label_maps: list[torch.Tensor] | None,
        instance_id_to_semantic_id: Any,
        segments_info: Any,
        do_resize: bool,
        size: SizeDict,
        resample: Any,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Any,
        image_std: Any,
        size_divisor: int | None = None,
        pad_size: SizeDict | None = None,
        ignore_index: int | None = None,
        do_reduce_labels: bool = False,
        num_labels: int | None = None,
        snap_resize_to_size_divisor: bool = True,
        return_tensors: str | TensorType | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        batch_size = len(images)
        id_maps = _as_per_image_list(instance_id_to_semantic_id, batch_size, "instance_id_to_semantic_id")
        if segments_info is not None and len(segments_info) != batch_size:
            raise ValueError(f"Got {len(segments_info)} `segments_info` lists for {batch_size} images.")
        size_divisor = size_divisor or 0

        processed, mask_labels, class_labels = [], [], []
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            label_map = None
            if label_maps is not None:
                label_map = label_maps[index]
                if tuple(label_map.shape) != (height, width):
                    raise ValueError(
                        f"Segmentation map {index} has size {tuple(label_map.shape)} but its image has size "
                        f"{(height, width)}."
                    )
            if do_resize:
                new_size = self._resized_size(height, width, size, size_divisor, snap_resize_to_size_divisor)
                image = self.resize(image, size=SizeDict(height=new_size[0], width=new_size[1]), resample=resample)
                if label_map is not None:
                    label_map = self._resize_label_map(label_map, new_size)
            image = self.rescale_and_normalize(
                image[None], do_rescale, rescale_factor, do_normalize, image_mean, image_std
            )[0]
            processed.append(image)
            if label_map is not None:
                masks, labels = encode_segmentation_targets(
                    label_map,
                    instance_id_to_semantic_id=id_maps[index],
                    segments_info=segments_info[index] if segments_info is not None else None,
                    ignore_index=ignore_index,
                    do_reduce_labels=do_reduce_labels,
                    num_labels=num_labels,
                )
                mask_labels.append(masks)
                class_labels.append(labels)

        max_height = max(image.shape[-2] for image in processed)
        max_width = max(image.shape[-1] for image in processed)
        if pad_size is not None:
            if not (pad_size.height and pad_size.width):
                raise ValueError(f"`pad_size` must hold 'height' and 'width', got {dict(pad_size)}.")
            if pad_size.height < max_height or pad_size.width < max_width:
                raise ValueError(
                    f"`pad_size` {(pad_size.height, pad_size.width)} is smaller than the largest processed image "
                    f"{(max_height, max_width)}."
                )
            padded_height, padded_width = pad_size.height, pad_size.width
        elif size_divisor:
            padded_height = -(-max_height // size_divisor) * size_divisor
            padded_width = -(-max_width // size_divisor) * size_divisor
        else:
            padded_height, padded_width = max_height, max_width

        # one allocation for the batch (zeros = the padding), each image copied into its top-left corner
        pixel_values = processed[0].new_zeros((batch_size, processed[0].shape[0], padded_height, padded_width))
        pixel_mask = torch.zeros((batch_size, padded_height, padded_width), dtype=torch.int64,
                                 device=processed[0].device)
        for index, image in enumerate(processed):
            height, width = image.shape[-2:]
            pixel_values[index, :, :height, :width] = image
            pixel_mask[index, :height, :width] = 1
            if label_maps is not None:
                padding = (0, padded_width - width, 0, padded_height - height)
                mask_labels[index] = F.pad(mask_labels[index], padding, value=0.0)

        if return_tensors is None:  # per-image tensors, as transformers' processors return without return_tensors
            pixel_values, pixel_mask = list(pixel_values), list(pixel_mask)
        encoded = BatchFeature(data={"pixel_values": pixel_values, "pixel_mask": pixel_mask}, tensor_type=return_tensors)
        if label_maps is not None:
            encoded["mask_labels"] = mask_labels
            encoded["class_labels"] = class_labels
        return encoded


class SeriesMask2FormerImageProcessor(SeriesSegmentationImageProcessorBase):
    """Image processor for Mask2Former (see `SeriesSegmentationImageProcessorBase` for the full contract).

    Panoptic segments are the arg-max area intersected with `mask prob >= mask_threshold`, as in the original
    Mask2Former.
    """

    panoptic_intersects_with_mask = True


class SeriesMaskFormerImageProcessor(SeriesSegmentationImageProcessorBase):
    """Image processor for MaskFormer v1 (see `SeriesSegmentationImageProcessorBase` for the full contract).

    The only difference from Mask2Former's: a panoptic segment is every pixel whose arg-max query is the
    segment's query (`mask = ids == k`, no `>= mask_threshold` intersection), as in the original MaskFormer.
    """

    panoptic_intersects_with_mask = False
