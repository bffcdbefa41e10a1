"""Checkpoints that load where this package is not installed: `trust_remote_code=True` in a fresh interpreter whose
imports of `hf_maskformer_series` (and `conversion`) are blocked, giving the same logits as the package's model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from transformers import DetrConfig, SwinConfig

import hf_maskformer_series
from hf_maskformer_series.configuration_maskformer import SeriesMaskFormerConfig
from hf_maskformer_series.configuration_video_mask2former import SeriesVideoMask2FormerConfig
from hf_maskformer_series.modeling_maskformer import SeriesMaskFormerForInstanceSegmentation
from hf_maskformer_series.modeling_video_mask2former import SeriesVideoMask2FormerForVideoInstanceSegmentation

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["stage1", "stage2", "stage3", "stage4"]

HIDDEN_PACKAGE_RUNNER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = ("hf_maskformer_series", "conversion")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is hidden for this test")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import hf_maskformer_series  # noqa: F401
        raise SystemExit("the package is not hidden")
    except ModuleNotFoundError:
        pass
    import torch
    from transformers import AutoConfig, AutoModelForUniversalSegmentation

    report = {}
    for folder, input_name, input_file, output_file in json.loads(sys.argv[1]):
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        model = AutoModelForUniversalSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            outputs = model(**{input_name: torch.load(input_file, weights_only=True)})
        torch.save(outputs.class_queries_logits, output_file)
        report[folder] = {"module": type(model).__module__, "class": type(model).__name__,
                          "config": type(config).__name__}
    print(json.dumps(report))
    """
)


def _tiny_swin() -> SwinConfig:
    return SwinConfig(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=4, out_features=STAGES)


def _tiny_models() -> dict[str, tuple[torch.nn.Module, str, torch.Tensor]]:
    torch.manual_seed(0)
    head = dict(hidden_dim=32, feature_size=32, mask_feature_size=32, encoder_feedforward_dim=64, dim_feedforward=64,
                num_queries=6, decoder_layers=4, encoder_layers=1, num_attention_heads=2, num_labels=4)
    image = hf_maskformer_series.SeriesMask2FormerForUniversalSegmentation(
        hf_maskformer_series.SeriesMask2FormerConfig(backbone_config=_tiny_swin(), **head))
    video = SeriesVideoMask2FormerForVideoInstanceSegmentation(
        SeriesVideoMask2FormerConfig(backbone_config=_tiny_swin(), **head))
    maskformer = SeriesMaskFormerForInstanceSegmentation(SeriesMaskFormerConfig(
        backbone_config=_tiny_swin(), fpn_feature_size=32, mask_feature_size=32, num_labels=4,
        decoder_config=DetrConfig(d_model=32, num_queries=6, decoder_layers=2, decoder_attention_heads=2,
                                  decoder_ffn_dim=64, encoder_layers=0)))
    return {
        "mask2former": (image.eval(), "pixel_values", torch.randn(1, 3, 64, 96)),
        "maskformer": (maskformer.eval(), "pixel_values", torch.randn(1, 3, 64, 96)),
        "video_mask2former": (video.eval(), "pixel_values_videos", torch.randn(1, 2, 3, 64, 64)),
    }


def _run_hidden(jobs: list[list[str]], workdir: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_MODULES_CACHE"] = str(workdir / "modules_cache")
    result = subprocess.run([sys.executable, "-c", HIDDEN_PACKAGE_RUNNER, json.dumps(jobs)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_trust_remote_code_without_the_package(tmp_path):
    """Each family's folder (saved with its code) loads with trust_remote_code where the package cannot be
    imported, with no file of the package on the path, and reproduces the logits."""
    jobs, expected = [], {}
    for family, (model, input_name, inputs) in _tiny_models().items():
        folder = tmp_path / family
        model.save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        module = type(model).__module__.split(".")[-1]
        assert config["auto_map"]["AutoModelForUniversalSegmentation"] == f"{module}.{type(model).__name__}"
        assert (folder / f"{module}.py").is_file() and not list(folder.glob("*/"))  # flat: no subpackages
        siblings = {"maskformer": "detr_transformer.py"}.get(family, "deformable_pixel_decoder.py")
        for sibling in (siblings, "modeling_outputs.py", "modeling_common.py", "configuration_common.py"):
            assert (folder / sibling).is_file(), sibling  # the modules it imports travel with it
        torch.save(inputs, tmp_path / f"{family}_inputs.pt")
        jobs.append([str(folder), input_name, str(tmp_path / f"{family}_inputs.pt"), str(tmp_path / f"{family}.pt")])
        with torch.no_grad():
            expected[family] = model(**{input_name: inputs}).class_queries_logits
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    report = _run_hidden(jobs, workdir)
    for family, (model, _, _) in _tiny_models().items():
        entry = report[str(tmp_path / family)]
        assert entry["module"].startswith("transformers_modules."), entry  # the folder's copy, not the package
        assert entry["class"] == type(model).__name__
        torch.testing.assert_close(torch.load(tmp_path / f"{family}.pt", weights_only=True), expected[family],
                                   atol=1e-6, rtol=1e-6)


def test_converted_checkpoint_loads_with_remote_code(tmp_path):
    """A folder written by the conversion command line (from the R50 fixture) runs without the package and
    reproduces the original logits."""
    from conversion.convert_original import main, write_detectron2_pkl

    data = torch.load(ROOT / "tests" / "fixtures" / "m2f_image_r50.pt", weights_only=True)
    write_detectron2_pkl(data["state_dict"], tmp_path / "model_final.pkl")
    (tmp_path / "config.yaml").write_text(data["config_yaml"])
    assert main([str(tmp_path / "config.yaml"), "--checkpoint", str(tmp_path / "model_final.pkl"),
                 "--output", str(tmp_path / "converted")]) == 0
    torch.save(data["inputs"]["pixel_values"], tmp_path / "inputs.pt")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    _run_hidden([[str(tmp_path / "converted"), "pixel_values", str(tmp_path / "inputs.pt"),
                  str(tmp_path / "logits.pt")]], workdir)
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), data["outputs"]["pred_logits"],
                               atol=1e-4, rtol=1e-4)
