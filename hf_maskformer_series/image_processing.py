"""Image processors for MaskFormer and Mask2Former: pre-processing, target encoding and post-processing.

``SeriesMask2FormerImageProcessor`` and ``SeriesMaskFormerImageProcessor`` share everything except the
panoptic rule (see :class:`SeriesSegmentationImageProcessorBase`). Both read the ``preprocessor_config.json``
files that transformers' ``Mask2FormerImageProcessor`` / ``MaskFormerImageProcessor`` write (same parameter
names) and save themselves under their own ``image_processor_type``.

The tensor work of post-processing lives in :mod:`post_processing` so the video processor can share it.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2.functional as tvF
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature, get_size_dict
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    PILImageResampling,
    SizeDict,
    pil_torch_interpolation_mapping,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType

from .post_processing import SegmentationPostProcessingMixin
from .target_encoding import (
    encode_segmentation_targets,
    label_map_to_tensor,
    resize_label_map,
    resized_image_size,
    rgb_to_panoptic_id,
)

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
    return_segment_maps (`bool`, *optional*, defaults to `False`):
        Return each image's training targets as one integer segment map (`mask_labels[i]` int32 `[H, W]`, value
        `j` = target `j`, `-1` = no target or padding) instead of `[num_masks, H, W]` one-hot masks. The models'
        losses accept both forms and give the same losses; the map is `num_masks` times smaller.
    """

    ignore_index: int | None
    do_reduce_labels: bool
    num_labels: int | None
    size_divisor: int
    snap_resize_to_size_divisor: bool
    return_segment_maps: bool


_CHANNELS_LAST_RESIZE = (tvF.InterpolationMode.BILINEAR, tvF.InterpolationMode.BICUBIC)


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
    `class_labels` (list of `[num_masks]` int64); with `return_segment_maps=True`, `mask_labels` holds one int32
    `[height, width]` segment map per image instead (value `j` = the pixel belongs to target `j`, `-1` = no target
    or padding), the lean form the models' losses also accept (see :mod:`target_encoding`).

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
            `mask_labels` (list of `[num_masks, H, W]`, or of `[H, W]` segment maps with `return_segment_maps`)
            and `class_labels` (list of `[num_masks]`).
        """
        if isinstance(images, list | tuple) and len(images) == 0:
            raise ValueError("`images` is empty: pass at least one image.")
        return super().preprocess(images, segmentation_maps, instance_id_to_semantic_id, segments_info, **kwargs)

    @staticmethod
    def _gray_to_rgb(images: Any, do_convert_rgb: bool) -> Any:
        """2-D (grayscale) numpy/torch images as 3-channel ones when `do_convert_rgb` (PIL images convert
        themselves); without it a 2-D image is a clear error."""
        if isinstance(images, list | tuple):
            return [SeriesSegmentationImageProcessorBase._gray_to_rgb(image, do_convert_rgb) for image in images]
        if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 2:
            if not do_convert_rgb:
                raise ValueError(f"Got a 2-D (grayscale) image of shape {tuple(images.shape)}; pass "
                                 "`do_convert_rgb=True` to convert it to RGB.")
            return np.repeat(images[..., None], 3, -1) if isinstance(images, np.ndarray) else images.expand(3, *images.shape)
        return images

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
        images = self._gray_to_rgb(images, bool(do_convert_rgb if do_convert_rgb is not None else self.do_convert_rgb))
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
            label_maps = [label_map_to_tensor(label_map, panoptic).to(prepared[0].device) for label_map in raw_maps]
        elif instance_id_to_semantic_id is not None or segments_info is not None:
            raise ValueError("`instance_id_to_semantic_id` / `segments_info` need `segmentation_maps`.")
        return self._preprocess(prepared, label_maps, instance_id_to_semantic_id, segments_info, **kwargs)

    def process_image(self, image: Any, *args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        """One raw image as a `[3, H, W]` tensor (transformers' conversion), except that an RGB PIL image stays in
        its channels-last memory (a `[3, H, W]` view of the `[H, W, 3]` pixels): the uint8 resize kernels work in
        that layout, so the channels-first copy would be undone inside the resize (see `_resize_image`)."""
        if isinstance(image, PIL.Image.Image) and image.mode == "RGB" and device in (None, "cpu"):
            return torch.from_numpy(np.array(image)).permute(2, 0, 1)
        return super().process_image(image, *args, device=device, **kwargs)

    def _resize_image(self, image: torch.Tensor, new_size: tuple[int, int], resample: Any) -> torch.Tensor:
        """`self.resize` to `new_size`; a channels-last view is resized in place only where the result is the same
        as from the channels-first copy (uint8 bilinear / bicubic: the kernel itself works channels-last)."""
        interpolation = pil_torch_interpolation_mapping.get(resample, resample)
        if not image.is_contiguous() and interpolation not in _CHANNELS_LAST_RESIZE:
            image = image.contiguous()
        return self.resize(image, size=SizeDict(height=new_size[0], width=new_size[1]), resample=resample)

    @staticmethod
    def _padded_size(sizes: list[tuple[int, int]], size_divisor: int, pad_size: SizeDict | None) -> tuple[int, int]:
        """The batch's padded `(height, width)`: `pad_size`, else the largest size rounded up to `size_divisor`."""
        max_height = max(height for height, _ in sizes)
        max_width = max(width for _, width in sizes)
        if pad_size is not None:
            if not (pad_size.height and pad_size.width):
                raise ValueError(f"`pad_size` must hold 'height' and 'width', got {dict(pad_size)}.")
            if pad_size.height < max_height or pad_size.width < max_width:
                raise ValueError(
                    f"`pad_size` {(pad_size.height, pad_size.width)} is smaller than the largest processed image "
                    f"{(max_height, max_width)}."
                )
            return pad_size.height, pad_size.width
        if size_divisor:
            return -(-max_height // size_divisor) * size_divisor, -(-max_width // size_divisor) * size_divisor
        return max_height, max_width

    def _pixel_values(
        self,
        images: list[torch.Tensor],
        padded_size: tuple[int, int],
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Any,
        image_std: Any,
    ) -> torch.Tensor:
        """Rescale + normalise the resized `[3, h, w]` images into one zero-padded `[batch, 3, H, W]` tensor.

        With both steps (the default), each image is normalised in its place in the batch tensor with transformers'
        fused constants -- `(float32(x) - mean / rescale_factor) / (std / rescale_factor)`, the same operations on
        the same values as `rescale_and_normalize` -- which skips the float copy of the image and its padded copy.
        """
        batch_size, channels = len(images), images[0].shape[0]
        if not (do_rescale and do_normalize):
            images = [
                self.rescale_and_normalize(image[None], do_rescale, rescale_factor, do_normalize, image_mean,
                                           image_std)[0]
                for image in images
            ]
            pixel_values = images[0].new_zeros((batch_size, channels, *padded_size))
            for index, image in enumerate(images):
                pixel_values[index, :, : image.shape[-2], : image.shape[-1]] = image
            return pixel_values
        device = images[0].device
        mean, std, _ = self._fuse_mean_std_and_rescale_factor(
            do_normalize=do_normalize, image_mean=image_mean, image_std=image_std, do_rescale=do_rescale,
            rescale_factor=rescale_factor, device=device,
        )
        mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)
        pixel_values = torch.empty((batch_size, channels, *padded_size), dtype=torch.float32, device=device)
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            pixel_values[index, :, height:].zero_()
            pixel_values[index, :, :height, width:].zero_()
            target = pixel_values[index, :, :height, :width]
            target.copy_(image)
            target.sub_(mean).div_(std)
        return pixel_values

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
        return_segment_maps: bool | None = False,
        return_tensors: str | TensorType | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        batch_size = len(images)
        id_maps = _as_per_image_list(instance_id_to_semantic_id, batch_size, "instance_id_to_semantic_id")
        if segments_info is not None and len(segments_info) != batch_size:
            raise ValueError(f"Got {len(segments_info)} `segments_info` lists for {batch_size} images.")
        size_divisor = size_divisor or 0

        # the geometry first, so that every output is written once, in its padded place
        sizes = []
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            if label_maps is not None and tuple(label_maps[index].shape) != (height, width):
                raise ValueError(
                    f"Segmentation map {index} has size {tuple(label_maps[index].shape)} but its image has size "
                    f"{(height, width)}."
                )
            sizes.append(
                resized_image_size(height, width, size, size_divisor, snap_resize_to_size_divisor)
                if do_resize else (height, width)
            )
        padded_height, padded_width = self._padded_size(sizes, size_divisor, pad_size)

        resized, mask_labels, class_labels = [], [], []
        for index, (image, new_size) in enumerate(zip(images, sizes)):
            resized.append(self._resize_image(image, new_size, resample) if do_resize else image)
            if label_maps is not None:
                masks, labels = encode_segmentation_targets(
                    resize_label_map(label_maps[index], new_size),
                    instance_id_to_semantic_id=id_maps[index],
                    segments_info=segments_info[index] if segments_info is not None else None,
                    ignore_index=ignore_index,
                    do_reduce_labels=do_reduce_labels,
                    num_labels=num_labels,
                    return_segment_map=bool(return_segment_maps),
                    padded_size=(padded_height, padded_width),
                )
                mask_labels.append(masks)
                class_labels.append(labels)

        pixel_values = self._pixel_values(
            resized, (padded_height, padded_width), do_rescale, rescale_factor, do_normalize, image_mean, image_std
        )
        pixel_mask = torch.zeros((batch_size, padded_height, padded_width), dtype=torch.int64,
                                 device=pixel_values.device)
        for index, (height, width) in enumerate(sizes):
            pixel_mask[index, :height, :width] = 1

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
