"""Writing a generated dataset folder atomically (shared by the synthetic image and video generators)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER_FILE = "generator.json"


def write_generated_folder(output_dir: Path, settings: dict[str, Any], write: Callable[[Path], None],
                           overwrite: bool = False) -> Path:
    """Build a dataset in a temporary sibling folder with `write(staging)` and rename it to `output_dir`.

    Concurrent callers (several training processes) and interrupted runs never leave a half-written folder. A
    folder already written with the same `settings` (recorded in `generator.json`) is reused unless `overwrite`.

    Raises:
        FileExistsError: `output_dir` exists but was written by something else (or other settings).
    """
    marker = output_dir / MARKER_FILE
    if output_dir.exists() and not overwrite:
        if marker.exists() and json.loads(marker.read_text()) == settings:
            return output_dir
        raise FileExistsError(
            f"{output_dir} exists but was not written by this generator with these settings; "
            "pass overwrite=True or choose another folder."
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        write(staging)
        (staging / MARKER_FILE).write_text(json.dumps(settings, indent=1))
        if overwrite and output_dir.exists():
            shutil.rmtree(output_dir)
        try:
            staging.rename(output_dir)
        except OSError:  # another process finished first: fine if it wrote the same thing
            if not (marker.exists() and json.loads(marker.read_text()) == settings):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output_dir
