"""bfloat16 inference: `model.to(torch.bfloat16)` and `pipeline(..., dtype=torch.bfloat16)`.

The model computes in bfloat16 (logits come out in bfloat16) except the deformable attention's sampling
coordinates, its attention-weight softmax and the op itself (float32); post-processing upcasts the logits to
float32 before softmax / sigmoid. Accuracy is measured as the fraction of mask-logit signs that agree with the
float32 model (the full-size figure is in benchmarks/README.md).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import hf_maskformer_series as hms
from hf_maskformer_series.kernel_loading import MultiScaleDeformableAttention
from tests._tiny_configs import tiny_mask2former_kwargs, tiny_resnet, tiny_swin


def _spread(model: torch.nn.Module) -> torch.nn.Module:
    """Trained-like deformable-attention projections (they are zero-initialised, which samples one point only)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "sampling_offsets" in name or "attention_weights" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


def _mask2former(backbone_config=None) -> hms.SeriesMask2FormerForUniversalSegmentation:
    torch.manual_seed(0)
    config = hms.SeriesMask2FormerConfig(**tiny_mask2former_kwargs(backbone_config=backbone_config))
    return _spread(hms.SeriesMask2FormerForUniversalSegmentation(config).eval())


def _maskformer() -> hms.SeriesMaskFormerForInstanceSegmentation:
    torch.manual_seed(0)
    config = hms.SeriesMaskFormerConfig(
        backbone_config=tiny_swin(), fpn_feature_size=32, mask_feature_size=32, num_labels=4,
        decoder_config=dict(d_model=32, decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=64,
                            num_queries=6, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                            dropout=0.0),
    )
    return hms.SeriesMaskFormerForInstanceSegmentation(config).eval()


def _pixels(batch: int = 2, height: int = 64, width: int = 96) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def _sign_agreement(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float(((reference > 0) == (other.float() > 0)).float().mean())


@pytest.mark.parametrize(
    ("build", "minimum", "class_tolerance"),
    [
        (_mask2former, 0.99, 0.1),
        # tiny ResNet: smaller mask logits (mean |logit| 0.19) put more pixels near the sign change, and the
        # masked attention blocks on that sign, so the class logits move more too
        (lambda: _mask2former(tiny_resnet()), 0.985, 0.25),
        (_maskformer, 0.99, 0.1),
    ],
    ids=["mask2former-swin", "mask2former-resnet", "maskformer-swin"],
)
def test_bf16_model_runs_and_agrees_with_fp32(build, minimum, class_tolerance):
    model = build()
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    pixel_values = _pixels()
    with torch.no_grad():
        reference = model(pixel_values)
        output = model_bf16(pixel_values.to(torch.bfloat16))
    assert output.class_queries_logits.dtype == torch.bfloat16
    assert output.masks_queries_logits.dtype == torch.bfloat16
    assert output.masks_queries_logits.shape == reference.masks_queries_logits.shape
    assert output.class_queries_logits.shape == reference.class_queries_logits.shape
    assert torch.isfinite(output.masks_queries_logits.float()).all()
    assert _sign_agreement(reference.masks_queries_logits, output.masks_queries_logits) >= minimum
    # class logits: within a fraction of their range (bf16 keeps ~3 significant digits, through ~20 layers)
    error = (output.class_queries_logits.float() - reference.class_queries_logits).abs().max()
    assert error <= class_tolerance * reference.class_queries_logits.abs().max()


def test_bf16_deformable_attention_samples_in_float32():
    model = _mask2former().to(torch.bfloat16)
    seen = []

    def record(module, args):
        value, _, _, _, locations, weights, _ = args
        seen.append((value.dtype, locations.dtype, weights.dtype))

    for module in model.modules():
        if isinstance(module, MultiScaleDeformableAttention):
            module.register_forward_pre_hook(record)
    with torch.no_grad():
        model(_pixels(batch=1).to(torch.bfloat16))
    assert seen and set(seen) == {(torch.bfloat16, torch.float32, torch.float32)}


@pytest.mark.parametrize("kind", ["semantic", "panoptic", "instance"])
def test_post_processing_of_bf16_outputs_is_float32_post_processing(kind):
    """The post-processing upcasts: bf16 logits give the segments of the same values in float32 (scores to 1e-4)."""
    model = _mask2former().to(torch.bfloat16)
    processor = hms.SeriesMask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    with torch.no_grad():
        outputs = model(_pixels(batch=1).to(torch.bfloat16))
    upcast = copy.copy(outputs)
    upcast.class_queries_logits = outputs.class_queries_logits.float()
    upcast.masks_queries_logits = outputs.masks_queries_logits.float()
    method = getattr(processor, f"post_process_{kind}_segmentation")
    kwargs = {} if kind == "semantic" else {"threshold": 0.0}
    a = method(outputs, target_sizes=[(70, 90)], **kwargs)[0]
    b = method(upcast, target_sizes=[(70, 90)], **kwargs)[0]
    if kind == "semantic":
        assert torch.equal(a, b)
    else:
        assert torch.equal(a["segmentation"], b["segmentation"])
        assert [s["label_id"] for s in a["segments_info"]] == [s["label_id"] for s in b["segments_info"]]
        scores_a, scores_b = ([s["score"] for s in r["segments_info"]] for r in (a, b))
        assert np.allclose(scores_a, scores_b, rtol=1e-4, atol=0)


def test_pipeline_dtype_bfloat16(tmp_path):
    model = _mask2former()
    processor = hms.SeriesMask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    segmenter = pipeline("image-segmentation", model=str(tmp_path), dtype=torch.bfloat16)
    assert segmenter.model.dtype == torch.bfloat16
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    results = segmenter(image, subtask="panoptic", threshold=0.0)
    assert results and all(result["mask"].size == image.size for result in results)

    # the same as the processor's post-processing of the bf16 model's outputs
    inputs = processor(images=image, return_tensors="pt").to(torch.bfloat16)
    with torch.no_grad():
        outputs = segmenter.model(**inputs)
    expected = processor.post_process_panoptic_segmentation(outputs, threshold=0.0, target_sizes=[(70, 90)])[0]
    assert sorted(r["label"] for r in results) == sorted(
        model.config.id2label[s["label_id"]] for s in expected["segments_info"]
    )
