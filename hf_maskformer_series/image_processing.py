"""Image processors for MaskFormer and Mask2Former: pre-processing, target encoding and post-processing.

``SeriesMask2FormerImageProcessor`` and ``SeriesMaskFormerImageProcessor`` share everything except the
panoptic rule (see :class:`SeriesSegmentationImageProcessorBase`). Both read the ``preprocessor_config.json``
files that transformers' ``Mask2FormerImageProcessor`` / ``MaskFormerImageProcessor`` write (same parameter
names) and save themselves under their own ``image_processor_type``.

The tensor work of post-processing lives in :mod:`post_processing` so the video processor can share it.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature, get_size_dict
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    PILImageResampling,
    SizeDict,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType

from .post_processing import (
    binary_mask_to_coco_rle,
    crop_and_resize_masks,
    instance_scores_from_selection,
    panoptic_from_selection,
    select_panoptic_queries,
    select_top_k_query_classes,
    semantic_scores_per_pixel,
    upsample_crop_resize,
    upsample_masks,
)
from .target_encoding import (
    NO_TARGET,
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


def _outputs_field(outputs: Any, name: str) -> Any:
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


# ----------------------------------------------------------------------------------------------------------------
# The processors
# ----------------------------------------------------------------------------------------------------------------


class SeriesSegmentationImageProcessorBase(TorchvisionBackend):
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
            label_maps = [label_map_to_tensor(label_map, panoptic).to(prepared[0].device) for label_map in raw_maps]
        elif instance_id_to_semantic_id is not None or segments_info is not None:
            raise ValueError("`instance_id_to_semantic_id` / `segments_info` need `segmentation_maps`.")
        return self._preprocess(prepared, label_maps, instance_id_to_semantic_id, segments_info, **kwargs)

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
                new_size = resized_image_size(height, width, size, size_divisor, snap_resize_to_size_divisor)
                image = self.resize(image, size=SizeDict(height=new_size[0], width=new_size[1]), resample=resample)
                if label_map is not None:
                    label_map = resize_label_map(label_map, new_size)
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
                    return_segment_map=bool(return_segment_maps),
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
                mask_labels[index] = F.pad(mask_labels[index], padding, value=NO_TARGET if return_segment_maps else 0)

        if return_tensors is None:  # per-image tensors, as transformers' processors return without return_tensors
            pixel_values, pixel_mask = list(pixel_values), list(pixel_mask)
        encoded = BatchFeature(data={"pixel_values": pixel_values, "pixel_mask": pixel_mask}, tensor_type=return_tensors)
        if label_maps is not None:
            encoded["mask_labels"] = mask_labels
            encoded["class_labels"] = class_labels
        return encoded

    # ------------------------------------------------------------------------------------------------------------
    # Post-processing
    # ------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _image_geometry(
        outputs: Any, batch_size: int, mask_size: tuple[int, int], target_sizes: Any
    ) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
        """Per image: (padded input size, un-padded size inside it, output size)."""
        if target_sizes is not None:
            if isinstance(target_sizes, torch.Tensor):
                target_sizes = target_sizes.tolist()
            target_sizes = list(target_sizes)
            if len(target_sizes) != batch_size:
                raise ValueError(
                    f"Got {len(target_sizes)} target sizes for a batch of {batch_size}; pass one (height, width) "
                    "per image."
                )
        image_sizes = _outputs_field(outputs, "image_sizes")
        padded_image_size = _outputs_field(outputs, "padded_image_size")
        default_padded = (4 * mask_size[0], 4 * mask_size[1])
        geometry = []
        for index in range(batch_size):
            if padded_image_size is not None:
                padded = torch.as_tensor(padded_image_size)
                padded = padded[index] if padded.ndim == 2 else padded
                padded = (int(padded[0]), int(padded[1]))
            else:
                padded = default_padded
            if image_sizes is not None:
                crop = torch.as_tensor(image_sizes)[index]
                crop = (int(crop[0]), int(crop[1]))
            else:
                crop = padded
            output = crop if target_sizes is None else (int(target_sizes[index][0]), int(target_sizes[index][1]))
            geometry.append((padded, crop, output))
        return geometry

    @staticmethod
    def _logits(outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        class_logits = _outputs_field(outputs, "class_queries_logits")
        mask_logits = _outputs_field(outputs, "masks_queries_logits")
        if class_logits is None or mask_logits is None:
            raise ValueError("`outputs` must carry `class_queries_logits` and `masks_queries_logits`.")
        if class_logits.shape[:2] != mask_logits.shape[:2]:
            raise ValueError(
                f"`class_queries_logits` {tuple(class_logits.shape)} and `masks_queries_logits` "
                f"{tuple(mask_logits.shape)} disagree on batch size / number of queries."
            )
        return class_logits, mask_logits

    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: list[tuple[int, int]] | None = None,
        return_segmentation_scores: bool = False,
        postprocess_before_inference: bool = False,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """Semantic segmentation maps (class id per pixel).

        Class scores are ``sum_q softmax(class_logits)[q, :K] * sigmoid(mask_logits[q])``. The mask logits are
        upsampled to the padded input size (`outputs.padded_image_size`), cropped to the image
        (`outputs.image_sizes`), and either the `[K, h, w]` scores are then resized to `target_sizes` (default,
        the original's semantic flow and transformers' order) or, with `postprocess_before_inference=True`, the
        mask logits are resized first (the original's `SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE`).

        Differences from transformers: transformers upsamples to a fixed 384x384 and never crops the padding.
        Outputs without `image_sizes` / `padded_image_size` (e.g. transformers' own) use 4x the mask size and
        no crop.

        Args:
            outputs: model outputs with `class_queries_logits [B, Q, K+1]`, `masks_queries_logits [B, Q, h, w]`
                and optionally `image_sizes [B, 2]` and `padded_image_size [2]`.
            target_sizes: one `(height, width)` per image; `None` gives the un-padded input size.
            return_segmentation_scores: also return the `[K, height, width]` scores.
            postprocess_before_inference: resize the mask logits before combining them (see above).

        Returns:
            One `[height, width]` int64 map per image, or `SemanticSegmentationPostProcessorOutput`s with
            `segmentation` and `segmentation_scores` when `return_segmentation_scores`.
        """
        class_logits, mask_logits = self._logits(outputs)
        geometry = self._image_geometry(outputs, class_logits.shape[0], tuple(mask_logits.shape[-2:]), target_sizes)
        results = []
        for index, (padded, crop, output_size) in enumerate(geometry):
            class_probs = class_logits[index].float().softmax(-1)[:, :-1]
            if postprocess_before_inference:
                masks = upsample_crop_resize(mask_logits[index], padded, crop, output_size)
                pixel_scores = semantic_scores_per_pixel(class_probs, masks.float().sigmoid())  # [H, W, K]
            else:
                # The original resizes the [K, h, w] scores. Resizing is linear, so when the output is smaller
                # than the cropped input, resizing the [Q, h, w] mask probabilities first and combining them at
                # the output size gives the same scores (up to float rounding) for less work.
                masks = crop_and_resize_masks(upsample_masks(mask_logits[index], padded, pixel_major=True), crop)
                if output_size[0] * output_size[1] < crop[0] * crop[1]:
                    mask_probs = upsample_masks(masks.float().sigmoid(), output_size, pixel_major=True)
                    pixel_scores = semantic_scores_per_pixel(class_probs, mask_probs)
                else:
                    pixel_scores = semantic_scores_per_pixel(class_probs, masks.float().sigmoid())
                    # resize the [K, h, w] scores (a channels-last view: the fast kernel), back to [H, W, K]
                    pixel_scores = upsample_masks(pixel_scores.permute(2, 0, 1), output_size, pixel_major=True)
                    pixel_scores = pixel_scores.permute(1, 2, 0)
            # the argmax runs over the innermost (contiguous) dimension: several times faster than over [K, ...]
            segmentation = pixel_scores.argmax(-1)
            if return_segmentation_scores:
                scores = pixel_scores.permute(2, 0, 1).contiguous()
                results.append(
                    SemanticSegmentationPostProcessorOutput(
                        data={"segmentation": segmentation, "segmentation_scores": scores}
                    )
                )
            else:
                results.append(segmentation)
        return results

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: list[tuple[int, int]] | None = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
        label_ids_to_fuse: Iterable[int] | None = None,
        top_k: int | None = None,
    ) -> list[dict]:
        """Instance segmentation: top-k (query, class) pairs with mask-weighted scores.

        The `top_k` (default: number of queries, as transformers) best (query, class) pairs by class probability
        are taken over all `Q x K` pairs; pairs whose class is in `label_ids_to_fuse` (stuff classes) are then
        dropped (the original's thing-only filter with panoptic output on). Each pair's mask logits are
        upsampled to the padded input, cropped and resized to the target size, binarised at `mask_threshold`
        (probability, strict: 0.5 is the original's `logit > 0`), and scored ``class prob x mean mask prob
        inside the binary mask``. Pairs with `score >= threshold` and a non-empty mask are returned, by
        decreasing score.

        Output formats:

        - default: `segmentation` is a `[height, width]` int32 id map (-1 = no instance). Instances compete for
          pixels: each pixel goes to the highest-scoring instance covering it, and an instance keeps its id only
          if at least `overlap_mask_area_threshold` of its mask is visible (one re-assignment pass after
          dropping the others). `segments_info` lists the surviving instances, ids `0..n-1`.
        - `return_binary_maps=True`: `[n, height, width]` float 0/1 masks, which may overlap; no overlap test.
        - `return_coco_annotation=True`: a list of pycocotools RLE dicts (`{"size", "counts"}`), one per instance,
          may overlap; no overlap test.

        Differences from transformers: transformers resizes to 384x384, binarises before a nearest resize, uses
        `mask_threshold` nowhere, ignores `overlap_mask_area_threshold`, keeps `topk(sorted=False)` order, fills
        the id map with later-painted instances winning, and its RLE option encodes the id map, one RLE list per
        id (including -1). With no instance, binary maps here are an empty `[0, height, width]` tensor.

        Args:
            outputs: see `post_process_semantic_segmentation`.
            threshold: minimum final score.
            mask_threshold: mask probability threshold for binarisation.
            overlap_mask_area_threshold: minimum visible fraction in the id map (default output only).
            target_sizes: one `(height, width)` per image; `None` gives the un-padded input size.
            return_coco_annotation: return RLE dicts.
            return_binary_maps: return stacked binary masks.
            label_ids_to_fuse: stuff classes, excluded from instances.
            top_k: number of (query, class) pairs considered (the original's `TEST.DETECTIONS_PER_IMAGE`).

        Returns:
            One dict per image: `segmentation` and `segments_info` (`id`, `label_id`, `was_fused` (False),
            `score`).
        """
        if return_coco_annotation and return_binary_maps:
            raise ValueError("`return_coco_annotation` and `return_binary_maps` cannot both be True.")
        class_logits, mask_logits = self._logits(outputs)
        num_queries = class_logits.shape[1]
        top_k = num_queries if top_k is None else int(top_k)
        geometry = self._image_geometry(outputs, class_logits.shape[0], tuple(mask_logits.shape[-2:]), target_sizes)
        results = []
        for index, (padded, crop, output_size) in enumerate(geometry):
            class_scores, labels, query_indices = select_top_k_query_classes(
                class_logits[index], top_k, label_ids_to_fuse
            )
            # exact early exit: the final score (class prob × mean mask prob ≤ 1) never exceeds the class prob,
            # so pairs below the threshold need no mask upsampling
            candidates = class_scores >= threshold
            class_scores, labels, query_indices = class_scores[candidates], labels[candidates], query_indices[candidates]
            unique_queries, inverse = torch.unique(query_indices, return_inverse=True)
            logits = upsample_crop_resize(mask_logits[index][unique_queries], padded, crop, output_size)
            unique_binary, unique_mask_scores = instance_scores_from_selection(
                torch.ones(unique_queries.numel(), device=logits.device), logits, mask_threshold
            )
            scores = class_scores * unique_mask_scores[inverse]
            non_empty = unique_binary.flatten(1).any(1)[inverse]
            keep = ((scores >= threshold) & non_empty).nonzero().flatten()
            keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
            binary = unique_binary[inverse[keep]]
            kept_scores, kept_labels = scores[keep], labels[keep]

            if return_binary_maps or return_coco_annotation:
                if return_binary_maps:
                    segmentation = binary.float()
                else:
                    segmentation = [binary_mask_to_coco_rle(mask) for mask in binary]
                survivors = torch.arange(keep.numel(), device=binary.device)
            else:
                segmentation, survivors = self._instance_id_map(binary, overlap_mask_area_threshold, output_size)
            segments_info = [
                {"id": new_id, "label_id": int(label), "was_fused": False, "score": float(score)}
                for new_id, (label, score) in enumerate(
                    zip(kept_labels[survivors].tolist(), kept_scores[survivors].tolist())
                )
            ]
            results.append({"segmentation": segmentation, "segments_info": segments_info})
        return results

    @staticmethod
    def _instance_id_map(
        binary: torch.Tensor, overlap_mask_area_threshold: float, output_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Id map from score-sorted binary masks ``[n, h, w]``.

        Each pixel goes to the highest-scoring mask covering it; masks with a visible fraction below
        `overlap_mask_area_threshold` are dropped and the pixels re-assigned among the others (one pass: the
        visible fraction of a survivor can only grow). Returns the ``[h, w]`` int32 map (-1 = none, ids
        ``0..m-1`` in score order) and the indices ``[m]`` of the surviving masks.
        """

        def assign(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            covered = masks.any(0)
            winner = masks.to(torch.uint8).argmax(0)  # first (= best-scoring) covering mask
            visible = torch.bincount(winner[covered], minlength=masks.shape[0])
            return covered, winner, visible

        device = binary.device
        empty = torch.full(output_size, -1, dtype=torch.int32, device=device)
        candidates = torch.arange(binary.shape[0], device=device)
        if candidates.numel() == 0:
            return empty, candidates
        _, _, visible = assign(binary)
        ratio = visible.double() / binary.flatten(1).sum(1).double()
        candidates = candidates[(ratio >= overlap_mask_area_threshold) & (visible > 0)]
        if candidates.numel() == 0:
            return empty, candidates
        covered, winner, visible = assign(binary[candidates])
        segmentation = torch.where(covered, winner.to(torch.int32), empty)
        return segmentation, candidates

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.8,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Iterable[int] | None = None,
        target_sizes: list[tuple[int, int]] | None = None,
    ) -> list[dict]:
        """Panoptic segmentation (the original's `panoptic_inference`).

        Queries whose best class is not no-object with probability `> threshold` are kept; only their masks are
        upsampled to the padded input, cropped and resized to the target size. Each pixel goes to the kept query
        with the largest ``class prob x mask prob``. A query becomes a segment when its arg-max area is at least
        `overlap_mask_area_threshold` of its own area (`mask prob >= mask_threshold`) and its final area is not
        empty. Mask2Former's segment is the arg-max area intersected with `mask prob >= mask_threshold`;
        MaskFormer v1's (`SeriesMaskFormerImageProcessor`) is the arg-max area alone. Queries whose label is in
        `label_ids_to_fuse` share one segment per label (the original fuses every stuff class).

        Differences from transformers: 384x384 resize and no crop there; transformers never intersects with the
        mask threshold, keeps a query when the area ratio is strictly greater than the threshold (the original:
        greater or equal), lists a fused label once per query (here once per segment id, with the score of its
        first query) and returns a map of -1 when nothing is found (here 0 = no segment, always).

        Args:
            outputs: see `post_process_semantic_segmentation`.
            threshold: class probability a query must exceed (`OBJECT_MASK_THRESHOLD`).
            mask_threshold: mask probability threshold.
            overlap_mask_area_threshold: minimum visible fraction (`OVERLAP_THRESHOLD`).
            label_ids_to_fuse: labels whose instances are merged (stuff classes); `None` fuses nothing.
            target_sizes: one `(height, width)` per image; `None` gives the un-padded input size.

        Returns:
            One dict per image: `segmentation` (`[height, width]` int32 segment ids, 0 = none) and
            `segments_info` (`id`, `label_id`, `was_fused`, `score`).
        """
        class_logits, mask_logits = self._logits(outputs)
        geometry = self._image_geometry(outputs, class_logits.shape[0], tuple(mask_logits.shape[-2:]), target_sizes)
        results = []
        for index, (padded, crop, output_size) in enumerate(geometry):
            query_indices, scores, labels = select_panoptic_queries(class_logits[index], threshold)
            logits = upsample_crop_resize(mask_logits[index][query_indices], padded, crop, output_size)
            segmentation, segments_info = panoptic_from_selection(
                scores,
                labels,
                logits.float().sigmoid(),
                overlap_threshold=overlap_mask_area_threshold,
                mask_threshold=mask_threshold,
                label_ids_to_fuse=label_ids_to_fuse,
                intersect_with_mask=self.panoptic_intersects_with_mask,
            )
            results.append({"segmentation": segmentation, "segments_info": segments_info})
        return results


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
