"""Convert a transformers Mask2Former / MaskFormer folder into ours, and back, losslessly.

    python -m conversion.convert_transformers to-ours SRC DST
    python -m conversion.convert_transformers to-transformers SRC DST

Our state-dict keys equal transformers' for every part transformers has, so the weights are copied as they are;
the work is the config: `model_type` (`mask2former` <-> `series_mask2former`, `maskformer` <->
`series_maskformer`) and our extra attributes. Going to transformers, our extras stay in `config.json` (transformers
ignores unknown attributes), so converting back restores them. A model transformers cannot express (MaskFormer's
transformer-encoder pixel decoder, `enforce_input_projection`, pre-norm layers, a deformable encoder with other than
4 points) is refused with a ValueError.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL_TYPES = {"mask2former": "series_mask2former", "maskformer": "series_maskformer"}
DROPPED_KEYS = ("model_type", "architectures", "transformers_version", "auto_map")


def _classes(model_type: str) -> tuple[type, type]:
    """(config class, model class) for a model_type of either side."""
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        MaskFormerConfig,
        MaskFormerForInstanceSegmentation,
    )

    import hf_maskformer_series as ours

    table = {
        "mask2former": (Mask2FormerConfig, Mask2FormerForUniversalSegmentation),
        "maskformer": (MaskFormerConfig, MaskFormerForInstanceSegmentation),
        "series_mask2former": (ours.SeriesMask2FormerConfig, ours.SeriesMask2FormerForUniversalSegmentation),
        "series_maskformer": (ours.SeriesMaskFormerConfig, ours.SeriesMaskFormerForInstanceSegmentation),
    }
    if model_type not in table:
        raise ValueError(f"model_type {model_type!r} is not a Mask2Former / MaskFormer ({sorted(table)})")
    return table[model_type]


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} has no config.json")
    return json.loads(path.read_text())


def _check_expressible_in_transformers(values: dict[str, Any], model_type: str) -> None:
    if model_type == "series_mask2former":
        if int(values.get("encoder_num_points", 4)) != 4:
            raise ValueError("transformers' Mask2Former has 4 deformable sampling points; this model has "
                             f"{values['encoder_num_points']}")
    else:
        problems = []
        if values.get("pixel_decoder_type", "fpn") != "fpn":
            problems.append("the transformer-encoder pixel decoder")
        if values.get("pre_norm"):
            problems.append("pre-norm decoder layers")
        if problems:
            raise ValueError("transformers' MaskFormer cannot express " + ", ".join(problems))


def _convert(source: str | Path, destination: str | Path, target_types: dict[str, str], overwrite: bool) -> Path:
    source, destination = Path(source), Path(destination).resolve()
    values = _read_config(source)
    source_type = values.get("model_type")
    if source_type not in target_types:
        raise ValueError(f"{source} holds a {source_type!r} model; expected one of {sorted(target_types)}")
    target_type = target_types[source_type]
    if target_type in MODEL_TYPES:  # to transformers
        _check_expressible_in_transformers(values, source_type)
    source_config_class, source_model_class = _classes(source_type)
    target_config_class, target_model_class = _classes(target_type)
    model = source_model_class.from_pretrained(source).eval()
    kwargs = {key: value for key, value in values.items() if key not in DROPPED_KEYS}
    config = target_config_class(**kwargs)
    target = target_model_class(config).eval()
    state_dict = model.state_dict()
    expected = target.state_dict()
    unexpected = sorted(set(state_dict) - set(expected))
    missing = sorted(key for key in set(expected) - set(state_dict) if not key.endswith("num_batches_tracked"))
    if unexpected or missing:
        raise ValueError(f"the weights do not match: unexpected {unexpected[:5]}, missing {missing[:5]}")
    target.load_state_dict(state_dict, strict=False)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        target.save_pretrained(temporary)
        _copy_processor(source, temporary, to_ours=target_type.startswith("series_"), model_type=target_type)
        if destination.exists():
            if not overwrite:
                raise ValueError(f"{destination} exists; pass --overwrite to replace it")
            shutil.rmtree(destination)
        temporary.rename(destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return destination


PROCESSOR_TYPES = {
    "series_mask2former": "SeriesMask2FormerImageProcessor",
    "series_maskformer": "SeriesMaskFormerImageProcessor",
    "mask2former": "Mask2FormerImageProcessor",
    "maskformer": "MaskFormerImageProcessor",
}


def _copy_processor(source: Path, destination: Path, to_ours: bool, model_type: str) -> None:
    """Copy `preprocessor_config.json` with the other side's `image_processor_type` (both read the same keys)."""
    path = source / "preprocessor_config.json"
    if not path.is_file():
        return
    values = json.loads(path.read_text())
    values.pop("auto_map", None)
    values["image_processor_type"] = PROCESSOR_TYPES[model_type]
    if not to_ours:  # transformers' processor does not know ours-only settings
        for key in ("snap_resize_to_size_divisor", "num_labels"):
            values.pop(key, None)
    (destination / "preprocessor_config.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def transformers_to_ours(source: str | Path, destination: str | Path, overwrite: bool = False) -> Path:
    """A transformers `mask2former` / `maskformer` folder -> ours (same weights, `series_*` config)."""
    return _convert(source, destination, dict(MODEL_TYPES), overwrite)


def ours_to_transformers(source: str | Path, destination: str | Path, overwrite: bool = False) -> Path:
    """Our `series_mask2former` / `series_maskformer` folder -> transformers (our extras stay in config.json).

    Raises:
        ValueError: the model uses a feature transformers' classes do not have.
    """
    return _convert(source, destination, {value: key for key, value in MODEL_TYPES.items()}, overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convert_transformers", description=__doc__.split("\n\n")[0])
    parser.add_argument("direction", choices=("to-ours", "to-transformers"))
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    function = transformers_to_ours if args.direction == "to-ours" else ours_to_transformers
    try:
        with torch.no_grad():
            print(f"wrote {function(args.source, args.destination, overwrite=args.overwrite)}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
