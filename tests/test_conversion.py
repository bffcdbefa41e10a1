"""Conversion of original (detectron2) checkpoints: key mapping, config building, the command-line tool against
the reference fixtures, Swin edge cases, the model zoo, and transformers <-> ours round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import hf_maskformer_series  # noqa: F401 - registers the Auto classes
from conversion.convert_original import (
    compare_with_fixture,
    load_original_checkpoint,
    main,
    verification_failures,
    write_detectron2_pkl,
)
from conversion.detectron2_config import detect_family, load_original_config
from conversion.keys_backbones import (
    backbone_config_from_original,
    convert_backbone,
    convert_resnet_backbone,
    convert_swin_backbone,
    resnet_backbone_config,
)
from conversion.keys_mask2former import convert_mask2former_state_dict
from conversion.model_zoo import config_from_zoo_entry, load_model_zoo
from conversion.original_config import build_model_config, build_processor_kwargs

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
ALL_FIXTURES = ["m2f_image_swin", "m2f_image_r50", "m2f_video_swin", "maskformer_fpn_swin", "maskformer_tenc_r50"]
FAMILY_MODULES = {
    "m2f_image_swin": "conversion.keys_mask2former",
    "m2f_image_r50": "conversion.keys_mask2former",
    "m2f_video_swin": "conversion.keys_video_mask2former",
    "maskformer_fpn_swin": "conversion.keys_maskformer",
    "maskformer_tenc_r50": "conversion.keys_maskformer",
}
ATOL = 1e-4


def _load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)


def _module_available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Every fixture written as a detectron2 `.pkl` + YAML and converted with the command-line entry point."""
    root = tmp_path_factory.mktemp("converted")
    folders = {}
    for name in ALL_FIXTURES:
        if not _module_available(FAMILY_MODULES[name]):
            continue
        data = _load_fixture(name)
        write_detectron2_pkl(data["state_dict"], root / f"{name}.pkl")
        (root / f"{name}.yaml").write_text(data["config_yaml"])
        code = main([str(root / f"{name}.yaml"), "--checkpoint", str(root / f"{name}.pkl"),
                     "--output", str(root / name), "--thing-ids", "0,1,2"])
        assert code == 0, name
        folders[name] = root / name
    return folders


# ------------------------------------------------------------------------------------------------------ key mapping


def test_swin_mapping_splits_qkv_and_drops_index():
    data = _load_fixture("m2f_image_swin")
    original = data["state_dict"]
    converted = convert_swin_backbone(original)
    prefix = "model.pixel_level_module.encoder.swin.encoder.layers.1.blocks.1.attention."
    qkv = original["backbone.layers.1.blocks.1.attn.qkv.weight"]
    channels = qkv.shape[1]
    assert torch.equal(converted[prefix + "q_proj.weight"], qkv[:channels])
    assert torch.equal(converted[prefix + "k_proj.weight"], qkv[channels : 2 * channels])
    assert torch.equal(converted[prefix + "v_proj.weight"], qkv[2 * channels :])
    assert not any("relative_position_index" in key for key in converted)
    assert torch.equal(converted["model.pixel_level_module.encoder.hidden_states_norms.stage4.weight"],
                       original["backbone.norm3.weight"])
    # MaskFormer-Swin naming keeps the (persistent) index buffer and numbers the output norms from 0
    maskformer = convert_swin_backbone(original, naming="maskformer_swin")
    assert "model.pixel_level_module.encoder.model.encoder.layers.0.blocks.0.attention.self.relative_position_index" \
        in maskformer
    assert "model.pixel_level_module.encoder.hidden_states_norms.3.bias" in maskformer
    with pytest.raises(ValueError, match="unexpected Swin"):
        convert_swin_backbone({"backbone.layers.0.blocks.0.attn.bogus.weight": torch.zeros(1)})


def test_resnet_mapping_and_config():
    data = _load_fixture("m2f_image_r50")
    cfg = yaml.safe_load(data["config_yaml"])
    converted = convert_resnet_backbone(data["state_dict"], prefix_out="")
    assert torch.equal(converted["encoder.stages.3.layers.0.shortcut.normalization.running_var"],
                       data["state_dict"]["backbone.res5.0.shortcut.norm.running_var"])
    assert converted["embedder.embedder.normalization.num_batches_tracked"].item() == 0
    config = resnet_backbone_config(cfg)
    assert config.depths == [3, 4, 6, 3] and config.embedding_size == 16
    assert config.hidden_sizes == [32, 64, 128, 256] and config.downsample_in_bottleneck is False
    cfg["MODEL"]["RESNETS"]["STEM_TYPE"] = "deeplab"
    with pytest.raises(ValueError, match="deeplab"):
        resnet_backbone_config(cfg)


@pytest.mark.parametrize("name", ["m2f_image_swin", "m2f_image_r50", "maskformer_fpn_swin", "maskformer_tenc_r50"])
def test_backbone_alone_matches_fixture(name):
    """The backbone conversion alone reproduces the original backbone maps (transformers' backbones)."""
    from transformers import AutoBackbone

    data = _load_fixture(name)
    cfg = yaml.safe_load(data["config_yaml"])
    naming = "maskformer_swin" if name.startswith("maskformer") else "swin"
    backbone = AutoBackbone.from_config(backbone_config_from_original(cfg, naming=naming)).eval()
    missing, unexpected = backbone.load_state_dict(
        convert_backbone(data["state_dict"], cfg, prefix_out="", naming=naming), strict=False)
    assert unexpected == [] and all("layernorm" in key for key in missing)
    with torch.no_grad():
        maps = backbone(data["inputs"]["pixel_values"]).feature_maps
    for level, key in enumerate(("res2", "res3", "res4", "res5")):
        torch.testing.assert_close(maps[level], data["backbone_features"][key], atol=ATOL, rtol=ATOL)


def test_static_query_and_query_feat_are_both_accepted():
    data = _load_fixture("m2f_image_r50")
    cfg = yaml.safe_load(data["config_yaml"])
    original = dict(data["state_dict"])
    with_static = convert_mask2former_state_dict(original, cfg)
    renamed = dict(original)
    renamed["sem_seg_head.predictor.query_feat.weight"] = renamed.pop("sem_seg_head.predictor.static_query.weight")
    with_feat = convert_mask2former_state_dict(renamed, cfg)
    assert set(with_static) == set(with_feat)
    assert torch.equal(with_static["model.transformer_module.queries_features.weight"],
                       with_feat["model.transformer_module.queries_features.weight"])
    renamed["sem_seg_head.predictor.static_query.weight"] = original["sem_seg_head.predictor.static_query.weight"]
    with pytest.raises(ValueError, match="both static_query and query_feat"):
        convert_mask2former_state_dict(renamed, cfg)


# ----------------------------------------------------------------------------------------------------------- config


def test_base_chain_is_resolved(tmp_path):
    (tmp_path / "Base.yaml").write_text("MODEL:\n  MASK_FORMER:\n    HIDDEN_DIM: 256\n    NHEADS: 8\nINPUT:\n"
                                        "  MIN_SIZE_TEST: 800\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("_BASE_: ../Base.yaml\nMODEL:\n  MASK_FORMER:\n    NHEADS: 4\n")
    cfg = load_original_config(tmp_path / "sub" / "child.yaml")
    assert cfg["MODEL"]["MASK_FORMER"] == {"HIDDEN_DIM": 256, "NHEADS": 4}
    assert cfg["INPUT"]["MIN_SIZE_TEST"] == 800
    (tmp_path / "orphan.yaml").write_text("_BASE_: missing.yaml\n")
    with pytest.raises(ValueError, match="not found"):
        load_original_config(tmp_path / "orphan.yaml")


def test_model_config_and_processor_from_fixture_yaml():
    cfg = yaml.safe_load(_load_fixture("m2f_image_swin")["config_yaml"])
    assert detect_family(cfg) == "mask2former"
    config, labels = build_model_config(cfg, thing_ids=[0, 1, 2])
    assert (config.hidden_dim, config.num_queries, config.decoder_layers, config.encoder_layers) == (64, 10, 5, 2)
    assert config.num_attention_heads == 4 and config.encoder_feedforward_dim == 1024
    assert config.backbone_config.window_size == 4 and config.backbone_config.embed_dim == 16
    assert config.thing_ids == [0, 1, 2] and config.stuff_ids == [3, 4]
    processor = build_processor_kwargs(cfg, "mask2former", labels)
    assert processor["size"] == {"shortest_edge": 800, "longest_edge": 1333}
    torch.testing.assert_close(torch.tensor(processor["image_mean"]), torch.tensor([0.485, 0.456, 0.406]))
    assert processor["size_divisor"] == 32 and processor["snap_resize_to_size_divisor"] is False


def test_dataset_labels_from_zoo():
    zoo = load_model_zoo()
    cfg = config_from_zoo_entry(next(e for e in zoo["models"] if e["name"] == "mask2former-r50-coco-panoptic"))
    config, labels = build_model_config(cfg)
    assert len(config.id2label) == 133 and config.id2label[0] == "person" and config.id2label[132] == "rug-merged"
    assert config.thing_ids == list(range(80)) and config.label2id["person"] == 0
    assert config.backbone_config.depths == [3, 4, 6, 3] and config.backbone_config.hidden_sizes[-1] == 2048
    cfg = config_from_zoo_entry(next(e for e in zoo["models"] if e["name"] == "mask2former-swin-large-coco-panoptic"))
    config, _ = build_model_config(cfg)
    assert config.num_queries == 200 and config.backbone_config.window_size == 12
    assert config.backbone_config.embed_dim == 192


def test_model_zoo_is_complete_and_convertible_by_name():
    zoo = load_model_zoo()
    names = [entry["name"] for entry in zoo["models"]]
    assert len(names) == len(set(names))
    families = {entry["family"] for entry in zoo["models"]}
    assert families == {"mask2former", "maskformer", "video_mask2former"}
    expected = {("mask2former-swin-large-coco-panoptic", "PQ", 57.8), ("mask2former-r50-coco-instance", "AP", 43.7),
                ("video-mask2former-swin-large-youtubevis-2019", "AP", 60.4),
                ("maskformer-swin-large-ade20k-semantic", "mIoU", 54.1), ("maskformer-r50-coco-panoptic", "PQ", 46.5)}
    table = {(entry["name"], entry["metric"], entry["value"]) for entry in zoo["models"]}
    assert expected <= table
    for entry in zoo["models"]:
        assert entry["checkpoint"] is None or entry["checkpoint"].startswith("model_final_")
        if entry.get("supported", True):
            config, labels = build_model_config(config_from_zoo_entry(entry))
            assert len(config.id2label) == zoo["datasets"][entry["dataset"]]["num_classes"]
        else:
            with pytest.raises(ValueError):
                config_from_zoo_entry(entry)


# ----------------------------------------------------------------------------------------------- fixtures end to end


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_converted_fixture_matches_original(name, converted):
    if name not in converted:
        pytest.skip(f"{FAMILY_MODULES[name]} (the key mapping of this family) is not in this checkout")
    data = _load_fixture(name)
    differences = compare_with_fixture(converted[name], FIXTURES / f"{name}.pt")
    expected = {f"backbone_features.res{i}" for i in range(2, 6)} | {"mask_features", "pred_logits", "pred_masks"}
    expected |= {f"aux_outputs.{i}.{kind}" for i in range(len(data["outputs"]["aux_outputs"]))
                 for kind in ("pred_logits", "pred_masks")}
    levels = "fpn_features" if "fpn_features" in data else "multi_scale_features"
    expected |= {f"{levels}.{i}" for i in range(len(data[levels]))}
    assert set(differences) == expected
    # 1e-4, or 1e-5 of an output's largest magnitude where that is larger (float32 summation order)
    assert verification_failures(differences, data) == {}


def test_converted_folder_contents_and_auto_loading(converted):
    from transformers import AutoModelForUniversalSegmentation

    folder = converted["m2f_image_swin"]
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md",
            "modeling_mask2former.py", "configuration_mask2former.py"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForUniversalSegmentation"] == (
        "modeling_mask2former.SeriesMask2FormerForUniversalSegmentation")
    assert config["thing_ids"] == [0, 1, 2] and config["stuff_ids"] == [3, 4]
    assert config["original_test_settings"]["panoptic_on"] is True
    model = AutoModelForUniversalSegmentation.from_pretrained(folder).eval()
    data = _load_fixture("m2f_image_swin")
    with torch.no_grad():
        logits = model(pixel_values=data["inputs"]["pixel_values"]).class_queries_logits
    torch.testing.assert_close(logits, data["outputs"]["pred_logits"], atol=ATOL, rtol=ATOL)
    assert not any(path.name.startswith(".") for path in folder.parent.iterdir() if "tmp" in path.name)


def test_post_processing_of_converted_model(converted):
    """Semantic and panoptic results of the converted folder (its processor, its thing/stuff ids) match the
    original's, up to the fixture's documented near-tie pixels."""
    from hf_maskformer_series.image_processing import SeriesMask2FormerImageProcessor

    folder = converted["m2f_image_r50"]
    data = _load_fixture("m2f_image_r50")
    post = data["postprocess"]
    margins = data["decision_margins"]
    model = hf_maskformer_series.SeriesMask2FormerForUniversalSegmentation.from_pretrained(folder).eval()
    processor = SeriesMask2FormerImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        outputs = model(pixel_values=data["inputs"]["pixel_values"])
    outputs.image_sizes = torch.tensor(post["image_sizes"])
    semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=post["output_sizes"])
    for index, result in enumerate(semantic):
        expected = post["real"]["per_image"][index]["sem_seg"].argmax(0)
        assert (result != expected).sum() <= margins["argmax_pixels_gap_lt_1e-4"]
    stuff = model.config.stuff_ids
    for setting in ("real", "low"):
        settings = post[setting]["settings"]
        panoptic = processor.post_process_panoptic_segmentation(
            outputs, threshold=settings["object_mask_threshold"],
            overlap_mask_area_threshold=settings["overlap_threshold"], label_ids_to_fuse=stuff,
            target_sizes=post["output_sizes"])
        for index, result in enumerate(panoptic):
            original = post[setting]["per_image"][index]
            labels_original = {s["id"]: s["category_id"] for s in original["segments_info"]}
            labels_ours = {s["id"]: s["label_id"] for s in result["segments_info"]}
            assert sorted(labels_original.values()) == sorted(labels_ours.values())
            category_original = torch.full_like(original["panoptic_seg"], -1, dtype=torch.long)
            for segment, category in labels_original.items():
                category_original[original["panoptic_seg"] == segment] = category
            category_ours = torch.full_like(category_original, -1)
            for segment, category in labels_ours.items():
                category_ours[result["segmentation"] == segment] = category
            assert (category_ours != category_original).sum() <= margins["argmax_pixels_gap_lt_1e-4"]


def test_command_line_subprocess_and_errors(tmp_path):
    data = _load_fixture("m2f_image_r50")
    write_detectron2_pkl(data["state_dict"], tmp_path / "model_final.pkl")
    (tmp_path / "config.yaml").write_text(data["config_yaml"])
    output = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "conversion.convert_original", str(tmp_path / "config.yaml"), "--checkpoint",
               str(tmp_path / "model_final.pkl"), "--output", str(output), "--verify",
               str(FIXTURES / "m2f_image_r50.pt"), "--push-to-hub", "someone/m2f-test"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    # conversion and verification succeed, the offline push fails clearly and leaves the folder intact
    assert "verification passed" in result.stdout, result.stderr[-2000:]
    assert result.returncode == 1 and "HF_HUB_OFFLINE" in result.stderr
    assert (output / "model.safetensors").is_file() and (output / "config.json").is_file()
    # an existing folder is not replaced without --overwrite, and stays intact
    before = (output / "model.safetensors").stat().st_mtime_ns
    assert main([str(tmp_path / "config.yaml"), "--checkpoint", str(tmp_path / "model_final.pkl"),
                 "--output", str(output)]) == 1
    assert (output / "model.safetensors").stat().st_mtime_ns == before
    assert not [path for path in tmp_path.iterdir() if ".tmp-" in path.name]
    # the pickle round trip of the checkpoint loader
    loaded = load_original_checkpoint(tmp_path / "model_final.pkl")
    assert set(loaded) == set(data["state_dict"])
    assert all(torch.equal(loaded[key], data["state_dict"][key]) for key in loaded)
    # a checkpoint that does not fit the config names the problem
    broken = dict(data["state_dict"])
    broken["sem_seg_head.predictor.class_embed.weight"] = torch.zeros(7, 64)
    broken["sem_seg_head.predictor.class_embed.bias"] = torch.zeros(7)
    write_detectron2_pkl(broken, tmp_path / "broken.pkl")
    assert main([str(tmp_path / "config.yaml"), "--checkpoint", str(tmp_path / "broken.pkl"),
                 "--output", str(tmp_path / "broken_out")]) == 1
    assert not (tmp_path / "broken_out").exists()


def test_pipeline_runs_on_converted_folder(converted):
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    segmenter = pipeline("image-segmentation", model=str(converted["m2f_image_r50"]), trust_remote_code=True)
    image = Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype("uint8"))
    results = segmenter(image, subtask="semantic")
    assert results and all(result["mask"].size == (128, 96) for result in results)
    assert all(result["label"].startswith("class_") for result in results)


# ------------------------------------------------------------------------------------------------ Swin edge cases


def test_swin_stage_equal_to_window_keeps_the_shift():
    """The fixture's last Swin stage is 4x6 with window 4 (side == window). transformers' `SwinBackbone` keeps the
    shifted window (as the original): it matches the fixture, and a clamping path (no shift) differs."""
    from transformers import AutoBackbone

    data = _load_fixture("m2f_image_swin")
    cfg = yaml.safe_load(data["config_yaml"])
    assert data["backbone_features"]["res5"].shape[-2] == cfg["MODEL"]["SWIN"]["WINDOW_SIZE"] == 4
    backbone = AutoBackbone.from_config(backbone_config_from_original(cfg)).eval()
    backbone.load_state_dict(convert_backbone(data["state_dict"], cfg, prefix_out=""), strict=False)
    pixel_values = data["inputs"]["pixel_values"]
    with torch.no_grad():
        kept = backbone(pixel_values).feature_maps[-1]
        # the clamping path: SwinModel without always_partition turns the shift off at side <= window
        clamped_states = backbone.swin(pixel_values, output_hidden_states_before_downsampling=True,
                                       output_hidden_states=True).reshaped_hidden_states[-1]
        clamped = backbone.hidden_states_norms["stage4"](clamped_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(kept, data["backbone_features"]["res5"], atol=ATOL, rtol=ATOL)
    assert (clamped - data["backbone_features"]["res5"]).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------- transformers <-> ours


def _tiny_transformers_mask2former():
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    torch.manual_seed(0)
    config = Mask2FormerConfig(
        backbone_config={"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4],
                         "window_size": 4, "out_features": ["stage1", "stage2", "stage3", "stage4"]},
        hidden_dim=32, feature_size=32, mask_feature_size=32, encoder_feedforward_dim=64, dim_feedforward=64,
        num_queries=6, decoder_layers=4, encoder_layers=1, num_attention_heads=2, num_labels=4)
    return Mask2FormerForUniversalSegmentation(config).eval()


def test_transformers_round_trip_is_lossless(tmp_path):
    from transformers import Mask2FormerForUniversalSegmentation

    from conversion.convert_transformers import ours_to_transformers, transformers_to_ours

    reference = _tiny_transformers_mask2former()
    reference.save_pretrained(tmp_path / "hf")
    transformers_to_ours(tmp_path / "hf", tmp_path / "ours")
    ours = hf_maskformer_series.SeriesMask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "ours").eval()
    assert ours.config.model_type == "series_mask2former"
    ours.config.encoder_num_points = 4
    ours.config.use_kernels = False
    ours.save_pretrained(tmp_path / "ours_modified")
    ours_to_transformers(tmp_path / "ours_modified", tmp_path / "back")
    back = Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "back").eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference(pixel_values)
        torch.testing.assert_close(ours(pixel_values).masks_queries_logits, expected.masks_queries_logits,
                                   atol=1e-5, rtol=1e-5)
        assert torch.equal(back(pixel_values).class_queries_logits, expected.class_queries_logits)
    assert all(torch.equal(value, back.state_dict()[key]) for key, value in reference.state_dict().items())
    # our extra attributes survive the trip through transformers' config.json
    transformers_to_ours(tmp_path / "back", tmp_path / "ours_again")
    again = json.loads((tmp_path / "ours_again" / "config.json").read_text())
    assert again["use_kernels"] is False and again["model_type"] == "series_mask2former"
