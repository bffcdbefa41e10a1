"""Convert a released MaskFormer / Mask2Former / video Mask2Former checkpoint (detectron2) into a folder of ours.

    python -m conversion.convert_original MODEL --checkpoint model_final_xxx.pkl --output DIR
        [--config-root ORIGINAL_REPO/configs] [--thing-ids 0,1,2] [--verify FIXTURE.pt] [--push-to-hub REPO]

`MODEL` is a model-zoo name (see `hf_maskformer_series/model_zoo.json`) or the original config file (a detectron2
YAML; its `_BASE_` chain is resolved when the files are present, a merged YAML works alone). The checkpoint is a
`.pkl` (pickle of `{"model": {name: ndarray}}`, latin-1) or a `.pth`/`.pt`/`.safetensors` state dict.

The output folder holds `config.json` (with `id2label`, `label2id`, `thing_ids`, `stuff_ids` and `auto_map` for
`trust_remote_code`), `model.safetensors`, the processor config, the model code, and a model card `README.md`.
It is written into a temporary folder next to the target and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

if __package__ in (None, ""):  # run as a script: make `conversion` and the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "conversion"

from conversion.detectron2_config import detect_family, load_original_config, with_original_defaults  # noqa: E402
from conversion.keys_mask2former import convert_mask2former_state_dict  # noqa: E402
from conversion.keys_maskformer import convert_maskformer_state_dict  # noqa: E402
from conversion.keys_video_mask2former import convert_video_mask2former_state_dict  # noqa: E402
from conversion.model_zoo import config_from_zoo_entry, find_zoo_entry  # noqa: E402
from conversion.original_config import build_model_config, build_processor_kwargs, input_format  # noqa: E402

# keys our models have that the original checkpoints never carry (filled from the freshly built model)
ALLOWED_MISSING_SUFFIXES = ("swin.layernorm.weight", "swin.layernorm.bias", "model.layernorm.weight",
                            "model.layernorm.bias", "num_batches_tracked")

# family -> (original state dict, original config) -> our state dict
STATE_DICT_CONVERTERS: dict[str, Callable[[Mapping[str, torch.Tensor], Mapping[str, Any]], dict]] = {
    "mask2former": convert_mask2former_state_dict,
    "maskformer": lambda original, cfg: convert_maskformer_state_dict(original),  # backbone read from the keys
    "video_mask2former": convert_video_mask2former_state_dict,
}


class ConversionError(RuntimeError):
    """A conversion step failed (message says which and why)."""


# --------------------------------------------------------------------------------------------------------- checkpoint


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """`{name: tensor}` of a detectron2 `.pkl` (`{"model": {...}}`, latin-1 pickle), a `.pth`/`.pt` file (a state
    dict, or a dict with a `"model"` / `"state_dict"` entry) or a `.safetensors` file.

    Raises:
        ValueError: a missing file, an unknown extension, a file that cannot be read (truncated or corrupt) or
            content that is not a `{name: array}` dict; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} not found")
    suffix = path.suffix.lower()
    if suffix not in (".pkl", ".pth", ".pt", ".bin", ".safetensors"):
        raise ValueError(f"unknown checkpoint type {path.suffix!r} (expected .pkl, .pth, .pt or .safetensors)")
    try:
        if suffix == ".pkl":
            with path.open("rb") as handle:
                content = pickle.load(handle, encoding="latin1")  # noqa: S301 - the user's own checkpoint file
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            content = load_file(str(path))
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip / safetensors errors of a truncated or corrupt file
        raise ValueError(f"checkpoint {path} cannot be read (truncated or corrupt?): {type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}") from error
    if isinstance(content, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in content and isinstance(content[wrapper], Mapping):
                content = content[wrapper]
                break
    if not isinstance(content, Mapping) or not content:
        raise ValueError(f"{path} does not hold a {{name: array}} state dict")
    state_dict = {}
    for name, value in content.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, not an array")
        state_dict[str(name)] = value
    return state_dict


def write_detectron2_pkl(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write `state_dict` the way detectron2 model-zoo files are stored (`{"model": {name: ndarray}}`)."""
    arrays = {name: tensor.detach().cpu().contiguous().numpy() for name, tensor in state_dict.items()}
    with Path(path).open("wb") as handle:
        pickle.dump({"model": arrays, "__author__": "hf-maskformer-series", "matching_heuristics": False}, handle)


# ------------------------------------------------------------------------------------------------------- conversion


def convert_state_dict(original: Mapping[str, torch.Tensor], cfg: Mapping[str, Any], family: str) -> dict:
    """Rename `original` to our names with the family's mapping (`STATE_DICT_CONVERTERS`)."""
    return STATE_DICT_CONVERTERS[family](original, cfg)


QUERY_KEYS = ("sem_seg_head.predictor.query_embed.weight",)


def check_queries(cfg: Mapping[str, Any], original: Mapping[str, torch.Tensor], infer: bool) -> dict:
    """Compare `NUM_OBJECT_QUERIES` (of a config completed by `with_original_defaults`) with the checkpoint's query
    embedding; with `infer` (configs built from the model-zoo defaults) take the checkpoint's value, otherwise a
    mismatch is an error."""
    import copy

    cfg = copy.deepcopy(dict(cfg))
    queries = next((original[key].shape[0] for key in QUERY_KEYS if key in original), None)
    mask_former = cfg.setdefault("MODEL", {}).setdefault("MASK_FORMER", {})
    if queries is not None and int(mask_former["NUM_OBJECT_QUERIES"]) != int(queries):
        if not infer:
            raise ConversionError(f"the config has NUM_OBJECT_QUERIES={mask_former['NUM_OBJECT_QUERIES']} "
                                  f"but the checkpoint {queries} queries")
        mask_former["NUM_OBJECT_QUERIES"] = int(queries)
    return cfg


def _first_conv_keys(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    return [
        key
        for key in state_dict
        if key.endswith(("embeddings.patch_embeddings.projection.weight", "embedder.embedder.convolution.weight"))
    ]


def bgr_to_rgb(state_dict: dict[str, torch.Tensor]) -> None:
    """Make a BGR model take RGB input: reverse the input channels of the first convolution (in place)."""
    keys = _first_conv_keys(state_dict)
    if len(keys) != 1:
        raise ConversionError(f"cannot find the backbone's first convolution to turn BGR into RGB (found {keys})")
    state_dict[keys[0]] = state_dict[keys[0]].flip(1).contiguous()


def model_classes(family: str) -> tuple[type, type]:
    """(model class, processor class) of a family."""
    if family == "mask2former":
        from hf_maskformer_series import SeriesMask2FormerForUniversalSegmentation
        from hf_maskformer_series.image_processing import SeriesMask2FormerImageProcessor

        return SeriesMask2FormerForUniversalSegmentation, SeriesMask2FormerImageProcessor
    if family == "maskformer":
        from hf_maskformer_series.image_processing import SeriesMaskFormerImageProcessor
        from hf_maskformer_series.modeling_maskformer import SeriesMaskFormerForInstanceSegmentation

        return SeriesMaskFormerForInstanceSegmentation, SeriesMaskFormerImageProcessor
    from hf_maskformer_series.modeling_video_mask2former import SeriesVideoMask2FormerForVideoInstanceSegmentation
    from hf_maskformer_series.video_processing import SeriesVideoMask2FormerVideoProcessor

    return SeriesVideoMask2FormerForVideoInstanceSegmentation, SeriesVideoMask2FormerVideoProcessor


def load_converted_weights(model: torch.nn.Module, converted: Mapping[str, torch.Tensor]) -> list[str]:
    """Load `converted` into `model`; only keys the original never has may be missing (returned).

    Raises:
        ConversionError: unexpected keys, missing keys or shape mismatches (listed).
    """
    expected = model.state_dict()
    unexpected = sorted(set(converted) - set(expected))
    missing = sorted(set(expected) - set(converted))
    bad_missing = [key for key in missing if not key.endswith(ALLOWED_MISSING_SUFFIXES)]
    shapes = [
        f"{key}: {tuple(value.shape)} vs {tuple(expected[key].shape)}"
        for key, value in converted.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}")
    if bad_missing:
        problems.append(f"{len(bad_missing)} missing keys, e.g. {bad_missing[:5]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches, e.g. {shapes[:5]}")
    if problems:
        raise ConversionError("the converted weights do not fit the model: " + "; ".join(problems))
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in converted.items()}, strict=False)
    return missing


def model_card(name: str, family: str, config: Any, labels_note: str, entry: Mapping[str, Any] | None,
               source: str, checkpoint: str) -> str:
    """A model card (`README.md`) for a converted checkpoint."""
    titles = {"mask2former": "Mask2Former", "maskformer": "MaskFormer", "video_mask2former": "Video Mask2Former"}
    metric = ""
    if entry and entry.get("metric"):
        metric = f"- Original result: **{entry['metric']} {entry['value']}** on {entry['dataset']} (original model zoo).\n"
    pipeline_tag = "image-segmentation" if family != "video_mask2former" else "video-classification"
    return f"""---
library_name: transformers
pipeline_tag: {pipeline_tag}
license: mit
tags:
- {family.replace('_', '-')}
- hf-maskformer-series
---

# {name}

{titles[family]} converted from the original detectron2 checkpoint with `hf-maskformer-series`.

- Original config: `{source}`
- Original checkpoint: `{checkpoint}`
- Labels: {len(config.id2label)} classes ({labels_note}); thing classes: {len(getattr(config, 'thing_ids', []))}.
{metric}
## Use

```python
import hf_maskformer_series  # registers the model with the Auto classes
from transformers import AutoModelForUniversalSegmentation

model = AutoModelForUniversalSegmentation.from_pretrained("PATH_OR_REPO")
# without the package installed:
model = AutoModelForUniversalSegmentation.from_pretrained("PATH_OR_REPO", trust_remote_code=True)
```

The original models are released under the license of their repository (MIT for facebookresearch/MaskFormer
and facebookresearch/Mask2Former).
"""


def _atomic_replace(temporary: Path, output: Path, overwrite: bool) -> None:
    if output.exists():
        if not overwrite:
            raise ConversionError(f"{output} exists; pass --overwrite to replace it")
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(old)
        temporary.rename(output)
        shutil.rmtree(old)
    else:
        temporary.rename(output)


def convert(
    cfg: Mapping[str, Any],
    checkpoint: str | Path,
    output: str | Path,
    *,
    name: str | None = None,
    source: str = "",
    entry: Mapping[str, Any] | None = None,
    thing_ids: Sequence[int] | None = None,
    overwrite: bool = False,
    infer_queries: bool = False,
) -> Path:
    """Convert the checkpoint of the original model described by `cfg` into the folder `output` (atomically).
    The folder carries the model code and `auto_map` (`trust_remote_code=True` loads it without this package):
    importing `hf_maskformer_series` registers the classes for that (`registration.py`).

    Returns:
        The output folder.

    Raises:
        ConversionError: `output` exists and `overwrite` is not set (checked before anything is read or built).
    """
    output = Path(output).resolve()
    if output.exists() and not overwrite:
        raise ConversionError(f"{output} exists; pass --overwrite to replace it")
    family = detect_family(cfg)
    cfg = with_original_defaults(cfg, family)
    original = load_original_checkpoint(checkpoint)
    cfg = check_queries(cfg, original, infer=infer_queries)
    config, labels = build_model_config(cfg, family, list(thing_ids) if thing_ids is not None else None)
    converted = convert_state_dict(original, cfg, family)
    if input_format(cfg) == "BGR":
        bgr_to_rgb(converted)
    model_class, processor_class = model_classes(family)
    model = model_class(config).eval()
    load_converted_weights(model, converted)
    processor = processor_class(**build_processor_kwargs(cfg, family, labels))

    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        model.save_pretrained(temporary)
        processor.save_pretrained(temporary)
        card = model_card(name or output.name, family, config, labels.note, entry, source, Path(checkpoint).name)
        (temporary / "README.md").write_text(card)
        _atomic_replace(temporary, output, overwrite)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return output


# ------------------------------------------------------------------------------------------------------ verification


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ConversionError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def load_fixture(path: str | Path) -> dict[str, Any]:
    """A reference fixture (`torch.save` of the original's inputs and outputs, with its `config_yaml`).

    Raises:
        ValueError: the file is missing, unreadable or not a fixture; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"verification fixture {path} not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"verification fixture {path} cannot be read: {type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}") from error
    missing = [key for key in ("config_yaml", "inputs", "outputs") if not isinstance(data, dict) or key not in data]
    if missing:
        raise ValueError(f"verification fixture {path} lacks {missing}")
    return data


def compare_with_fixture(folder: str | Path, fixture: str | Path | Mapping[str, Any]) -> dict[str, float]:
    """Run the converted model on a fixture's input (a path, or the dict of `load_fixture`) and return the max abs
    difference of every stored output (backbone maps, multi-scale / FPN maps, mask features, final and auxiliary
    logits and masks)."""
    data = fixture if isinstance(fixture, Mapping) else load_fixture(fixture)
    family = detect_family(yaml.safe_load(data["config_yaml"]))
    model_class, _ = model_classes(family)
    model = model_class.from_pretrained(folder).eval()
    pixel_values = data["inputs"]["pixel_values"]
    differences: dict[str, float] = {}
    with torch.no_grad():
        if family == "video_mask2former":
            outputs = model(pixel_values_videos=pixel_values.unsqueeze(0), output_hidden_states=True)
        else:
            outputs = model(pixel_values=pixel_values, output_hidden_states=True, output_auxiliary_logits=True)
    backbone = getattr(outputs, "encoder_hidden_states", None)
    if backbone is not None and "backbone_features" in data:
        for level, key in enumerate(("res2", "res3", "res4", "res5")):
            differences[f"backbone_features.{key}"] = _max_abs(backbone[level], data["backbone_features"][key])
    pixel_states = getattr(outputs, "pixel_decoder_hidden_states", None)
    if pixel_states is not None and "multi_scale_features" in data:
        for level, expected in enumerate(data["multi_scale_features"]):
            differences[f"multi_scale_features.{level}"] = _max_abs(pixel_states[level], expected)
    if pixel_states is not None and "fpn_features" in data:
        for level, expected in enumerate(data["fpn_features"]):
            differences[f"fpn_features.{level}"] = _max_abs(pixel_states[level], expected)
    if "mask_features" in data and getattr(outputs, "pixel_decoder_last_hidden_state", None) is not None:
        differences["mask_features"] = _max_abs(outputs.pixel_decoder_last_hidden_state, data["mask_features"])
    reference = data["outputs"]
    differences["pred_logits"] = _max_abs(outputs.class_queries_logits, reference["pred_logits"])
    masks = outputs.masks_queries_logits
    differences["pred_masks"] = _max_abs(masks, reference["pred_masks"])
    auxiliary = getattr(outputs, "auxiliary_logits", None) or []
    for index, expected in enumerate(reference.get("aux_outputs", [])):
        if index >= len(auxiliary):
            raise ConversionError(f"the model returned {len(auxiliary)} auxiliary predictions, the fixture "
                                  f"{len(reference['aux_outputs'])}")
        differences[f"aux_outputs.{index}.pred_logits"] = _max_abs(
            auxiliary[index]["class_queries_logits"], expected["pred_logits"])
        differences[f"aux_outputs.{index}.pred_masks"] = _max_abs(
            auxiliary[index]["masks_queries_logits"], expected["pred_masks"])
    return differences


def _fixture_output(fixture: Mapping[str, Any], key: str) -> torch.Tensor:
    """The fixture tensor that `compare_with_fixture` names `key` (e.g. `aux_outputs.0.pred_masks`)."""
    value: Any = fixture["outputs"] if key.startswith(("pred_", "aux_outputs")) else fixture
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list | tuple) else value[part]
    return value


def verification_failures(
    differences: Mapping[str, float], fixture: Mapping[str, Any], atol: float = 1e-4, rtol: float = 1e-5
) -> dict[str, tuple[float, float]]:
    """The outputs of `compare_with_fixture` off by more than `max(atol, rtol * largest |reference|)`, as
    `{key: (difference, tolerance)}` (empty: verified)."""
    failures = {}
    for key, difference in differences.items():
        tolerance = max(atol, rtol * float(_fixture_output(fixture, key).abs().max()))
        if difference > tolerance:
            failures[key] = (difference, tolerance)
    return failures


# --------------------------------------------------------------------------------------------------------------- Hub


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload `folder` to the Hub repository `repo_id` (created if needed); returns the commit URL.

    Raises:
        ConversionError: offline (HF_HUB_OFFLINE set or the Hub unreachable) or the upload failed; the folder is
            left as it is.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise ConversionError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set; {folder} was written and kept")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                                 commit_message="Convert the original checkpoint with hf-maskformer-series")
    except Exception as error:  # network, auth, ...: the folder stays
        raise ConversionError(f"push to {repo_id} failed ({type(error).__name__}: {error}); {folder} was written "
                              "and kept") from error
    return str(getattr(info, "commit_url", info))


# --------------------------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="convert_original", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model-zoo name, or the original config YAML")
    parser.add_argument("--checkpoint", required=True, help="original checkpoint (.pkl, .pth, .pt, .safetensors)")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--config-root", help="folder of the original configs (for a model-zoo name: read "
                        "<root>/<config> with its _BASE_ chain instead of the built-in defaults)")
    parser.add_argument("--thing-ids", help="comma-separated thing class ids (overrides the dataset's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--verify", metavar="FIXTURE", help="compare the converted model with a reference fixture")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of --verify (default 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-5,
                        help="tolerance of --verify relative to an output's largest magnitude, where that is larger "
                             "than --atol (default 1e-5: float32 summation order differs between kernels)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    return parser.parse_args(argv)


def resolve_original_config(model: str, config_root: str | None) -> tuple[dict, str, dict | None]:
    """(merged original config, its source description, the model-zoo entry or None)."""
    path = Path(model)
    if path.suffix.lower() in (".yaml", ".yml") or path.is_file():
        return load_original_config(path), str(path), None
    entry = find_zoo_entry(model)
    if config_root is not None and entry.get("config"):
        config_path = Path(config_root) / entry["config"]
        return load_original_config(config_path), str(config_path), entry
    return config_from_zoo_entry(entry), f"{entry.get('config')} (built-in model-zoo defaults)", entry


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        fixture = load_fixture(args.verify) if args.verify else None  # before anything is written
        cfg, source, entry = resolve_original_config(args.model, args.config_root)
        thing_ids = None
        if args.thing_ids is not None:
            thing_ids = [int(value) for value in args.thing_ids.split(",") if value.strip()]
        name = entry["name"] if entry else Path(args.output).name
        output = convert(cfg, args.checkpoint, args.output, name=name, source=source, entry=entry,
                         thing_ids=thing_ids, overwrite=args.overwrite,
                         infer_queries=entry is not None and args.config_root is None)
        print(f"wrote {output}")
        if fixture is not None:
            differences = compare_with_fixture(output, fixture)
            print(json.dumps(differences, indent=1))
            failures = verification_failures(differences, fixture, args.atol, args.rtol)
            if failures:
                key, (difference, tolerance) = max(failures.items(), key=lambda item: item[1][0] / item[1][1])
                print(f"verification FAILED: {len(failures)} outputs, worst {key}: max abs difference "
                      f"{difference:.3g} > {tolerance:.3g}", file=sys.stderr)
                return 2
            print(f"verification passed: {len(differences)} outputs within max({args.atol}, {args.rtol} x their "
                  f"largest magnitude) (max abs difference {max(differences.values()):.3g})")
        if args.push_to_hub:
            print(f"pushed: {push_to_hub(output, args.push_to_hub, private=args.private)}")
    except (ValueError, ConversionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
