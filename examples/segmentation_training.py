"""The training loop of the Accelerate examples (``train_panoptic.py``, ``train_instance.py``,
``train_semantic.py``, ``train_video.py``): argument parsing, optimizer and schedule, the epoch sampler, the loop
with evaluation, checkpoints and the final save.

Each script calls ``main(task)``; tests call ``train(parse_args(task, argv))`` directly. Everything specific to a
task (its options, data, model, training examples, inference and metric) comes from its ``Task``
(``task_common.get_task``: ``task_panoptic.py``, ``task_instance.py``, ``task_semantic.py``, ``task_video.py``);
checkpoints are in ``checkpointing.py``, the overlay, model card, Hub push and log in ``reporting.py``, the
evaluation is ``inference.evaluate_model`` (the engine of ``evaluate.py`` / ``predict.py``).

The random numbers of the augmentation are drawn from ``(seed, epoch, example index)`` alone, and the example
order of an epoch from ``(seed, epoch)``, so a resumed or a multi-process run sees exactly the data of an
uninterrupted single-process run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from checkpointing import TRAINING_STATE_FILE, resolve_checkpoint, save_checkpoint_atomically
from inference import evaluate_model
from reporting import (
    LOG_FILE,
    OVERLAY_FILE,
    TrainerLog,
    check_hub_access,
    format_metrics,
    model_card,
    push_to_hub,
    scalar_metrics,
    write_overlay_png,
)
from task_common import (
    CATEGORIES_FILE,
    DEFAULT_SYNTHETIC_DIR,
    TASK_MODULES,
    atomic_write_json,
    check_model_source,
    get_task,
)
from tqdm.auto import tqdm

from hf_maskformer_series.data.synthetic import SyntheticPanopticConfig
from hf_maskformer_series.presets import PRESET_NAMES

logger = logging.getLogger("hf_maskformer_series.training")


# ================================================================================================================
# Arguments
# ================================================================================================================


def build_parser(task: str) -> argparse.ArgumentParser:
    """The command line of ``train_<task>.py``; every option has a default, so no argument is needed."""
    spec = get_task(task)
    parser = argparse.ArgumentParser(
        description=f"Train Mask2Former for {task} segmentation with Accelerate (metric: {spec.metric_description}). "
        "Without arguments: generate the synthetic dataset, train the tiny preset on CPU, evaluate, save.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", default=None,
                      help="Local dataset folder: COCO panoptic (panoptic), COCO instances (instance) or ADE20K-style "
                      f"(semantic). Default: the synthetic dataset, generated into {DEFAULT_SYNTHETIC_DIR} if absent.")
    data.add_argument("--dataset_name", default=None,
                      help="A Hub dataset (datasets.load_dataset) with the columns of the local reader; needs network "
                      "or the local cache (HF_HUB_OFFLINE=1).")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--categories_file", default=None,
                      help="JSON with a COCO 'categories' list (or the list itself); needed for Hub panoptic/instance "
                      "datasets, optional for semantic ones ([{id, name}] for label values 1..K).")
    data.add_argument("--train_split", default="train")
    data.add_argument("--validation_split", default="val")
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--max_eval_samples", type=int, default=None)
    data.add_argument("--synthetic_num_train", type=int, default=SyntheticPanopticConfig.num_train,
                      help="Size of the generated train split (only when the synthetic data is used).")
    data.add_argument("--synthetic_num_val", type=int, default=SyntheticPanopticConfig.num_val)

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", default=None,
                       help="A save_pretrained folder (ours, a transformers Mask2Former, or a converted original "
                       "checkpoint) or a Hub id; heads that do not fit the label set are re-initialised.")
    model.add_argument("--preset", default="tiny", choices=PRESET_NAMES,
                       help="Model preset used when --model_name_or_path is not given.")
    model.add_argument("--num_queries", type=int, default=None, help="Override the preset's number of queries.")
    model.add_argument("--train_num_points", type=int, default=None, help="Override the preset's loss points.")

    recipe = parser.add_argument_group("recipe (the paper's, with the tiny model's deviations as defaults)")
    recipe.add_argument("--max_train_steps", type=int, default=600,
                        help="Optimizer steps (600 x 8 images: ~19 epochs of the synthetic train split).")
    recipe.add_argument("--per_device_train_batch_size", type=int, default=8)
    recipe.add_argument("--per_device_eval_batch_size", type=int, default=8)
    recipe.add_argument("--gradient_accumulation_steps", type=int, default=1)
    recipe.add_argument("--learning_rate", type=float, default=4e-4,
                        help="AdamW learning rate (paper: 1e-4; the tiny model trained from scratch learns faster "
                        "with 4e-4).")
    recipe.add_argument("--weight_decay", type=float, default=0.05)
    recipe.add_argument("--backbone_lr_multiplier", type=float, default=0.1,
                        help="Backbone learning rate = learning_rate x this (paper: 0.1).")
    recipe.add_argument("--adam_beta1", type=float, default=0.9)
    recipe.add_argument("--adam_beta2", type=float, default=0.999)
    recipe.add_argument("--adam_epsilon", type=float, default=1e-8)
    recipe.add_argument("--warmup_steps", type=int, default=50, help="Linear warm-up steps before the poly decay.")
    recipe.add_argument("--poly_power", type=float, default=0.9)
    recipe.add_argument("--max_grad_norm", type=float, default=0.01,
                        help="Gradient clipping on the full-model norm (the original's CLIP_TYPE full_model, 0.01); "
                        "0 disables.")
    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default=spec.default_output_dir)
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--cpu", action="store_true", help="Train on CPU even when a GPU is available.")
    run.add_argument("--no_find_unused_parameters", action="store_true",
                     help="DDP: do not search for parameters without gradient (faster when every parameter is used).")
    run.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"],
                     help="Default: the accelerate config's.")
    run.add_argument("--eval_steps", type=int, default=0, help="Evaluate every N steps (and always at the end).")
    run.add_argument("--checkpointing_steps", type=int, default=200,
                     help="Write a checkpoint (accelerator.save_state, atomically) every N steps; 0 disables.")
    run.add_argument("--checkpoints_total_limit", type=int, default=2, help="Keep the newest N checkpoints.")
    run.add_argument("--resume_from_checkpoint", default=None,
                     help="A checkpoint folder, or 'latest' for the newest complete one in output_dir.")
    run.add_argument("--logging_steps", type=int, default=10, help="Write the loss log every N steps.")
    run.add_argument("--dataloader_num_workers", type=int, default=0)
    run.add_argument("--num_overlay_images", type=int, default=4, help="Val images drawn in the overlay PNG.")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None, help="Default: the output folder's name.")
    run.add_argument("--hub_token", default=None)
    run.add_argument("--hub_private_repo", action="store_true")
    groups = {"data": data, "model": model, "recipe": recipe, "run": run}
    spec.add_arguments(parser, groups)
    parser.set_defaults(task=task)
    return parser


def parse_args(task: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line of ``train_<task>.py`` (``argv=None`` reads ``sys.argv``)."""
    if task not in TASK_MODULES:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASK_MODULES)}.")
    parser = build_parser(task)
    args = parser.parse_args(argv)
    if args.data_dir is not None and args.dataset_name is not None:
        parser.error("Give --data_dir or --dataset_name, not both.")
    get_task(task).check_arguments(parser, args)
    for name in ("max_train_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1.")
    return args


# ================================================================================================================
# Optimizer, schedule, sampler
# ================================================================================================================


_NO_DECAY_NAMES = ("queries_embedder", "queries_features", "level_embed", "relative_position_bias_table",
                   "position_embeddings")


def parameter_groups(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                     backbone_lr_multiplier: float) -> list[dict]:
    """AdamW groups of the paper: backbone at ``lr x backbone_lr_multiplier``; no weight decay on normalisation
    layers and embeddings (the original's WEIGHT_DECAY_NORM = WEIGHT_DECAY_EMBED = 0)."""
    no_decay = set()
    for module_name, module in model.named_modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm,
                               torch.nn.Embedding)):
            no_decay.update(f"{module_name}.{name}" if module_name else name
                            for name, _ in module.named_parameters(recurse=False))
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_backbone = ".pixel_level_module.encoder." in f".{name}"
        decays = name not in no_decay and not any(key in name for key in _NO_DECAY_NAMES)
        groups.setdefault((is_backbone, decays), []).append(parameter)
    return [
        {"params": params, "lr": learning_rate * (backbone_lr_multiplier if is_backbone else 1.0),
         "weight_decay": weight_decay if decays else 0.0, "name": f"{'backbone' if is_backbone else 'head'}"
         f"{'' if decays else '_no_decay'}"}
        for (is_backbone, decays), params in sorted(groups.items())
    ]


def poly_schedule_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                              power: float = 0.9) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then ``(1 - step / total_steps) ** power`` (the paper's poly)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, 1.0 - step / max(1, total_steps)) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)``: a permutation of the dataset drawn from ``(seed, epoch)`` (``shuffle=False``: in
    order). The epoch travels with the index so the augmentation can be seeded by ``(seed, epoch, index)``."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples, self.seed, self.shuffle, self.epoch = num_samples, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        return iter([(self.epoch, int(i)) for i in order])



# ================================================================================================================
# Training
# ================================================================================================================


class StopTraining(Exception):
    """Raised by a ``step_callback`` to end a run early (tests use it to simulate a killed run)."""


def train(args: argparse.Namespace, step_callback: Callable[[int, dict], None] | None = None,
          model_hook: Callable[[torch.nn.Module], None] | None = None) -> dict:
    """Run the training described by ``args`` (from ``parse_args``).

    Args:
        step_callback: called on the main process after each optimizer step with ``(global_step, log record)``;
            it may raise ``StopTraining`` (or anything) to end the run.
        model_hook: called on the freshly built model before training (tests use it to make the loss
            deterministic).

    Returns:
        ``{"metrics": final eval metrics, "losses": [loss per step of this run], "output_dir": str,
        "global_step": int}``.
    """
    start_time = time.time()
    # Some backbones hold parameters their feature maps never use (e.g. the final LayerNorm of transformers' Swin
    # under SwinBackbone), which DDP rejects unless it looks for unused parameters.
    ddp_kwargs = DistributedDataParallelKwargs(find_unused_parameters=not args.no_find_unused_parameters)
    # Accelerate forms a gloo process group on CPU only when told to run on CPU: do so under torchrun on a machine
    # without GPUs (`torchrun --nproc_per_node 2 examples/train_panoptic.py`)
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ
    accelerator = Accelerator(cpu=args.cpu or (launched_distributed and not torch.cuda.is_available()),
                              mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation_steps,
                              kwargs_handlers=[ddp_kwargs])
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)
    check_hub_access(args)
    check_model_source(args.model_name_or_path)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    spec = get_task(args.task)
    data = spec.load_data(args, accelerator)
    model, processor = spec.build_model_and_processor(args, data.labels)
    if model_hook is not None:
        model_hook(model)
    num_parameters = sum(p.numel() for p in model.parameters())
    unit = spec.example_unit
    logger.info("Task %s: %d train / %d val %s, %d labels, model %.2f M parameters", args.task, len(data.train),
                len(data.validation), unit, len(data.labels.categories), num_parameters / 1e6)

    train_dataset = spec.training_dataset(data, args, processor)
    sampler = EpochSampler(len(train_dataset), args.seed)
    world_batch = args.per_device_train_batch_size * accelerator.num_processes
    if len(train_dataset) < world_batch:
        raise ValueError(f"The train split has {len(train_dataset)} {unit}, fewer than one global batch "
                         f"({world_batch}); lower --per_device_train_batch_size.")
    dataloader = torch.utils.data.DataLoader(
        train_dataset, batch_size=args.per_device_train_batch_size, sampler=sampler, drop_last=True,
        collate_fn=spec.collate, num_workers=args.dataloader_num_workers,
        # its own generator: starting an epoch must not draw from the global RNG, or a resumed run (which starts
        # its first epoch after load_state) would sample other loss points than an uninterrupted one
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.learning_rate, args.weight_decay, args.backbone_lr_multiplier),
        lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
    )
    # The schedule is stepped once per optimizer step, by hand (accelerate's prepared scheduler would step once
    # per process), and registered so that save_state / load_state include it.
    scheduler = poly_schedule_with_warmup(optimizer, args.warmup_steps, args.max_train_steps, args.poly_power)
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    accelerator.register_for_checkpointing(scheduler)

    batches_per_epoch = len(dataloader)
    global_step, epoch, batches_to_skip = 0, 0, 0
    log = TrainerLog(output_dir / LOG_FILE)
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir) \
        if args.resume_from_checkpoint else None
    if args.resume_from_checkpoint == "latest" and checkpoint is None:
        logger.info("--resume_from_checkpoint latest: no checkpoint in %s yet, starting from step 0",
                    args.output_dir)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / TRAINING_STATE_FILE).read_text())
        global_step, epoch = int(state["global_step"]), int(state["epoch"])
        batches_to_skip = int(state["batches_done_in_epoch"])
        logger.info("Resumed from %s at step %d (epoch %d, %d batches into it)", checkpoint, global_step, epoch,
                    batches_to_skip)
        if accelerator.is_main_process:
            log.truncate(global_step)  # the steps after the checkpoint are logged again by this run

    progress = tqdm(total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process,
                    desc=f"train {args.task}", dynamic_ncols=True)
    losses: list[float] = []
    accumulated, micro_batches = 0.0, 0
    metrics: dict = {}
    model.train()
    while global_step < args.max_train_steps:
        # accelerate's loaders call set_epoch(<their own iteration count>) on the sampler when an epoch starts;
        # setting it here keeps the epoch right after a resume (and on the skip-ahead loader)
        epoch_loader = dataloader
        if batches_to_skip:
            epoch_loader = accelerator.skip_first_batches(dataloader, batches_to_skip)
        for loader in {id(dataloader): dataloader, id(epoch_loader): epoch_loader}.values():
            loader.set_epoch(epoch) if hasattr(loader, "set_epoch") else sampler.set_epoch(epoch)
        sampler.set_epoch(epoch)
        batches_done = batches_to_skip
        batches_to_skip = 0
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = outputs.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            batches_done += 1
            accumulated += accelerator.reduce(loss.detach().float(), reduction="mean").item()
            micro_batches += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            global_step += 1
            step_loss = accumulated / micro_batches
            accumulated, micro_batches = 0.0, 0
            losses.append(step_loss)
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"The loss became {step_loss} at step {global_step}; lower the learning "
                                         "rate or disable fp16.")
            lr = max(scheduler.get_last_lr())  # the head's (the backbone runs at lr x backbone_lr_multiplier)
            record = {"step": global_step, "epoch": epoch, "loss": step_loss, "lr": lr}
            progress.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}", refresh=False)
            progress.update(1)
            if accelerator.is_main_process and (global_step % args.logging_steps == 0 or global_step == 1):
                log.append(record)
            epoch_done = batches_done >= batches_per_epoch
            if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
                state = {"global_step": global_step, "epoch": epoch + 1 if epoch_done else epoch,
                         "batches_done_in_epoch": 0 if epoch_done else batches_done, "seed": args.seed,
                         "task": args.task}
                save_checkpoint_atomically(accelerator, output_dir, global_step, state,
                                           args.checkpoints_total_limit)
            if args.eval_steps and global_step % args.eval_steps == 0 and global_step < args.max_train_steps:
                if accelerator.is_main_process:
                    metrics, _ = evaluate_model(spec, accelerator.unwrap_model(model), processor, data.validation,
                                                data.labels, args)
                    progress.write(f"step {global_step}: " + format_metrics(metrics))
                    log.append({"step": global_step, "eval": scalar_metrics(metrics)})
                accelerator.wait_for_everyone()
            if step_callback is not None and accelerator.is_main_process:
                step_callback(global_step, record)
            if global_step >= args.max_train_steps:
                break
        else:
            epoch += 1
            continue
        if batches_done >= batches_per_epoch:
            epoch += 1
    progress.close()

    accelerator.wait_for_everyone()
    result = {"losses": losses, "output_dir": str(output_dir), "global_step": global_step}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        metrics, overlays = evaluate_model(spec, unwrapped, processor, data.validation, data.labels, args,
                                           num_overlays=args.num_overlay_images)
        logger.info("Final evaluation: %s", format_metrics(metrics))
        unwrapped.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        overlay_path = write_overlay_png(overlays, data.labels, output_dir / OVERLAY_FILE)
        wall_time = time.time() - start_time
        with open(output_dir / "eval_results.json", "w") as f:
            json.dump({**metrics, "step": global_step, "wall_time_s": wall_time}, f, indent=1)
        atomic_write_json(output_dir / CATEGORIES_FILE, data.labels.categories)
        with open(output_dir / "training_args.json", "w") as f:
            json.dump(vars(args), f, indent=1, default=str)
        (output_dir / "README.md").write_text(
            model_card(args, data, metrics, num_parameters, wall_time, accelerator.num_processes)
        )
        logger.info("Saved the model, processor, model card%s to %s (%.1f min)",
                    f" and {OVERLAY_FILE}" if overlay_path else "", output_dir, wall_time / 60)
        if args.push_to_hub:
            repo_id = push_to_hub(args, output_dir)
            logger.info("Pushed to https://huggingface.co/%s", repo_id)
        result["metrics"] = metrics
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def main(task: str, argv: Sequence[str] | None = None) -> None:
    """Entry point of ``train_<task>.py``: bad data, missing files and offline Hub access end with a clear message."""
    args = parse_args(task, argv)
    try:
        train(args)
    except (FileNotFoundError, FileExistsError, ValueError, ConnectionError) as error:
        logger.error("%s", error)
        raise SystemExit(f"error: {error}") from None
