"""Build our model config, processor settings and labels from an original detectron2 config.

The original config is the nested dict of the merged YAML (`{"MODEL": {...}, "INPUT": {...}, ...}`, see
`detectron2_config.py`); every builder first fills the keys the YAML leaves out with the original code's defaults
(`with_original_defaults`, the one source of defaults) and then reads keys with `require`. Class names and thing
flags come from the package's model zoo (`model_zoo.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import DetrConfig, PreTrainedConfig

from .detectron2_config import detect_family, require, with_original_defaults
from .keys_backbones import RESNET_BACKBONE_NAMES, backbone_config_from_original
from .model_zoo import DatasetLabels, dataset_labels

__all__ = ["build_model_config", "build_processor_kwargs", "input_format"]


def _common_head(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "hidden_dim": int(require(cfg, "MODEL.MASK_FORMER.HIDDEN_DIM")),
        "num_queries": int(require(cfg, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES")),
        "num_heads": int(require(cfg, "MODEL.MASK_FORMER.NHEADS")),
        "dim_feedforward": int(require(cfg, "MODEL.MASK_FORMER.DIM_FEEDFORWARD")),
        "dropout": float(require(cfg, "MODEL.MASK_FORMER.DROPOUT")),
        "dec_layers": int(require(cfg, "MODEL.MASK_FORMER.DEC_LAYERS")),
        "pre_norm": bool(require(cfg, "MODEL.MASK_FORMER.PRE_NORM")),
        "enforce_input_proj": bool(require(cfg, "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ")),
        "deep_supervision": bool(require(cfg, "MODEL.MASK_FORMER.DEEP_SUPERVISION")),
        "num_classes": int(require(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")),
        "conv_dim": int(require(cfg, "MODEL.SEM_SEG_HEAD.CONVS_DIM")),
        "mask_dim": int(require(cfg, "MODEL.SEM_SEG_HEAD.MASK_DIM")),
        "norm": str(require(cfg, "MODEL.SEM_SEG_HEAD.NORM")),
    }


def _check_head(cfg: Mapping[str, Any], head: Mapping[str, Any]) -> None:
    if head["norm"] != "GN":
        raise ValueError(f"MODEL.SEM_SEG_HEAD.NORM={head['norm']!r} is not supported (only GN)")
    in_features = list(require(cfg, "MODEL.SEM_SEG_HEAD.IN_FEATURES"))
    if in_features != ["res2", "res3", "res4", "res5"]:
        raise ValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES must be res2..res5, got {in_features}")


def _frozen_bn(cfg: Mapping[str, Any]) -> bool:
    resnet = require(cfg, "MODEL.BACKBONE.NAME") in RESNET_BACKBONE_NAMES
    return resnet and require(cfg, "MODEL.RESNETS.NORM") == "FrozenBN"


def _mask2former_kwargs(cfg: Mapping[str, Any], labels: DatasetLabels) -> dict[str, Any]:
    head = _common_head(cfg)
    _check_head(cfg, head)
    encoder_in = list(require(cfg, "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"))
    if encoder_in != ["res3", "res4", "res5"]:
        raise ValueError(f"DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES must be res3..res5, got {encoder_in}")
    if require(cfg, "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE") != "multi_scale_pixel_decoder":
        raise ValueError("Mask2Former needs MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE=multi_scale_pixel_decoder")
    return {
        "backbone_config": backbone_config_from_original(cfg, naming="swin"),
        "feature_size": head["conv_dim"],
        "mask_feature_size": head["mask_dim"],
        "hidden_dim": head["hidden_dim"],
        "encoder_feedforward_dim": 1024,  # hard-coded in the original MSDeformAttnPixelDecoder
        "encoder_layers": int(require(cfg, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS")),
        "decoder_layers": head["dec_layers"],
        "num_attention_heads": head["num_heads"],
        "encoder_num_points": 4,  # hard-coded in the original (the N_POINTS key is never read)
        "dropout": head["dropout"],
        "dim_feedforward": head["dim_feedforward"],
        "pre_norm": head["pre_norm"],
        "enforce_input_projection": head["enforce_input_proj"],
        "common_stride": int(require(cfg, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE")),
        "ignore_value": int(require(cfg, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE")),
        "num_queries": head["num_queries"],
        "no_object_weight": float(require(cfg, "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT")),
        "class_weight": float(require(cfg, "MODEL.MASK_FORMER.CLASS_WEIGHT")),
        "mask_weight": float(require(cfg, "MODEL.MASK_FORMER.MASK_WEIGHT")),
        "dice_weight": float(require(cfg, "MODEL.MASK_FORMER.DICE_WEIGHT")),
        "train_num_points": int(require(cfg, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS")),
        "oversample_ratio": float(require(cfg, "MODEL.MASK_FORMER.OVERSAMPLE_RATIO")),
        "importance_sample_ratio": float(require(cfg, "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO")),
        "use_auxiliary_loss": head["deep_supervision"],
        "freeze_backbone_batch_norm": _frozen_bn(cfg),
    }


def _maskformer_kwargs(cfg: Mapping[str, Any], labels: DatasetLabels) -> dict[str, Any]:
    head = _common_head(cfg)
    _check_head(cfg, head)
    pixel_decoder = require(cfg, "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME")
    types = {"BasePixelDecoder": "fpn", "TransformerEncoderPixelDecoder": "transformer_encoder"}
    if pixel_decoder not in types:
        raise ValueError(f"MaskFormer pixel decoder {pixel_decoder!r} is not supported ({sorted(types)})")
    in_feature = require(cfg, "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE")
    expected = "transformer_encoder" if types[pixel_decoder] == "transformer_encoder" else "res5"
    if in_feature != expected:
        raise ValueError(f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={in_feature!r} with {pixel_decoder} is not "
                         f"supported (expected {expected!r})")
    if int(require(cfg, "MODEL.MASK_FORMER.ENC_LAYERS")) != 0:
        raise ValueError("MaskFormer predictors with their own transformer encoder (MASK_FORMER.ENC_LAYERS > 0) "
                         "are not supported")
    decoder_config = DetrConfig(
        d_model=head["hidden_dim"],
        num_queries=head["num_queries"],
        decoder_layers=head["dec_layers"],
        decoder_attention_heads=head["num_heads"],
        decoder_ffn_dim=head["dim_feedforward"],
        dropout=head["dropout"],
        activation_function="relu",
        encoder_layers=0,
    )
    return {
        "backbone_config": backbone_config_from_original(cfg, naming="maskformer_swin"),
        "decoder_config": decoder_config,
        "fpn_feature_size": head["conv_dim"],
        "mask_feature_size": head["mask_dim"],
        "no_object_weight": float(require(cfg, "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT")),
        "use_auxiliary_loss": head["deep_supervision"],
        "dice_weight": float(require(cfg, "MODEL.MASK_FORMER.DICE_WEIGHT")),
        "mask_weight": float(require(cfg, "MODEL.MASK_FORMER.MASK_WEIGHT")),
        "cross_entropy_weight": 1.0,
        "pixel_decoder_type": types[pixel_decoder],
        "pixel_decoder_encoder_layers": int(require(cfg, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS")),
        "pixel_decoder_encoder_attention_heads": head["num_heads"],
        "pixel_decoder_encoder_ffn_dim": head["dim_feedforward"],
        "pixel_decoder_encoder_dropout": head["dropout"],
        "pixel_decoder_pre_norm": head["pre_norm"],
        "pre_norm": head["pre_norm"],
        "enforce_input_projection": head["enforce_input_proj"],
        "freeze_backbone_batch_norm": _frozen_bn(cfg),
        "ignore_value": int(require(cfg, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE")),
    }


def _video_kwargs(cfg: Mapping[str, Any], labels: DatasetLabels) -> dict[str, Any]:
    kwargs = _mask2former_kwargs(cfg, labels)
    kwargs["num_frames"] = int(require(cfg, "INPUT.SAMPLING_FRAME_NUM"))
    kwargs["test_top_k"] = 10  # hard-coded in the original inference_video
    return kwargs


def _test_settings(cfg: Mapping[str, Any], family: str) -> dict[str, Any]:
    """Inference switches of the original (stored in config.json for reference and for post-processing)."""
    settings = {
        "object_mask_threshold": float(require(cfg, "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD")),
        "overlap_threshold": float(require(cfg, "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD")),
        "semantic_on": bool(require(cfg, "MODEL.MASK_FORMER.TEST.SEMANTIC_ON")),
        "panoptic_on": bool(require(cfg, "MODEL.MASK_FORMER.TEST.PANOPTIC_ON")),
        "sem_seg_postprocessing_before_inference": bool(
            require(cfg, "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE")
        ),
    }
    if family != "maskformer":
        settings["instance_on"] = bool(require(cfg, "MODEL.MASK_FORMER.TEST.INSTANCE_ON"))
        settings["test_topk_per_image"] = int(require(cfg, "TEST.DETECTIONS_PER_IMAGE"))
    return settings


def build_model_config(
    cfg: Mapping[str, Any], family: str | None = None, thing_ids: list[int] | None = None
) -> tuple[PreTrainedConfig, DatasetLabels]:
    """Our config (`SeriesMask2FormerConfig`, `SeriesMaskFormerConfig` or `SeriesVideoMask2FormerConfig`) for an
    original config, with `id2label` / `label2id`, `thing_ids`, `stuff_ids`, `dataset` and `original_test_settings`.
    Keys `cfg` leaves out take the original code's defaults (`with_original_defaults`).

    Raises:
        ValueError: an unsupported original setting or a missing NUM_CLASSES (named in the message).
    """
    family = family or detect_family(cfg)
    cfg = with_original_defaults(cfg, family)
    labels = dataset_labels(cfg, int(require(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")), thing_ids)
    extras = {
        "id2label": labels.id2label,
        "label2id": labels.label2id,
        "thing_ids": labels.thing_ids,
        "stuff_ids": labels.stuff_ids,
        "dataset": labels.dataset,
        "original_test_settings": _test_settings(cfg, family),
    }
    if family == "mask2former":
        from hf_maskformer_series import SeriesMask2FormerConfig

        return SeriesMask2FormerConfig(**_mask2former_kwargs(cfg, labels), **extras), labels
    if family == "maskformer":
        from hf_maskformer_series.configuration_maskformer import SeriesMaskFormerConfig

        return SeriesMaskFormerConfig(**_maskformer_kwargs(cfg, labels), **extras), labels
    from hf_maskformer_series.configuration_video_mask2former import SeriesVideoMask2FormerConfig

    return SeriesVideoMask2FormerConfig(**_video_kwargs(cfg, labels), **extras), labels


# -------------------------------------------------------------------------------------------------- processor config


def input_format(cfg: Mapping[str, Any]) -> str:
    """`RGB` or `BGR` (`INPUT.FORMAT` of a config completed by `with_original_defaults`); a BGR model is converted
    to take RGB (see `convert_original`)."""
    value = str(require(cfg, "INPUT.FORMAT"))
    if value not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT={value!r} is not supported (RGB or BGR)")
    return value


def build_processor_kwargs(cfg: Mapping[str, Any], family: str, labels: DatasetLabels) -> dict[str, Any]:
    """Keyword arguments of our image (or video) processor: the original test resize, normalisation (in RGB
    order, scaled to [0, 1] inputs), padding multiple, ignore value and label reduction."""
    cfg = with_original_defaults(cfg, family)
    mean = [float(v) for v in require(cfg, "MODEL.PIXEL_MEAN")]
    std = [float(v) for v in require(cfg, "MODEL.PIXEL_STD")]
    if input_format(cfg) == "BGR":
        mean, std = mean[::-1], std[::-1]
    size_divisibility = int(require(cfg, "MODEL.MASK_FORMER.SIZE_DIVISIBILITY"))
    kwargs: dict[str, Any] = {
        "size": {
            "shortest_edge": int(require(cfg, "INPUT.MIN_SIZE_TEST")),
            "longest_edge": int(require(cfg, "INPUT.MAX_SIZE_TEST")),
        },
        "image_mean": [m / 255.0 for m in mean],
        "image_std": [s / 255.0 for s in std],
        "size_divisor": size_divisibility if size_divisibility > 0 else 32,
    }
    if family != "video_mask2former":
        kwargs["snap_resize_to_size_divisor"] = False  # detectron2 keeps the aspect ratio and pads
        kwargs["ignore_index"] = int(require(cfg, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE"))
        kwargs["num_labels"] = len(labels.id2label)
        # raw ADE20K maps are 1-based with 0 = "other" (detectron2's preparation script subtracts 1)
        kwargs["do_reduce_labels"] = labels.dataset in ("ade20k", "ade20k_full")
    return kwargs
