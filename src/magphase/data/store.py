"""Patch and latent stores: chunked random-access HDF5 arrays plus a manifest table.

A store is a folder::

    STORE/arrays.h5      one or more float32 datasets with N rows (e.g. ``patches`` N x 2 x 96 x 96,
                         or ``mu`` and ``logvar`` N x 2 x 48 x 48), chunked one row per chunk
    STORE/manifest.csv   one row per item: patch_id, volume, sequence, label, split, slice, row,
                         col, box_overlap (+ optional extra columns, e.g. ``synthetic``)
    STORE/meta.json      kind, array names and shapes, count, ``sha256`` of arrays.h5 and
                         manifest.csv, free-form provenance

Writes are atomic: a writer fills ``STORE.tmp-<host>-<pid>/`` and renames it to ``STORE`` on
:meth:`StoreWriter.close`; a crashed writer leaves only the temporary folder, never a half store, and
the next writer of that store on the same host removes it.
Opening a store checks that meta.json, manifest.csv and arrays.h5 agree (row counts, array names and
shapes) and that both files still have the SHA-256 recorded when the store was written (once per
process and file version): a damaged store is refused with a :class:`~magphase.errors.DataError` naming
the file, never read. Stores written before checksums existed open with a debug message.
Readers open the HDF5 file lazily and once per process, so many DataLoader workers can share a
store; memory does not grow with the store size.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from magphase.errors import DataError
from magphase.utils.faults import fault_point
from magphase.utils.integrity import file_matches, file_sha256
from magphase.utils.process import pid_alive

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "patch_id",
    "volume",
    "sequence",
    "label",
    "split",
    "slice",
    "row",
    "col",
    "box_overlap",
)
ARRAYS_FILE = "arrays.h5"
MANIFEST_FILE = "manifest.csv"
META_FILE = "meta.json"


def _partial_path(path: Path) -> Path:
    """The temporary sibling a writer of ``path`` fills before publishing it."""
    return path.with_name(f"{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _publish(tmp: Path, path: Path) -> None:
    """Move the finished folder ``tmp`` to ``path``, replacing a previous store there."""
    if path.exists():
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def copy_store(src: str | Path, out: str | Path, **meta: Any) -> Path:
    """Copy the store ``src`` to ``out`` atomically, adding ``meta`` to its ``meta.json``.

    Like a :class:`StoreWriter`, it fills a temporary sibling (clearing those killed writers left)
    and renames it into place, so ``out`` is either the previous store or the whole copy.
    """
    src, out = Path(src), Path(out)
    Store(src)  # a readable store, or DataError naming it
    _remove_stale_partials(out)
    tmp = _partial_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
        info = json.loads((tmp / META_FILE).read_text())
        info.update(meta)
        (tmp / META_FILE).write_text(json.dumps(info, indent=2, default=str))
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("copied store %s -> %s", src, out)
    return out


def _remove_stale_partials(path: Path) -> None:
    """Delete ``STORE.tmp-<host>-<pid>`` folders that writers on this host left when they were killed.

    Only this host's folders are judged (a pid means nothing on another node of a shared file
    system); a folder whose writer is still alive is left alone. Earlier versions' ``STORE.tmp-<pid>``
    folders are taken to be this host's.
    """
    prefix = f"{path.name}.tmp-{socket.gethostname()}-"
    legacy = f"{path.name}.tmp-"  # ``STORE.tmp-<pid>`` of earlier versions: this host's
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.tmp-*"):
        pid = tmp.name[len(prefix) :] if tmp.name.startswith(prefix) else tmp.name[len(legacy) :]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            log.info("removing %s (partial store of a writer that no longer runs)", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_partials_under(root: str | Path) -> list[Path]:
    """Remove, anywhere under ``root``, the partial folders of store writers that no longer run."""
    removed = []
    pattern = re.compile(r"^(.+)\.(tmp|old)-")
    for dirpath, dirs, _files in os.walk(root):
        for name in list(dirs):
            m = pattern.match(name)
            if m is None:
                continue
            before = Path(dirpath) / name
            store = Path(dirpath) / m.group(1)
            if m.group(2) == "tmp":
                _remove_stale_partials(store)
            else:
                pid = name.rpartition("-")[2]
                if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                    shutil.rmtree(before, ignore_errors=True)
            if not before.exists():
                dirs.remove(name)
                removed.append(before)
    return removed


@dataclass
class StoreWriter:
    """Append-only writer of a store; call :meth:`close` to publish it atomically.

    Args:
        path: final store folder (must not exist unless ``overwrite``).
        arrays: name -> per-item shape, e.g. ``{"patches": (2, 96, 96)}``.
        kind: free label stored in meta.json (``patches``, ``latents``, ``synthetic``...).
        meta: extra provenance written to meta.json.
    """

    path: Path
    arrays: dict[str, tuple[int, ...]]
    kind: str = "patches"
    meta: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(f"{self.path}: store already exists")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.path)
        self._tmp = _partial_path(self.path)
        if self._tmp.exists():
            shutil.rmtree(self._tmp)
        self._tmp.mkdir()
        self._h5 = h5py.File(self._tmp / ARRAYS_FILE, "w")
        for name, shape in self.arrays.items():
            self._h5.create_dataset(
                name, shape=(0, *shape), maxshape=(None, *shape), dtype="float32", chunks=(1, *shape)
            )
        self._rows: list[dict[str, Any]] = []
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, rows: Sequence[dict[str, Any]], **arrays: np.ndarray) -> None:
        """Append ``len(rows)`` items: manifest rows and one array per declared name."""
        n = len(rows)
        if set(arrays) != set(self.arrays):
            raise ValueError(f"expected arrays {sorted(self.arrays)}, got {sorted(arrays)}")
        for name, a in arrays.items():
            a = np.asarray(a, dtype=np.float32)
            if a.shape != (n, *self.arrays[name]):
                raise ValueError(f"array {name!r} has shape {a.shape}, expected {(n, *self.arrays[name])}")
            if not np.isfinite(a).all():
                raise DataError(self.path, name, "refusing to store NaN/Inf values")
            ds = self._h5[name]
            try:
                ds.resize(self._n + n, axis=0)
                ds[self._n : self._n + n] = a
            except OSError as exc:  # h5py reports ENOSPC / EIO without errno or file name
                code = exc.errno or (errno.ENOSPC if "errno = 28" in str(exc) else errno.EIO)
                reason = f"cannot write array {name!r}: {os.strerror(code)}"
                raise OSError(code, reason, str(self.path)) from exc
        self._rows.extend(dict(r) for r in rows)
        self._n += n

    def close(self) -> Path:
        """Write manifest and meta, then atomically publish the store. Returns its path."""
        self._h5.close()
        manifest = pd.DataFrame(self._rows)
        for col in MANIFEST_COLUMNS:
            if col not in manifest.columns:
                manifest[col] = pd.Series(dtype="object")
        extra = [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
        manifest = manifest[list(MANIFEST_COLUMNS) + extra]
        manifest.to_csv(self._tmp / MANIFEST_FILE, index=False)
        meta = {
            "kind": self.kind,
            "count": self._n,
            "arrays": {k: list(v) for k, v in self.arrays.items()},
            **self.meta,
        }
        meta["sha256"] = {name: file_sha256(self._tmp / name) for name in (ARRAYS_FILE, MANIFEST_FILE)}
        (self._tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        fault_point("store.publish", self.path.name)
        _publish(self._tmp, self.path)
        log.info("wrote store %s (%d items)", self.path, self._n)
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        try:
            self._h5.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Store:
    """Read-only, lazily opened store. Safe to pickle into DataLoader workers.

    ``store.manifest`` is a pandas DataFrame (row i describes item i). ``store.read(name, idx)``
    reads rows ``idx`` (int, slice or sorted/unsorted index array) of array ``name``.
    """

    def __init__(self, path: str | Path, *, verify: bool = True):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(self.path, None, "not a magphase store (no such folder)")
        for f in (ARRAYS_FILE, MANIFEST_FILE, META_FILE):
            if not (self.path / f).is_file():
                raise DataError(self.path, f, "not a magphase store (missing file)")
        try:
            self.meta: dict[str, Any] = json.loads((self.path / META_FILE).read_text())
            self.arrays: dict[str, tuple[int, ...]] = {
                k: tuple(int(n) for n in v) for k, v in self.meta["arrays"].items()
            }
            count = int(self.meta["count"])
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise DataError(self.path / META_FILE, None, f"unreadable store metadata: {exc!r}") from exc
        if verify:
            self._verify_checksums()
        try:
            self.manifest: pd.DataFrame = pd.read_csv(self.path / MANIFEST_FILE, keep_default_na=False)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DataError(self.path / MANIFEST_FILE, None, f"unreadable manifest: {exc}") from exc
        if len(self.manifest) != count:
            raise DataError(self.path, MANIFEST_FILE, f"{len(self.manifest)} rows but meta says {count}")
        missing = [c for c in ("patch_id", "split") if c not in self.manifest.columns]
        if missing:
            raise DataError(self.path / MANIFEST_FILE, missing[0], "manifest lacks this column")
        self._check_arrays(count)
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    def _verify_checksums(self) -> None:
        recorded = self.meta.get("sha256")
        if recorded is None:
            log.debug("%s: store written without checksums; content not verified", self.path)
            return
        for name in (ARRAYS_FILE, MANIFEST_FILE):
            if not isinstance(recorded, dict) or name not in recorded:
                raise DataError(self.path / META_FILE, "sha256", f"no checksum recorded for {name}")
            if not file_matches(self.path / name, str(recorded[name])):
                raise DataError(
                    self.path / name,
                    None,
                    "content differs from the checksum recorded when the store was "
                    "written (damaged or edited); rebuild the store",
                )

    def _check_arrays(self, count: int) -> None:
        try:
            with h5py.File(self.path / ARRAYS_FILE, "r") as h5:
                found = {k: tuple(h5[k].shape) for k in h5.keys()}
        except OSError as exc:
            raise DataError(self.path / ARRAYS_FILE, None, f"cannot open store arrays: {exc}") from exc
        for name, shape in self.arrays.items():
            if name not in found:
                raise DataError(self.path / ARRAYS_FILE, name, "array listed in meta.json is missing")
            if found[name] != (count, *shape):
                raise DataError(
                    self.path / ARRAYS_FILE,
                    name,
                    f"shape {found[name]} disagrees with meta.json / manifest ({count} rows of {shape})",
                )

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_pid"] = None
        return state

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            try:
                self._h5 = h5py.File(self.path / ARRAYS_FILE, "r")
            except OSError as exc:
                raise DataError(self.path / ARRAYS_FILE, None, f"cannot open store arrays: {exc}") from exc
            self._pid = os.getpid()
        return self._h5

    def read(self, name: str, idx: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of array ``name`` as float32; index arrays may be unsorted and repeat.

        Index arrays are read as one plain slice per run of consecutive rows: h5py's fancy indexing
        builds a point selection that is ~80x slower for a batch of one-chunk rows.
        """
        if name not in self.arrays:
            raise KeyError(f"{self.path}: no array {name!r} (has {sorted(self.arrays)})")
        ds = self._file()[name]
        if isinstance(idx, (int, np.integer, slice)):
            return np.asarray(ds[idx], dtype=np.float32)
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((idx.size, *self.arrays[name]), np.float32)
        if idx.size == 0:
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"{self.path}: index out of range 0..{len(self) - 1}")
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        # Runs of +1 steps; a repeated index (step 0) starts a new run, so every run is one slice.
        breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
        for run in np.split(np.arange(idx.size), breaks):
            lo = int(sorted_idx[run[0]])
            out[order[run]] = ds[lo : lo + run.size]
        return out

    def select(self, **where: Any) -> np.ndarray:
        """Indices whose manifest columns equal (or are in, for list values) the given values."""
        mask = np.ones(len(self.manifest), bool)
        for col, val in where.items():
            if val is None:
                continue
            if col not in self.manifest.columns:
                raise KeyError(f"{self.path}: manifest has no column {col!r}")
            series = self.manifest[col]
            if isinstance(val, (list, tuple, set, frozenset)):
                mask &= series.isin(list(val)).to_numpy()
            else:
                mask &= (series == val).to_numpy()
        return np.flatnonzero(mask)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def merge_stores(
    parts: Iterable[str | Path],
    out: str | Path,
    kind: str | None = None,
    chunk: int = 256,
    *,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Concatenate stores with identical array layouts into ``out`` (atomic), renumbering nothing.

    Used to merge ``--shard I/N`` outputs and a sampler's parts. Reads and writes ``chunk`` rows at a
    time. ``meta``: the merged store's provenance (default: the first part's, plus ``merged_from``).
    """
    parts = [Store(p) for p in parts]
    if not parts:
        raise ValueError("merge_stores needs at least one store")
    layout = parts[0].arrays
    for p in parts[1:]:
        if p.arrays != layout:
            raise DataError(p.path, META_FILE, f"array layout {p.arrays} differs from {layout}")
    if meta is None:
        meta = {k: v for k, v in parts[0].meta.items() if k not in ("kind", "count", "arrays")}
        meta["merged_from"] = [str(p.path) for p in parts]
    kind = kind or parts[0].meta.get("kind", "patches")
    with StoreWriter(Path(out), layout, kind=kind, meta=meta, overwrite=overwrite) as w:
        for p in parts:
            rows = p.manifest.to_dict("records")
            for s in range(0, len(p), chunk):
                sl = slice(s, min(s + chunk, len(p)))
                w.append(rows[sl], **{name: p.read(name, sl) for name in layout})
            p.close()
    return Path(out)
