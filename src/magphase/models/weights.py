"""Weights files: safetensors state dicts with their model config in the metadata.

``ema.safetensors`` (and the snapshots ``ema-step*.safetensors``) hold EMA weights for inference;
the safetensors metadata carries ``format``, ``step`` and ``model_config`` (JSON) so a copied file
stays self-describing and a model can be rebuilt from it alone. Every file written here also records
``content_sha256`` (:func:`magphase.utils.integrity.tensors_sha256` of its tensors), checked on load:
a damaged or edited weights file is refused with an error naming it. Nothing here unpickles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from magphase.errors import DataError
from magphase.utils.atomic import atomic_path
from magphase.utils.integrity import tensors_sha256

EMA_FORMAT = "magphase.train.ema/1"


EMA_WEIGHTS_NAME = "ema.safetensors"
EMA_INFO_NAME = "ema.json"
#: safetensors metadata key of the tensors' content checksum.
CONTENT_KEY = "content_sha256"


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: tied weights share storage, which safetensors refuses; contiguous: required by the format
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def save_weights(
    state: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a state dict as safetensors atomically (tensors copied to CPU, ties broken)."""
    path = Path(path)
    tensors = _cpu_copy(state)
    meta = {**dict(metadata or {}), CONTENT_KEY: tensors_sha256(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_ema_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read EMA weights (``ema.safetensors``, a snapshot, or the run folder holding ``ema.safetensors``).

    Raises:
        DataError: the file is missing, not safetensors, or its tensors differ from the checksum
            recorded when it was written (files without one, from earlier versions, load unchecked).
    """
    path = Path(path)
    if path.is_dir():
        path = path / EMA_WEIGHTS_NAME
    if not path.is_file():
        raise DataError(path, None, "EMA weights file not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            recorded = (fh.metadata() or {}).get(CONTENT_KEY)
            state = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own SafetensorError plus OSError
        raise DataError(path, None, f"not a safetensors file: {exc}") from exc
    if recorded is not None and tensors_sha256(state) != recorded:
        raise DataError(
            path, CONTENT_KEY, "tensors differ from the checksum recorded when the file was written (damaged)"
        )
    return state


def read_weights_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a weights file: ``step`` (int) and ``model_config`` (dict), plus the format."""
    path = Path(path)
    if path.is_dir():
        path = path / EMA_WEIGHTS_NAME
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
    except Exception as exc:  # see load_ema_weights
        raise DataError(path, None, f"not a safetensors file: {exc}") from exc
    out: dict[str, Any] = dict(meta)
    if "step" in meta:
        out["step"] = int(meta["step"])
    if "model_config" in meta:
        out["model_config"] = json.loads(meta["model_config"])
    return out


def load_ema_into(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load EMA weights from ``path`` into ``model`` (in place) and return it."""
    first = next(iter(model.state_dict().values()), None)
    device = first.device if first is not None else torch.device("cpu")
    try:
        model.load_state_dict(load_ema_weights(path, device=device), strict=strict)
    except RuntimeError as exc:  # missing / unexpected keys, shape mismatches
        first = str(exc).strip().splitlines()
        raise DataError(
            path,
            None,
            f"weights do not fit this {type(model).__name__} (another model or preset?): "
            + " ".join(line.strip() for line in first[:3])[:300],
        ) from exc
    return model


def weights_metadata(step: int, model_config: Mapping[str, Any]) -> dict[str, str]:
    """The safetensors metadata of an EMA weights file: format, step and the model config as JSON."""
    return {
        "format": EMA_FORMAT,
        "step": str(step),
        "model_config": json.dumps(dict(model_config), sort_keys=True),
    }
