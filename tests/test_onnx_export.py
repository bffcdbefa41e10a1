"""ONNX export of the three families: ONNX Runtime (CPU) equals PyTorch on one dynamic-axes graph, and the
processors' post-processing gives the same results on its outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import hf_maskformer_series as hms
from tests._tiny_configs import tiny_mask2former_kwargs, tiny_resnet, tiny_swin

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from conversion.export_onnx import (  # noqa: E402
    ExportShapes,
    OnnxExportWrapper,
    export_to_onnx,
    input_names,
    load_series_model,
    main,
    program_to_onnx,
)
from conversion.onnx_runtime import create_session, run_session  # noqa: E402
from hf_maskformer_series.ms_deform_attn import multi_scale_deformable_attention  # noqa: E402

TOLERANCE = 1e-4
MASKFORMER_DECODER = dict(d_model=32, decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=64, num_queries=6)


# A ResNet backbone keeps the exported graphs small (torch.export + ONNX decompositions take seconds, not minutes);
# the Swin backbone is exported once, with fixed sizes, in `test_fixed_shapes_and_cli_errors`.
TINY_RESNET = dict(hidden_sizes=[16, 16, 32, 32], layer_type="basic")
TINY_MASK2FORMER = tiny_mask2former_kwargs(backbone_config=tiny_resnet(**TINY_RESNET), decoder_layers=3, encoder_layers=1)


def _maskformer(pixel_decoder_type: str, backbone_config=None) -> hms.SeriesMaskFormerForInstanceSegmentation:
    config = hms.SeriesMaskFormerConfig(
        backbone_config=backbone_config or tiny_resnet(**TINY_RESNET), decoder_config=dict(MASKFORMER_DECODER),
        fpn_feature_size=32, mask_feature_size=32, num_labels=4, pixel_decoder_type=pixel_decoder_type, pixel_decoder_encoder_layers=1,
        pixel_decoder_encoder_attention_heads=2, pixel_decoder_encoder_ffn_dim=64,
    )
    return hms.SeriesMaskFormerForInstanceSegmentation(config)


FAMILIES = {
    "mask2former": lambda: hms.SeriesMask2FormerForUniversalSegmentation(
        hms.SeriesMask2FormerConfig(**TINY_MASK2FORMER)
    ),
    "maskformer-fpn": lambda: _maskformer("fpn"),
    "maskformer-transformer-encoder": lambda: _maskformer("transformer_encoder"),
    "video-mask2former": lambda: hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(
        hms.SeriesVideoMask2FormerConfig(**TINY_MASK2FORMER)
    ),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def exported(request, tmp_path_factory):
    """(model, ONNX Runtime session) of one family, exported once with every axis dynamic."""
    torch.manual_seed(0)
    model = FAMILIES[request.param]().eval()
    path = export_to_onnx(model, tmp_path_factory.mktemp(request.param) / "model.onnx")
    return model, create_session(path, intra_op_threads=1)


def _inputs(model, batch: int, height: int, width: int, frames: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A processor-like batch; with batch 2 the second image is padded bottom and right."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, frames, 3, height, width) if "videos" in input_names(model)[0] else (batch, 3, height, width)
    pixel_mask = torch.ones(batch, height, width, dtype=torch.int64)
    if batch > 1:
        pixel_mask[1, height - 32 :] = 0
        pixel_mask[1, :, width // 2 :] = 0
    pixel_values = torch.randn(shape, generator=generator)
    return {input_names(model)[0]: pixel_values * pixel_mask[:, None, None] if len(shape) == 5 else
            pixel_values * pixel_mask[:, None], "pixel_mask": pixel_mask}


def _torch_outputs(model, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        outputs = OnnxExportWrapper(model)(*inputs.values())
    return dict(zip(("class_queries_logits", "masks_queries_logits", "image_sizes", "padded_image_size"), outputs))


# Sizes of one graph: a padded batch of two at 64x96 and a single image (video) at 96x64.
CASES = [(2, 64, 96), (1, 96, 64)]


@pytest.mark.parametrize("batch,height,width", CASES)
def test_onnx_runtime_matches_pytorch(exported, batch, height, width):
    model, session = exported
    inputs = _inputs(model, batch, height, width)
    expected = _torch_outputs(model, inputs)
    actual = run_session(session, inputs)
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert actual[name].shape == tuple(value.shape), name
        np.testing.assert_allclose(actual[name], value.numpy(), atol=TOLERANCE, rtol=0, err_msg=name)
    assert actual["image_sizes"].tolist() == ([[height, width], [height - 32, width // 2]] if batch == 2 else
                                              [[height, width]])
    assert actual["padded_image_size"].tolist() == [[height, width]] * batch
    # the model's own geometry fields agree with the graph's
    with torch.no_grad():
        reference = model(inputs[input_names(model)[0]], pixel_mask=inputs["pixel_mask"])
    assert reference.image_sizes.tolist() == actual["image_sizes"].tolist()


def _same_panoptic(first: list[dict], second: list[dict]) -> None:
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["segmentation"], b["segmentation"])
        assert [(s["id"], s["label_id"]) for s in a["segments_info"]] == [
            (s["id"], s["label_id"]) for s in b["segments_info"]
        ]
        np.testing.assert_allclose([s["score"] for s in a["segments_info"]],
                                   [s["score"] for s in b["segments_info"]], atol=TOLERANCE)


def test_post_processing_on_onnx_runtime_outputs(exported):
    model, session = exported
    inputs = _inputs(model, 2, 64, 96, seed=1)
    video = "videos" in input_names(model)[0]
    expected = _torch_outputs(model, inputs)
    actual = run_session(session, inputs)  # numpy arrays, as ONNX Runtime returns them
    if video:
        processor = hms.SeriesVideoMask2FormerVideoProcessor()
        a = processor.post_process_video_instance_segmentation(expected, top_k=5)
        b = processor.post_process_video_instance_segmentation(actual, top_k=5)
        for video_a, video_b in zip(a, b, strict=True):
            assert [(r["label_id"], r["query_index"]) for r in video_a] == [
                (r["label_id"], r["query_index"]) for r in video_b
            ]
            for ra, rb in zip(video_a, video_b):
                assert all(torch.equal(fa, fb) for fa, fb in zip(ra["segmentations"], rb["segmentations"]))
        return
    processor = (hms.SeriesMaskFormerImageProcessor() if isinstance(model, hms.SeriesMaskFormerForInstanceSegmentation)
                 else hms.SeriesMask2FormerImageProcessor())
    targets = [(50, 70), (40, 60)]
    for a, b in zip(processor.post_process_semantic_segmentation(expected, target_sizes=targets),
                    processor.post_process_semantic_segmentation(actual, target_sizes=targets), strict=True):
        assert a.shape == (50, 70) or a.shape == (40, 60)
        assert torch.equal(a, b)
    for method in ("post_process_instance_segmentation", "post_process_panoptic_segmentation"):
        kwargs = dict(threshold=0.0, target_sizes=targets)
        _same_panoptic(getattr(processor, method)(expected, **kwargs), getattr(processor, method)(actual, **kwargs))


def test_fixed_shapes_and_cli_errors(tmp_path, capsys):
    torch.manual_seed(0)
    model = _maskformer("fpn", tiny_swin()).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    output = tmp_path / "onnx" / "fixed.onnx"
    main([str(folder), str(output), "--batch-size", "1", "--height", "64", "--width", "64"])
    assert (output.parent / "config.json").is_file() and (output.parent / "preprocessor_config.json").is_file()
    session = create_session(output, intra_op_threads=1)
    assert [i.shape for i in session.get_inputs()] == [[1, 3, 64, 64], [1, 64, 64]]
    loaded = load_series_model(folder)
    inputs = _inputs(loaded, 1, 64, 64)
    np.testing.assert_allclose(run_session(session, inputs)["masks_queries_logits"],
                               _torch_outputs(loaded, inputs)["masks_queries_logits"].numpy(), atol=TOLERANCE)

    with pytest.raises(ValueError, match="has no config.json"):
        load_series_model(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' model"):
        load_series_model(other)
    with pytest.raises(ValueError, match="multiples of 32"):
        export_to_onnx(model, tmp_path / "x.onnx", ExportShapes(height=50, width=64))
    with pytest.raises(ValueError, match="both height and width"):
        export_to_onnx(model, tmp_path / "x.onnx", ExportShapes(height=64))
    with pytest.raises(SystemExit):
        main([str(other), str(tmp_path / "x.onnx")])
    assert "'bert' model" in capsys.readouterr().err


class _DeformableAttention(torch.nn.Module):
    """The op on two levels whose sizes come from the feature maps (symbolic when exported)."""

    def forward(self, fine, coarse, locations, weights):
        shapes = [tuple(fine.shape[-2:]), tuple(coarse.shape[-2:])]
        value = torch.cat([fine.flatten(2), coarse.flatten(2)], 2).transpose(1, 2).reshape(fine.shape[0], -1, 2, 8)
        return multi_scale_deformable_attention(value, shapes, locations, weights)


def _op_inputs(batch, height, width, queries=10):
    generator = torch.Generator().manual_seed(height * width)
    return (torch.randn(batch, 16, height, width, generator=generator),
            torch.randn(batch, 16, height // 2, width // 2, generator=generator),
            torch.rand(batch, queries, 2, 2, 3, 2, generator=generator) * 1.2 - 0.1,  # some points outside
            torch.rand(batch, queries, 2, 2, 3, generator=generator))


def test_deformable_attention_exports_as_gather_with_dynamic_sizes(tmp_path):
    """The op alone (seconds): no Loop / custom op in the graph, one graph for every size, equal to PyTorch."""
    import onnx

    dim = torch.export.Dim
    height, width, batch, queries = dim("h", min=1, max=512), dim("w", min=1, max=512), dim("b"), dim("q")
    shapes = ({0: batch, 2: 2 * height, 3: 2 * width}, {0: batch, 2: height, 3: width}, {0: batch, 1: queries},
              {0: batch, 1: queries})
    program = torch.export.export(_DeformableAttention(), _op_inputs(2, 8, 12), dynamic_shapes=shapes, strict=False)
    names = ["fine", "coarse", "locations", "weights"]
    path = tmp_path / "op.onnx"
    program_to_onnx(program, names, ["output"]).save(path, external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    op_types = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Loop" not in op_types and {"Gather", "ReduceSum"} <= op_types
    session = create_session(path, intra_op_threads=1)
    for case in [(2, 8, 12), (1, 6, 4, 7)]:
        inputs = _op_inputs(*case)
        actual = session.run(None, dict(zip(names, (x.numpy() for x in inputs))))[0]
        np.testing.assert_allclose(actual, _DeformableAttention()(*inputs).numpy(), atol=1e-5, rtol=0)
