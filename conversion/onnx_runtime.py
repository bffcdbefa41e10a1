"""Running an exported graph (see `conversion/export_onnx.py`) with ONNX Runtime, and int8 quantization.

    session = create_session("model.onnx")
    inputs = processor(images=image, return_tensors="pt")
    outputs = run_session(session, inputs)  # {"class_queries_logits": np.ndarray, ...}
    panoptic = processor.post_process_panoptic_segmentation(outputs, target_sizes=[image.size[::-1]])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def create_session(
    path: str | os.PathLike,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    intra_op_threads: int | None = None,
):
    """An `onnxruntime.InferenceSession` with all graph optimisations.

    Args:
        path: the `.onnx` file.
        providers: execution providers, in order of preference.
        intra_op_threads: threads per operator (`None`: ONNX Runtime's default, one per core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def run_session(session: Any, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run the graph on a processor's output (torch tensors or numpy arrays; extra keys are ignored).

    Args:
        session: from `create_session`.
        inputs: at least the graph's inputs (`pixel_values` or `pixel_values_videos`, and `pixel_mask`).

    Returns:
        The outputs by name: `class_queries_logits`, `masks_queries_logits`, `image_sizes`, `padded_image_size`.
    """
    feed = {}
    for graph_input in session.get_inputs():
        if graph_input.name not in inputs:
            raise ValueError(f"the graph needs `{graph_input.name}`; got {sorted(inputs)}")
        value = inputs[graph_input.name]
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        expected = np.float16 if graph_input.type == "tensor(float16)" else (
            np.int64 if graph_input.type == "tensor(int64)" else np.float32
        )
        feed[graph_input.name] = np.ascontiguousarray(array, dtype=expected)
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def quantize_dynamic_int8(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Dynamic int8 quantization (`onnxruntime.quantization.quantize_dynamic`): int8 weights of the MatMul /
    Gemm layers, activations quantized per call. Convolutions stay float32 (ONNX Runtime's dynamic `ConvInteger`
    has no fast CPU kernel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    destination = Path(destination)
    quantize_dynamic(
        str(source), str(destination), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
    )
    return destination
