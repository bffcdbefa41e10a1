"""Batched, sharded inference of a task over dataset rows, used by the training examples' evaluation,
``evaluate.py`` and ``predict.py``.

The rows are cut into batches of ``task.inference_batch_size(args)`` consecutive examples (the same batches
whatever the number of processes, so the padding of each image and hence every result is the same); the batches
are dealt round-robin to the processes. A ``DataLoader`` decodes and pre-processes them in its workers (images of
mixed sizes are padded per batch by the processor). With ``predictions_dir`` each process writes every example's
result files atomically as soon as it has them (a restarted run skips the batches already written); the main
process then reads all of them back in dataset order. Without it (one process) the predictions stay in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from task_common import TASK_MODULES, LabelSet, Prediction, Task, check_model_source, get_task
from tqdm.auto import tqdm


@dataclass
class InferenceResult:
    predictions: list[Prediction] | None  # in dataset order (the main process only when distributed)
    num_computed: int  # examples run through the model by this run (all processes)
    seconds: float
    peak_memory_mb: float  # of this process: the accelerator's peak allocation, or the peak resident set on CPU
    inputs: dict[int, Any] = field(default_factory=dict)  # decoded inputs of the first examples (overlays)

    @property
    def examples_per_second(self) -> float:
        return self.num_computed / self.seconds if self.seconds > 0 else 0.0


class _Batches(torch.utils.data.Dataset):
    """Item ``i`` = batch ``i``: its rows, decoded inputs and model inputs."""

    def __init__(self, task: Task, processor, rows, batches: list[list[int]], args: argparse.Namespace):
        self.task, self.processor, self.rows, self.batches, self.args = task, processor, rows, batches, args

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, position: int) -> dict[str, Any]:
        indices = self.batches[position]
        rows = [self.rows[i] for i in indices]
        inputs = [self.task.load_inputs(row) for row in rows]
        return {"indices": indices, "rows": rows, "inputs": inputs,
                "model_inputs": self.task.preprocess(self.processor, inputs, self.args)}


def _as_is(batch: dict) -> dict:
    """The DataLoader's per-item conversion, disabled: decoded images stay numpy arrays / PIL images."""
    return batch


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@torch.no_grad()
def run_inference(task: Task, model, processor, rows, labels: LabelSet, args: argparse.Namespace, *,
                  accelerator=None, predictions_dir: Path | None = None, split: str = "val", num_workers: int = 0,
                  show_progress: bool = True, keep_inputs: int = 0) -> InferenceResult:
    """Predictions of ``model`` for every row (see the module docstring).

    Args:
        accelerator: shards the batches over its processes (``None``: this process does all of them).
        predictions_dir: write the result files there (required with several processes); skip examples already
            written.
        keep_inputs: keep the decoded inputs of the first ``keep_inputs`` examples (for overlays).
    """
    process_index = accelerator.process_index if accelerator is not None else 0
    num_processes = accelerator.num_processes if accelerator is not None else 1
    is_main = process_index == 0
    if num_processes > 1 and predictions_dir is None:
        raise ValueError("Distributed inference needs a predictions folder to gather the results.")
    keys = [task.example_key(rows[i]) for i in range(len(rows))]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"Two examples would write the same result files ({duplicate!r}); file names (or image / "
                         "video ids) must be unique within a split.")
    size = task.inference_batch_size(args)
    batches = [list(range(start, min(start + size, len(rows)))) for start in range(0, len(rows), size)]

    def done(index: int) -> bool:
        return task.prediction_paths(predictions_dir, split, keys[index])[-1].is_file()

    if predictions_dir is not None:
        batches = [b for b in batches if not all(done(i) for i in b)]
    if accelerator is not None:
        # every process must split the same pending batches: none writes before all have looked
        accelerator.wait_for_everyone()
    num_pending = sum(len(b) for b in batches)
    loader = torch.utils.data.DataLoader(_Batches(task, processor, rows, batches[process_index::num_processes], args),
                                         batch_size=None, num_workers=num_workers, collate_fn=_as_is)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    progress = tqdm(total=len(rows), initial=len(rows) - num_pending, unit=task.example_unit[:-1],
                    disable=not (is_main and show_progress), desc=f"{task.name} {split}", dynamic_ncols=True)
    start = time.perf_counter()
    in_memory: dict[int, Prediction] = {}
    inputs_kept: dict[int, Any] = {}
    for batch in loader:
        with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
            predictions = task.infer(model, processor, batch, args, labels)
        for index, inputs, prediction in zip(batch["indices"], batch["inputs"], predictions):
            if predictions_dir is not None:
                task.write_prediction(prediction, predictions_dir, split)
            else:
                in_memory[index] = prediction
            if index < keep_inputs:
                inputs_kept[index] = inputs
        progress.update(min(len(batch["indices"]) * num_processes, progress.total - progress.n))
    if accelerator is not None:
        accelerator.wait_for_everyone()
    seconds = time.perf_counter() - start
    progress.close()
    if was_training:
        model.train()
    result = InferenceResult(None, num_pending, seconds, _peak_memory_mb(device), inputs_kept)
    if predictions_dir is None:
        result.predictions = [in_memory[i] for i in range(len(rows))]
    elif is_main:
        result.predictions = [task.read_prediction(predictions_dir, split, key) for key in keys]
    return result


def compute_metrics(task: Task, rows, predictions: list[Prediction], labels: LabelSet,
                    args: argparse.Namespace) -> dict:
    """The task's metric (in %) of ``predictions`` against the ground truth of ``rows`` (same order)."""
    metric = task.new_metric(labels, args)
    for index, prediction in enumerate(predictions):
        metric.add(rows[index], prediction)
    return metric.compute()


def evaluate_model(task: Task, model, processor, rows, labels: LabelSet, args: argparse.Namespace,
                   num_overlays: int = 0) -> tuple[dict, list[dict]]:
    """Metrics of ``model`` on ``rows`` (one process, in memory) and up to ``num_overlays`` overlays (the
    training examples' evaluation)."""
    result = run_inference(task, model, processor, rows, labels, args, show_progress=False, keep_inputs=num_overlays,
                           num_workers=getattr(args, "dataloader_num_workers", 0))
    metrics = compute_metrics(task, rows, result.predictions, labels, args)
    overlays = [task.overlay(rows[i], result.inputs[i], result.predictions[i], labels)
                for i in range(min(num_overlays, len(rows)))]
    return metrics, [o for o in overlays if o is not None]


# ================================================================================================================
# Command-line pieces of evaluate.py and predict.py
# ================================================================================================================


def run_command(function, args: argparse.Namespace, logger) -> dict:
    """``function(args)``; bad data, missing files and offline Hub access end with a one-line message."""
    try:
        return function(args)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        logger.error("%s", error)
        raise SystemExit(f"error: {error}") from None


def start_inference(args: argparse.Namespace, logger):
    """``(accelerator, task, model on the accelerator's device, processor)`` for ``evaluate.py`` / ``predict.py``."""
    import logging

    accelerator = make_accelerator(args.cpu, args.mixed_precision)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)
    model, processor = load_model_for_inference(args.model_name_or_path, args.task, getattr(torch, args.dtype))
    return accelerator, get_task(args.task), model.to(accelerator.device), processor


def make_accelerator(cpu: bool = False, mixed_precision: str | None = None, **kwargs):
    """An ``Accelerator`` for ``python``, ``accelerate launch`` and ``torchrun``: under torchrun on a machine without
    GPUs, Accelerate forms its (gloo) process group only when told to run on CPU."""
    from accelerate import Accelerator

    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ
    return Accelerator(cpu=cpu or (launched_distributed and not torch.cuda.is_available()),
                       mixed_precision=mixed_precision, **kwargs)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, batching and launch options shared by ``evaluate.py`` and ``predict.py``."""
    parser.add_argument("--model_name_or_path", required=True,
                        help="A folder saved by this package or by transformers (facebook/mask2former-*, "
                        "facebook/maskformer-*), a converted original checkpoint, or a Hub id.")
    parser.add_argument("--task", required=True, choices=list(TASK_MODULES))
    parser.add_argument("--output_dir", default="outputs/eval")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=8,
                        help="Images per batch and process (videos: always 1).")
    parser.add_argument("--dataloader_num_workers", type=int, default=2)
    parser.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"],
                        help="Default: the accelerate config's.")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="Weights and activations of the model (bfloat16: the bf16 inference mode; see the "
                        "README's Speed section for when it pays on CPU). Post-processing runs in float32.")
    parser.add_argument("--cpu", action="store_true", help="Run on CPU even when a GPU is available.")


def load_model_for_inference(name_or_path: str, task: str, dtype: torch.dtype = torch.float32):
    """The model (our class for the checkpoint's family, in ``dtype``) and its processor, in eval mode."""
    from transformers import PretrainedConfig

    import hf_maskformer_series as hms

    check_model_source(name_or_path)
    model_type = PretrainedConfig.get_config_dict(name_or_path)[0].get("model_type", "")
    if task == "video":
        model_class, processor_class = (hms.SeriesVideoMask2FormerForVideoInstanceSegmentation,
                                        hms.SeriesVideoMask2FormerVideoProcessor)
    elif "maskformer" in model_type and "mask2former" not in model_type:
        model_class, processor_class = hms.SeriesMaskFormerForInstanceSegmentation, hms.SeriesMaskFormerImageProcessor
    else:
        model_class, processor_class = (hms.SeriesMask2FormerForUniversalSegmentation,
                                        hms.SeriesMask2FormerImageProcessor)
    if task == "video" and model_type != hms.SeriesVideoMask2FormerConfig.model_type:
        raise ValueError(f"{name_or_path} holds a {model_type or 'unknown'} model, not a video Mask2Former "
                         f"({hms.SeriesVideoMask2FormerConfig.model_type}); --task video needs one.")
    model = model_class.from_pretrained(name_or_path, dtype=dtype).eval()
    return model, processor_class.from_pretrained(name_or_path)


def check_label_sets(model, labels: LabelSet, source: str) -> None:
    """The model's label ``i`` is category ``categories[i]`` (sorted by id): the sizes must agree."""
    if model.config.num_labels != len(labels.categories):
        raise ValueError(f"The model predicts {model.config.num_labels} labels but {source} has "
                         f"{len(labels.categories)} categories; evaluate on the label set the model was trained on "
                         "(or give --categories_file).")


def inference_summary(result: InferenceResult, accelerator, unit: str) -> dict:
    """Throughput (examples / s over all processes) and peak memory (the largest of the processes, MiB)."""
    from accelerate.utils import gather_object

    peak = max(gather_object([result.peak_memory_mb]))
    return {"num_computed": result.num_computed, "inference_seconds": round(result.seconds, 3),
            f"{unit}_per_second": round(result.examples_per_second, 3), "peak_memory_mb": round(peak, 1),
            "num_processes": accelerator.num_processes}
