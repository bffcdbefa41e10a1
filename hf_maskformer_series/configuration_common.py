"""Config helpers shared by the three model families: backbone sub-config resolution and validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

# Swin-S as in the released Mask2Former COCO configs (transformers' Mask2Former default, too).
DEFAULT_SWIN_BACKBONE = {
    "model_type": "swin",
    "embed_dim": 96,
    "depths": [2, 2, 18, 2],
    "num_heads": [3, 6, 12, 24],
    "window_size": 7,
    "drop_path_rate": 0.3,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}


class CompatibleModelTypesMixin:
    """Declares the transformers `model_type`s whose `config.json` this config reads exactly (same attribute names
    and meaning): `from_pretrained` of such a folder is not a partial load, so transformers' "You are using a model
    of type X to instantiate a model of type Y" warning (`PreTrainedConfig.from_pretrained`) does not apply."""

    compatible_model_types: tuple[str, ...] = ()

    @classmethod
    def get_config_dict(cls, *args, **kwargs) -> tuple[dict[str, Any], dict[str, Any]]:
        config_dict, kwargs = super().get_config_dict(*args, **kwargs)
        if config_dict.get("model_type") in cls.compatible_model_types:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs


BACKBONE_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def backbone_config_from_name(
    backbone: str | None, use_timm_backbone: bool | None, backbone_kwargs: dict[str, Any] | None
) -> PreTrainedConfig | None:
    """The backbone config that transformers' `backbone=` / `use_timm_backbone` / `backbone_kwargs` arguments ask for.

    - `backbone="resnet18"` (timm, the default as in transformers): a `TimmBackboneConfig` returning the 4 stages
      (`out_indices` (1, 2, 3, 4) unless `backbone_kwargs` says otherwise);
    - `use_timm_backbone=False`: `backbone` is a transformers model (a local folder or a Hub id) whose config is
      loaded with `backbone_kwargs` applied and `out_features` set to the 4 stages unless given.

    Returns None when `backbone` is None.

    Raises:
        ValueError: `backbone_kwargs` without `backbone`, or a transformers backbone whose config cannot be loaded.
    """
    backbone_kwargs = dict(backbone_kwargs or {})
    if backbone is None:
        if backbone_kwargs:
            raise ValueError(f"backbone_kwargs {sorted(backbone_kwargs)} need `backbone` (the backbone's name)")
        return None
    if use_timm_backbone is None or use_timm_backbone:
        backbone_kwargs.setdefault("out_indices", (1, 2, 3, 4))
        return AutoConfig.for_model("timm_backbone", backbone=backbone, **backbone_kwargs)
    try:
        backbone_config = AutoConfig.from_pretrained(backbone, **backbone_kwargs)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load the config of backbone {backbone!r}: {first_line}") from None
    if "out_features" not in backbone_kwargs and "out_indices" not in backbone_kwargs:
        backbone_config.out_features = list(BACKBONE_STAGES)
    return backbone_config


def pop_backbone_arguments(
    backbone_config: PreTrainedConfig | dict[str, Any] | None, kwargs: dict[str, Any]
) -> tuple[PreTrainedConfig | dict[str, Any] | None, str | None, bool]:
    """Take transformers' backbone arguments out of a config's `kwargs`.

    Returns `(backbone_config, backbone, use_pretrained_backbone)`: the config built from `backbone=` (if given),
    the backbone's name (None without one) and whether pretrained backbone weights are requested.

    Raises:
        ValueError: `backbone_config` with `use_timm_backbone` or `backbone_kwargs`, or `use_pretrained_backbone=True` without a named
            backbone (`backbone=`, or a `TimmBackboneConfig`) to load weights for.
    """
    backbone = kwargs.pop("backbone", None)
    use_timm_backbone = kwargs.pop("use_timm_backbone", None)
    backbone_kwargs = kwargs.pop("backbone_kwargs", None)
    use_pretrained_backbone = bool(kwargs.pop("use_pretrained_backbone", False))
    if backbone_config is None:
        backbone_config = backbone_config_from_name(backbone, use_timm_backbone, backbone_kwargs)
    elif use_timm_backbone is not None or backbone_kwargs:
        # `backbone` alone next to `backbone_config` is a saved config's record of the name: allowed
        raise ValueError("give either backbone_config or backbone / use_timm_backbone / backbone_kwargs, not both")
    if use_pretrained_backbone and backbone is None and getattr(backbone_config, "model_type", None) != "timm_backbone":
        raise ValueError(
            "use_pretrained_backbone=True needs `backbone=` (a timm name, or a transformers model with "
            "use_timm_backbone=False) to know which weights to load"
        )
    return backbone_config, backbone, use_pretrained_backbone


def resolve_backbone_config(
    backbone_config: PreTrainedConfig | dict[str, Any] | None,
    default: dict[str, Any] | None = None,
    convert: Callable[[PreTrainedConfig], PreTrainedConfig] | None = None,
) -> PreTrainedConfig:
    """Return a backbone config object from a config, a dict (with `model_type`) or None (the default).

    Args:
        convert: applied to the config before the checks (MaskFormer: `swin` → `maskformer-swin`).

    Raises:
        ValueError: a dict without `model_type`, or a config that cannot give 4 feature maps.
    """
    if backbone_config is None:
        backbone_config = dict(default or DEFAULT_SWIN_BACKBONE)
    if isinstance(backbone_config, dict):
        backbone_config = dict(backbone_config)
        model_type = backbone_config.pop("model_type", None)
        if model_type is None:
            raise ValueError("backbone_config as a dict needs a 'model_type' key (e.g. 'swin', 'resnet', 'timm_backbone')")
        backbone_config = AutoConfig.for_model(model_type, **backbone_config)
    if not isinstance(backbone_config, PreTrainedConfig):
        raise ValueError(f"backbone_config must be a PreTrainedConfig or a dict, got {type(backbone_config).__name__}")
    if convert is not None:
        backbone_config = convert(backbone_config)
    out_features = getattr(backbone_config, "out_features", None)
    if out_features is not None and len(out_features) != 4:
        raise ValueError(
            f"the backbone must return 4 feature maps (strides 4, 8, 16, 32); its out_features are {out_features}"
        )
    return backbone_config
