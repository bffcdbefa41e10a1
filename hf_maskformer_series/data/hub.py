"""Load a dataset from the Hugging Face Hub by name, failing fast and clearly when the Hub cannot be reached."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import datasets

__all__ = ["hub_is_reachable", "load_hub_dataset"]

_TRUE = {"1", "true", "yes", "on"}


def _offline_requested() -> bool:
    return any(os.environ.get(name, "").lower() in _TRUE for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_is_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint (``$HF_ENDPOINT`` or huggingface.co) opens within ``timeout``."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_hub_dataset(name: str, split: str | None = None, *, config_name: str | None = None,
                     probe_timeout: float = 3.0, **kwargs) -> datasets.Dataset | datasets.DatasetDict:
    """``datasets.load_dataset(name, config_name, split=split, **kwargs)`` with a fast, clear offline failure.

    ``name`` may be a local folder (e.g. parquet files written by ``Dataset.to_parquet``), read without the Hub.
    With ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` only the local cache is used. Otherwise the Hub endpoint
    is probed first (``probe_timeout`` seconds), so a machine without network gets a ``ConnectionError`` at once
    instead of after ``datasets``' retries.
    """
    advice = (
        "Use a local folder instead (e.g. --data_dir with a COCO-panoptic layout), omit the dataset name to use the "
        "embedded synthetic data, or, if the dataset is already in the cache, set HF_HUB_OFFLINE=1."
    )
    is_local = Path(name).exists()  # a local folder or script: no Hub access needed
    if not is_local and not _offline_requested() and not hub_is_reachable(probe_timeout):
        raise ConnectionError(f"Cannot reach the Hugging Face Hub to load dataset '{name}' (no network?). {advice}")
    try:
        return datasets.load_dataset(name, config_name, split=split, **kwargs)
    except (ConnectionError, OSError) as error:
        raise ConnectionError(f"Could not load dataset '{name}' from the Hub or the local cache: {error}. {advice}") \
            from error
