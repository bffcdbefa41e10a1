"""Atomic training checkpoints of the examples: ``accelerator.save_state`` into a temporary folder renamed when
complete, the newest ``checkpoints_total_limit`` kept, ``--resume_from_checkpoint`` resolved."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE_FILE = "training_state.json"

logger = logging.getLogger("hf_maskformer_series.training")


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (those holding ``training_state.json``) in ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and (path / TRAINING_STATE_FILE).is_file():
            suffix = path.name[len(CHECKPOINT_PREFIX):]
            if suffix.isdigit():
                found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def save_checkpoint_atomically(accelerator: Accelerator, output_dir: str | os.PathLike, step: int,
                               training_state: dict, total_limit: int | None = None) -> Path:
    """``accelerator.save_state`` into a temporary folder, then rename it to ``output_dir/checkpoint-<step>``.

    A save that fails or is killed midway leaves only the temporary folder (removed on the next save), so every
    ``checkpoint-*`` folder is complete and an existing checkpoint is never lost. Older checkpoints beyond
    ``total_limit`` are deleted only after the new one is in place. Call it on every process.
    """
    root = Path(output_dir)
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    staging = root / f".{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f".{CHECKPOINT_PREFIX}*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(staging / TRAINING_STATE_FILE, "w") as f:
                json.dump(training_state, f, indent=1)
            if final.exists():  # the same step saved again (e.g. after a resume): swap, then drop the old copy
                retired = root / f".{CHECKPOINT_PREFIX}{step}.old.tmp"
                os.replace(final, retired)
                os.replace(staging, final)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, final)
            if total_limit:
                for old in checkpoint_dirs(root)[:-total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(resume_from_checkpoint: str, output_dir: str) -> Path | None:
    """The checkpoint folder to resume from. ``"latest"``: the newest complete checkpoint of ``output_dir``, or
    ``None`` when there is none yet (the run starts from step 0, so one command both starts and resumes a
    pre-emptible job); an explicit folder must be a complete checkpoint (``FileNotFoundError`` otherwise)."""
    if resume_from_checkpoint == "latest":
        found = checkpoint_dirs(output_dir)
        return found[-1] if found else None
    path = Path(resume_from_checkpoint)
    if not (path / TRAINING_STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {TRAINING_STATE_FILE}).")
    return path
