"""Atomic file writes: fill a temp file in the same folder, then ``os.replace`` it onto the target.

A reader sees either the old file or the complete new one, never a torn one, and a killed writer leaves
at most a hidden ``.NAME.<hex>.tmp`` file beside the target. The default ``.tmp`` ending matters: folder
scans such as ``glob("*.h5")`` must not pick up a half-written file. The temp name is unique per call
(uuid4), so concurrent writers of one target never share a temp file; the last ``os.replace`` wins.

Permissions: the temp file is created by a plain ``open()`` (or by the library writing to the yielded
path), so the kernel applies the umask and the result has ``0o666 & ~umask``, as a direct write would.
(``tempfile.mkstemp`` would create ``0o600`` files that other users of a shared data folder cannot read.)

Durability: by default the temp file is fsync'ed before the rename, so after a power loss the target is
the old or the new content, not an empty file.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magphase.utils.faults import fault_point

if TYPE_CHECKING:
    import pandas as pd


def temp_path_for(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A fresh, hidden temp name beside ``path``: ``DIR/.NAME.<32 hex>{suffix}``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")


_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp(\..+)?$")


def remove_stale_temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files that killed atomic writers left anywhere under ``root``; returns them.

    Only call it while no other process writes under ``root`` (the runner holds the run lock).
    """
    removed = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if _TEMP_RE.match(name):
                path = Path(dirpath) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp", fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success it replaces ``path``, on failure it is removed.

    The body must create the yielded file (``h5py.File(tmp, "w")``, ``fig.savefig(tmp)``, ...). Parent
    folders are created. ``suffix`` ends the temp name: keep the default ``.tmp`` unless a library picks
    its format from the file name (``".tmp.nii.gz"`` for nibabel), so that folder scans skip leftovers.

    Example::

        with atomic_path(out / "volume.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("kspace", data=kspace)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path, suffix)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        fault_point("write", path.name)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(data: bytes, path: str | os.PathLike[str], *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "xb") as fh:
        fh.write(data)
    return path


def atomic_write_text(
    text: str, path: str | os.PathLike[str], *, encoding: str = "utf-8", fsync: bool = True
) -> Path:
    """Write ``text`` to ``path`` atomically, byte for byte (no newline translation); returns ``path``."""
    return atomic_write_bytes(text.encode(encoding), path, fsync=fsync)


def atomic_write_csv(frame: pd.DataFrame, path: str | os.PathLike[str], **to_csv: Any) -> Path:
    """Write a DataFrame as CSV atomically (``index=False`` unless given); returns ``path``."""
    to_csv.setdefault("index", False)
    return atomic_write_text(frame.to_csv(**to_csv), path)


__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_text",
    "remove_stale_temp_files",
    "temp_path_for",
]
