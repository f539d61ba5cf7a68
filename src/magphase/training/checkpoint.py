"""Checkpoint files: atomic writes, RNG state as tensors, ``weights_only`` loading, EMA export.

Files in a run folder (``out_dir``) written by rank 0:

- ``checkpoint.pt``: the latest resumable state (layout in ``docs/training-engine.md``), with
  ``content_sha256`` (:func:`magphase.utils.integrity.tree_sha256` of the rest) checked on load.
- ``ema.safetensors`` + ``ema.json``: EMA weights for inference and the model config / step (the
  safetensors format itself lives in :mod:`magphase.models.weights`).
- ``snapshots/ema-step00001000.safetensors``: EMA weights kept every ``keep_every`` steps.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magphase.errors import DataError
from magphase.models.weights import (
    EMA_FORMAT,
    EMA_INFO_NAME,
    EMA_WEIGHTS_NAME,
    save_weights,
    weights_metadata,
)
from magphase.utils.atomic import atomic_path, atomic_write_text
from magphase.utils.integrity import tree_sha256

CHECKPOINT_FORMAT = "magphase.train.checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
SNAPSHOT_DIR = "snapshots"
_SNAPSHOT_RE = re.compile(r"^ema-step(\d+)\.safetensors$")
CONTENT_KEY = "content_sha256"
_REQUIRED_KEYS = ("format", "step", "model", "optimizer", "scheduler", "ema", "scaler", "rng", "settings")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace`` (never a torn file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_checkpoint_file(payload: Mapping[str, Any], path: str | Path) -> Path:
    """Write a training checkpoint atomically with ``content_sha256`` of its content added."""
    body = {k: v for k, v in payload.items() if k != CONTENT_KEY}
    return atomic_torch_save({**body, CONTENT_KEY: tree_sha256(body)}, path)


# ---------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of this process as tensors and plain types (``weights_only``-safe).

    Returns a dict with ``python`` (int64 tensor of the Mersenne-Twister words + position),
    ``python_gauss`` (float or None), ``numpy`` (int64 tensor of the legacy MT19937 key), ``numpy_pos``,
    ``numpy_has_gauss``, ``numpy_gauss``, ``torch`` (uint8 CPU state) and ``cuda`` (list of uint8 states,
    empty without CUDA).
    """
    py_version, py_words, py_gauss = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # noqa: NPY002 (the global RNG is what user code draws from)
    return {
        "python_version": int(py_version),
        "python": torch.tensor(py_words, dtype=torch.int64),
        "python_gauss": py_gauss,
        "numpy_name": str(np_name),
        "numpy": torch.from_numpy(np.asarray(np_key, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    # every tensor back to the CPU: torch.set_rng_state and numpy need host memory
    words = tuple(int(v) for v in state["python"].cpu().tolist())
    random.setstate((int(state["python_version"]), words, state["python_gauss"]))
    np.random.set_state(  # noqa: NPY002
        (
            state["numpy_name"],
            state["numpy"].cpu().numpy().astype(np.uint32),
            int(state["numpy_pos"]),
            int(state["numpy_has_gauss"]),
            float(state["numpy_gauss"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = [s.cpu() for s in state.get("cuda") or []]
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:  # a different node layout: restore the current device only
            torch.cuda.set_rng_state(cuda_states[0])


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's legacy global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


# -------------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint with ``torch.load(..., weights_only=True)`` and check its layout.

    Args:
        path: a ``checkpoint.pt`` or the run folder holding one.
        map_location: where tensors land (default CPU).
    Returns:
        The checkpoint dict (keys documented in ``docs/training-engine.md``).
    Raises:
        DataError: missing file, not a checkpoint, an unknown format, or content that differs from
            the checksum recorded when it was written (checkpoints without one load unchecked).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise DataError(path, None, "checkpoint file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types (pickle, zip, RuntimeError) for bad files
        raise DataError(path, None, f"not a loadable checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise DataError(path, None, f"checkpoint holds a {type(state).__name__}, expected a dict")
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise DataError(path, missing[0], f"checkpoint lacks keys {missing}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise DataError(
            path, "format", f"unknown checkpoint format {state['format']!r}, expected {CHECKPOINT_FORMAT}"
        )
    recorded = state.pop(CONTENT_KEY, None)
    if recorded is not None and tree_sha256(state) != recorded:
        raise DataError(
            path,
            CONTENT_KEY,
            "content differs from the checksum recorded when it was written (damaged); "
            "delete it to restart the stage from its last good state",
        )
    return state


# ---------------------------------------------------------------------------------------- EMA export


def export_ema(
    ema_state: Mapping[str, torch.Tensor],
    out_dir: str | Path,
    *,
    step: int,
    model_config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``ema.safetensors`` and ``ema.json`` (format, step, model config, extras) into ``out_dir``.

    The safetensors metadata repeats ``step`` and the model config (as JSON) so a copied weights file
    stays self-describing.
    """
    out_dir = Path(out_dir)
    info = {"format": EMA_FORMAT, "step": int(step), "model_config": dict(model_config), **dict(extra or {})}
    weights = save_weights(ema_state, out_dir / EMA_WEIGHTS_NAME, weights_metadata(step, model_config))
    info_path = atomic_write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", out_dir / EMA_INFO_NAME)
    return weights, info_path


def snapshot_path(out_dir: str | Path, step: int) -> Path:
    """Where the EMA snapshot of ``step`` lives."""
    return Path(out_dir) / SNAPSHOT_DIR / f"ema-step{step:08d}.safetensors"


def save_snapshot(
    ema_state: Mapping[str, torch.Tensor], out_dir: str | Path, *, step: int, model_config: Mapping[str, Any]
) -> Path:
    """Keep the EMA weights of ``step`` for later model selection."""
    return save_weights(ema_state, snapshot_path(out_dir, step), weights_metadata(step, model_config))


def list_snapshots(out_dir: str | Path) -> dict[int, Path]:
    """``{step: path}`` of the kept EMA snapshots of a run folder, ascending by step."""
    folder = Path(out_dir) / SNAPSHOT_DIR
    found: dict[int, Path] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SNAPSHOT_RE.match(p.name)
            if m:
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "atomic_torch_save",
    "atomic_write_text",
    "capture_rng_state",
    "export_ema",
    "list_snapshots",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint_file",
    "save_snapshot",
    "seed_everything",
    "snapshot_path",
]
