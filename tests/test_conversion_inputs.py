"""Conversion inputs: the original code defaults as the one source for keys a YAML leaves out, and clear errors for
corrupt checkpoints, malformed YAML, a missing --verify fixture and an existing output (checked before any work)."""

from __future__ import annotations

import copy
import json
import pickle
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml

from conversion.convert_original import load_original_checkpoint, main, write_detectron2_pkl
from conversion.detectron2_config import ORIGINAL_DEFAULTS, load_original_config, with_original_defaults
from conversion.model_zoo import load_model_zoo
from conversion.original_config import build_model_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)


def _without(cfg: dict, *dotted: str) -> dict:
    cfg = copy.deepcopy(cfg)
    for key in dotted:
        *path, leaf = key.split(".")
        node = cfg
        for name in path:
            node = node[name]
        del node[leaf]
    return cfg


def test_keys_left_out_take_the_original_code_defaults():
    """A MaskFormer YAML without TRANSFORMER_ENC_LAYERS / DROPOUT / DEC_LAYERS gets the original's 0 / 0.1 / 6 (the
    defaults of `add_mask_former_config`), the ones detectron2 would build; Mask2Former's code defaults too."""
    cfg = yaml.safe_load(_fixture("maskformer_tenc_r50")["config_yaml"])
    assert cfg["MODEL"]["SEM_SEG_HEAD"]["TRANSFORMER_ENC_LAYERS"] > 0
    config, _ = build_model_config(_without(cfg, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
                                            "MODEL.MASK_FORMER.DROPOUT", "MODEL.MASK_FORMER.DEC_LAYERS"))
    assert config.pixel_decoder_encoder_layers == 0
    assert config.decoder_config.dropout == 0.1 and config.decoder_config.decoder_layers == 6
    full, _ = build_model_config(cfg)
    assert full.pixel_decoder_encoder_layers == cfg["MODEL"]["SEM_SEG_HEAD"]["TRANSFORMER_ENC_LAYERS"]

    cfg = yaml.safe_load(_fixture("m2f_image_r50")["config_yaml"])
    config, _ = build_model_config(_without(cfg, "MODEL.MASK_FORMER.DEC_LAYERS", "MODEL.MASK_FORMER.CLASS_WEIGHT",
                                            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS"))
    assert (config.decoder_layers, config.class_weight, config.encoder_layers) == (6, 1.0, 0)
    # the defaults never override what the YAML says, and every family has them
    assert with_original_defaults(cfg, "mask2former")["MODEL"]["MASK_FORMER"] == {
        **ORIGINAL_DEFAULTS["mask2former"]["MODEL"]["MASK_FORMER"], **cfg["MODEL"]["MASK_FORMER"],
        "TEST": {**ORIGINAL_DEFAULTS["mask2former"]["MODEL"]["MASK_FORMER"]["TEST"],
                 **cfg["MODEL"]["MASK_FORMER"].get("TEST", {})}}
    with pytest.raises(ValueError, match="the original config has no MODEL.SEM_SEG_HEAD.NUM_CLASSES"):
        build_model_config(_without(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES"))


def test_model_zoo_is_read_from_the_package():
    packaged = json.loads(resources.files("hf_maskformer_series").joinpath("model_zoo.json").read_text())
    assert load_model_zoo() == packaged


def test_corrupt_and_truncated_checkpoints_name_the_file(tmp_path, capsys):
    good = tmp_path / "model_final.pkl"
    write_detectron2_pkl({"a": torch.ones(64, 64)}, good)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"<html>404 Not Found</html>")
    torch.save({"a": torch.ones(64, 64)}, tmp_path / "good.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "good.pth").read_bytes()[:300])
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    for path in (truncated, garbage, tmp_path / "truncated.pth", tmp_path / "truncated.safetensors"):
        with pytest.raises(ValueError, match=rf"checkpoint {path} cannot be read \(truncated or corrupt\?\)"):
            load_original_checkpoint(path)
    assert load_original_checkpoint(good)["a"].shape == (64, 64)
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"does not hold a \{name: array\} state dict"):
        load_original_checkpoint(tmp_path / "list.pkl")

    (tmp_path / "config.yaml").write_text(_fixture("m2f_image_r50")["config_yaml"])
    code = main([str(tmp_path / "config.yaml"), "--checkpoint", str(truncated), "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 1 and f"checkpoint {truncated} cannot be read" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_malformed_yaml_names_the_file(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL:\n  MASK_FORMER: [1, 2\n  NHEADS: 8\n")
    with pytest.raises(ValueError, match=rf"original config {broken} is not valid YAML"):
        load_original_config(broken)
    (tmp_path / "child.yaml").write_text("_BASE_: broken.yaml\n")
    with pytest.raises(ValueError, match=rf"original config {broken} is not valid YAML"):
        load_original_config(tmp_path / "child.yaml")
    (tmp_path / "scalar.yaml").write_text("just a string\n")
    with pytest.raises(ValueError, match="scalar.yaml is not a YAML mapping"):
        load_original_config(tmp_path / "scalar.yaml")
    assert main([str(broken), "--checkpoint", str(tmp_path / "x.pkl"), "--output", str(tmp_path / "out")]) == 1
    assert f"{broken} is not valid YAML" in capsys.readouterr().err


def _r50_inputs(tmp_path: Path) -> tuple[Path, Path]:
    data = _fixture("m2f_image_r50")
    write_detectron2_pkl(data["state_dict"], tmp_path / "model_final.pkl")
    (tmp_path / "config.yaml").write_text(data["config_yaml"])
    return tmp_path / "config.yaml", tmp_path / "model_final.pkl"


def test_verify_with_a_missing_fixture_fails_before_anything_is_written(tmp_path, capsys):
    config, checkpoint = _r50_inputs(tmp_path)
    output = tmp_path / "out" / "converted"
    code = main([str(config), "--checkpoint", str(checkpoint), "--output", str(output),
                 "--verify", str(tmp_path / "missing.pt")])
    assert code == 1 and f"verification fixture {tmp_path / 'missing.pt'} not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # not even the parent folder or a temporary folder
    (tmp_path / "not_a_fixture.pt").write_bytes(b"junk")
    assert main([str(config), "--checkpoint", str(checkpoint), "--output", str(output),
                 "--verify", str(tmp_path / "not_a_fixture.pt")]) == 1
    assert "not_a_fixture.pt cannot be read" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_existing_output_is_refused_before_the_conversion(tmp_path, capsys):
    """The output check comes first: with a corrupt checkpoint the error is about the folder, not the checkpoint."""
    config, _ = _r50_inputs(tmp_path)
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"\x80\x04junk")
    output = tmp_path / "existing"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    assert main([str(config), "--checkpoint", str(corrupt), "--output", str(output)]) == 1
    error = capsys.readouterr().err
    assert f"{output} exists; pass --overwrite" in error and "cannot be read" not in error
    assert (output / "keep.txt").read_text() == "mine"
