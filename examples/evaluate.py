"""Evaluate a checkpoint on a dataset split: metrics and result files in the standard formats, on one process or
many (Accelerate).

    python examples/evaluate.py --model_name_or_path outputs/train_panoptic --task panoptic \
        --data_dir data/synthetic_panoptic --output_dir outputs/eval
    torchrun --nproc_per_node 2 examples/evaluate.py ...          # or: accelerate launch [--multi_gpu] ...

Writes ``output_dir/eval_results.json`` (the metric keys of the training examples, plus throughput and peak
memory) and ``output_dir/predictions/`` (panoptic: ``panoptic_<split>.json`` + ``panoptic_<split>/*.png``;
instance: ``instances_<split>_results.json``; semantic: ``semantic_<split>/*.png``; video: ``results.json``).
A killed run restarted with the same arguments skips the examples already written. See examples/README.md.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from inference import (
    add_common_arguments,
    check_label_sets,
    compute_metrics,
    inference_summary,
    run_command,
    run_inference,
    start_inference,
)
from reporting import format_metrics
from task_common import atomic_write_json, get_task

logger = logging.getLogger("hf_maskformer_series.evaluate")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv_list = list(argv) if argv is not None else None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--data_dir", default=None, help="A local folder in the format the task's training example "
                        "reads (COCO panoptic, COCO instances, ADE20K-style, YouTube-VIS).")
    parser.add_argument("--dataset_name", default=None, help="A Hub dataset (image tasks).")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--categories_file", default=None,
                        help="JSON with a COCO 'categories' list; default: the dataset's own.")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max_eval_samples", type=int, default=None)
    # the task's thresholds / top-k / TTA options: parse the task first, then add them
    known, _ = parser.parse_known_args(argv_list)
    get_task(known.task).add_inference_arguments(parser)
    args = parser.parse_args(argv_list)
    if (args.data_dir is None) == (args.dataset_name is None):
        parser.error("Give --data_dir or --dataset_name (one of them).")
    if args.per_device_eval_batch_size < 1:
        parser.error("--per_device_eval_batch_size must be >= 1.")
    # the task's reader takes the label set from the "train" split's file: here, the evaluated split's
    args.train_split = args.validation_split = args.split
    return args


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation described by ``args``; returns the contents of ``eval_results.json`` (main process)."""
    accelerator, task, model, processor = start_inference(args, logger)
    data = task.load_data(args, accelerator, splits=[args.split])
    check_label_sets(model, data.labels, data.description)
    output_dir = Path(args.output_dir)
    predictions_dir = output_dir / "predictions"
    logger.info("Evaluating %s on %d %s of %s (split %s) with %d process(es)", args.model_name_or_path,
                len(data.validation), task.example_unit, data.description, args.split, accelerator.num_processes)
    result = run_inference(task, model, processor, data.validation, data.labels, args, accelerator=accelerator,
                           predictions_dir=predictions_dir, split=args.split,
                           num_workers=args.dataloader_num_workers)
    summary = inference_summary(result, accelerator, task.example_unit)
    report = {}
    if accelerator.is_main_process:
        results_file = task.write_results_file(result.predictions, data.validation, predictions_dir, args.split,
                                               data.labels)
        metrics = compute_metrics(task, data.validation, result.predictions, data.labels, args)
        report = {**metrics, "task": args.task, "split": args.split, f"num_{task.example_unit}": len(data.validation),
                  "model": str(args.model_name_or_path), **summary}
        atomic_write_json(output_dir / "eval_results.json", report)
        logger.info("%s: %s", args.split, format_metrics(metrics))
        logger.info("Wrote %s and the predictions to %s%s", output_dir / "eval_results.json", predictions_dir,
                    f" ({results_file.name})" if results_file else "")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return report


def main(argv: Sequence[str] | None = None) -> dict:
    return run_command(evaluate, parse_args(argv), logger)


if __name__ == "__main__":
    main()
