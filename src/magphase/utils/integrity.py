"""Content checksums: what a store or weights file records when written and checks when opened.

A bit flipped by a failing disk, a file cut short by a full one, or a copy that went wrong then shows
up as one clear error naming the file, instead of silently training or evaluating on damaged data.
(``torch.load`` and HDF5 do not check the bytes of tensor or dataset data themselves.)

- :func:`file_sha256`: the SHA-256 of a file's bytes (stores' ``arrays.h5`` and ``manifest.csv``).
- :func:`tensors_sha256`: the SHA-256 of a state dict's content, independent of how a file lays it out
  (name, dtype, shape and bytes of each tensor in name order), for safetensors weights.
- :func:`tree_sha256`: the same for a nested checkpoint dict (tensors, numbers, strings, lists, dicts).
- :func:`file_matches`: :func:`file_sha256` equals the recorded digest, remembered per path, size,
  mtime and inode, so a store opened many times by one process is hashed once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_VERIFIED: set[tuple[str, int, int, int, str]] = set()


def file_sha256(path: str | os.PathLike[str], chunk: int = _CHUNK) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _update_tensor(digest: Any, name: str, tensor: Any) -> None:
    import torch

    t = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}\x1f{t.dtype}\x1f{tuple(t.shape)}\x1e".encode())
    if t.numel():
        # view as bytes: works for every dtype numpy lacks (bfloat16, float8)
        digest.update(t.reshape(-1).view(dtype=torch.uint8).numpy().tobytes())


def tensors_sha256(state: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a flat ``{name: tensor}`` mapping (names sorted; dtype, shape and bytes hashed)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        _update_tensor(digest, name, state[name])
    return digest.hexdigest()


def tree_sha256(obj: Any) -> str:
    """Hex SHA-256 of a nested structure of dicts, lists, tuples, tensors and plain values."""
    import torch

    digest = hashlib.sha256()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, torch.Tensor):
            _update_tensor(digest, where, node)
        elif isinstance(node, Mapping):
            digest.update(f"{where}\x1fdict{len(node)}\x1e".encode())
            for key in sorted(node, key=repr):
                walk(node[key], f"{where}/{key!r}")
        elif isinstance(node, (list, tuple)):
            digest.update(f"{where}\x1f{type(node).__name__}{len(node)}\x1e".encode())
            for i, item in enumerate(node):
                walk(item, f"{where}/{i}")
        else:
            digest.update(f"{where}\x1f{type(node).__name__}\x1f{node!r}\x1e".encode())

    walk(obj, "")
    return digest.hexdigest()


def file_matches(path: str | os.PathLike[str], expected: str) -> bool:
    """True when the file's SHA-256 is ``expected``; a file unchanged since it last matched is not re-read."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, expected)
    if key in _VERIFIED:
        return True
    if file_sha256(path) != expected:
        return False
    _VERIFIED.add(key)
    return True


__all__ = ["file_matches", "file_sha256", "tensors_sha256", "tree_sha256"]
