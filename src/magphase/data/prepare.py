"""``magphase prepare``: fastMRI-format raw volumes + fastMRI+ annotations -> the patch store.

Paper 2.1.2-2.1.3. Per volume (:func:`process_volume`):

1. read k-space one slice at a time, removing the 2x readout oversampling slice by slice (so a
   16-coil 640 x 320 x 16 volume is held at half size);
2. ESPIRiT coil combination of the whole volume into one complex image per slice on the recon
   grid (:func:`magphase.mri.coils.espirit_combine`; one virtual-coil phase reference per volume,
   GPU when a CUDA device is given);
3. each slice divided by its maximum magnitude (phase untouched);
4. a magnitude brain mask per slice (:mod:`magphase.mri.brainmask`);
5. patches planned by the paper's rules (:mod:`magphase.data.patching`) from a generator seeded by
   ``(run seed, volume name)`` (:func:`volume_rng`) and cut out as ``2 x 96 x 96`` float32.

Each volume's result is written atomically to ``OUT/volumes/{stem}.h5`` (patches, planned rows,
brain mask, or the reason it was rejected) together with a key of everything that determines it
(config, seed, label, boxes, source file size/mtime). A re-run skips volumes whose key matches, so
an interrupted run resumes, ``--workers N`` and ``--shard I/N`` runs write into the same folder
without coordination, and a killed run leaves only ``*.tmp`` files that are ignored.

:func:`merge_prepared` then assigns volume-level splits (:mod:`magphase.data.splits`) and streams
the per-volume results, one volume at a time, into the store ``OUT/patches`` (atomic
:class:`magphase.data.store.StoreWriter`), and writes ``rejects.csv``, ``table1.csv``/``.md``,
``summary.json`` and ``fig2_patches.png``. Memory is a few volumes whatever the dataset size.

Output folder::

    OUT/patches/            the patch store (arrays.h5: `patches` N x 2 x 96 x 96; manifest.csv; meta.json)
    OUT/volumes/{stem}.h5   per-volume results (the resume cache)
    OUT/rejects.csv         file, field, reason for every skipped volume
    OUT/annotation_rejects.csv  file, line, volume, field, kind, reason for every annotation row not used
    OUT/table1.csv, .md     patches by class x sequence x split (paper Table 1 layout)
    OUT/summary.json        counts, config hash, brain-mask Dice when ground truth was found
    OUT/fig2_patches.png    example patches (paper Fig. 2)
    OUT/nifti/              combined volumes as NIfTI magnitude/phase (with ``nifti``)
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from magphase.config import PrepareConfig, config_hash
from magphase.conventions import PATCH_SIZE, SEQUENCES, sequence_from_filename
from magphase.data.patching import (
    PatchSpec,
    PixelBox,
    extract_patches,
    plan_box_patches,
    plan_random_patches,
    touches_any_box,
    valid_positions,
)
from magphase.data.splits import assign_splits, table1, table1_markdown
from magphase.data.store import Store, StoreWriter
from magphase.errors import ConfigError, DataError, MagphaseError
from magphase.io.annotations import (
    AnnotationSet,
    Box,
    box_to_array,
    normalize_label,
    read_annotations,
    volume_key,
)
from magphase.mri.brainmask import BrainMaskParams, brain_mask, dice
from magphase.utils.atomic import atomic_path, atomic_write_csv, atomic_write_text
from magphase.utils.seeds import derived_rng

log = logging.getLogger(__name__)

#: Version of the per-volume result layout; bump to invalidate every cached volume.
#: 2: results record the volume's unusable annotation boxes (``box_rejects``).
RESULT_FORMAT = 2
PATCH_STORE = "patches"
VOLUMES_DIR = "volumes"
REJECTS_FILE = "rejects.csv"
REJECT_COLUMNS = ("file", "field", "reason")
#: Annotation rows not used: unreadable rows (from the CSV reader) and boxes outside their volume.
ANNOTATION_REJECTS_FILE = "annotation_rejects.csv"
ANNOTATION_REJECT_COLUMNS = ("file", "line", "volume", "field", "kind", "reason")
#: Extra manifest columns written by prepare (after the store's fixed columns).
EXTRA_COLUMNS = (
    "source_label",
    "site",
    "box_id",
    "box_label",
    "box_row0",
    "box_row1",
    "box_col0",
    "box_col1",
    "brain_fraction",
    "finding",
)


# ------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class VolumeTask:
    """One raw volume to prepare.

    Attributes:
        path: the fastMRI ``.h5`` file.
        label: volume class from the annotations: normal, abnormal, excluded or unlabeled.
        boxes: every valid fastMRI+ box of the volume (any label; CSV convention).
        abnormal_labels: labels (normalised) that make a box abnormal (from the label rules).
        source_id: what identifies the raw file's content when the file itself may be gone (a
            simulated volume prepared as it was simulated and then deleted, ``pipeline.keep_raw``);
            None: its size and modification time do.
    """

    path: Path
    label: str
    boxes: tuple[Box, ...] = ()
    abnormal_labels: tuple[str, ...] = ()
    source_id: str | None = None

    @property
    def volume(self) -> str:
        return volume_key(self.path)


def dominant_finding(task: VolumeTask) -> str:
    """The most frequent abnormal box label of a volume (normalised; ties alphabetical); '' if none."""
    found = [normalize_label(b.label) for b in task.boxes]
    found = [x for x in found if x in task.abnormal_labels]
    if not found:
        return ""
    labels, counts = np.unique(found, return_counts=True)
    return str(labels[int(np.argmax(counts))])


def site_from_filename(name: str) -> str:
    """fastMRI site/scanner code in ``file_brain_AXT1POST_201_6002780`` (``"201"``); '' if none."""
    parts = volume_key(name).split("_")
    return parts[-2] if len(parts) >= 4 and parts[-2].isdigit() else ""


def volume_rng(seed: int, volume: str) -> np.random.Generator:
    """The generator of one volume: depends on the run seed and the volume name only."""
    digest = hashlib.sha256(f"{seed}\x1f{volume_key(volume)}".encode()).digest()
    return derived_rng(seed, int.from_bytes(digest[:8], "little"))


def discover_volumes(
    raw_dir: str | Path,
    annotations: str | Path | None = None,
    file_list: str | Path | None = None,
    cfg: PrepareConfig | None = None,
) -> list[VolumeTask]:
    """Every ``*.h5`` in ``raw_dir`` (sorted by name) with its class and boxes.

    Files are not opened here (bad files are rejected when processed), so every shard of a job
    array sees the same list cheaply. Entries that are not regular files (a folder named
    ``x.h5``, a looping or dangling link) are listed too, so that they are rejected by name
    rather than skipped in silence. Without ``annotations`` every volume is unlabeled.

    Raises:
        DataError: ``raw_dir`` is not a folder, or the annotation files cannot be read.
    """
    return discover_with_rejects(raw_dir, annotations, file_list, cfg)[0]


def volume_task(
    path: Path, ann: AnnotationSet | None, cfg: PrepareConfig, source_id: str | None = None
) -> VolumeTask:
    """The task of one raw file: its class and boxes from ``ann`` (None: unlabeled)."""
    abnormal = tuple(sorted({normalize_label(x) for x in cfg.labels.abnormal_labels}))
    if ann is None:
        return VolumeTask(path, "unlabeled", (), abnormal, source_id)
    entry = ann.get(path)
    return VolumeTask(path, ann.label_of(path), tuple(entry.boxes) if entry else (), abnormal, source_id)


def discover_with_rejects(
    raw_dir: str | Path,
    annotations: str | Path | None = None,
    file_list: str | Path | None = None,
    cfg: PrepareConfig | None = None,
    expected: Mapping[str, str] | None = None,
) -> tuple[list[VolumeTask], list[dict[str, Any]]]:
    """:func:`discover_volumes` plus the annotation rows the reader rejected, as
    :data:`ANNOTATION_REJECT_COLUMNS` records (for ``annotation_rejects.csv``).

    ``expected``: volume stem -> :attr:`VolumeTask.source_id` of volumes listed whether or not their
    file is still in ``raw_dir`` (simulated volumes prepared as they were simulated, then deleted).
    """
    cfg = cfg or PrepareConfig()
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(raw_dir, None, "raw data folder does not exist")
    expected = dict(expected or {})
    paths = sorted(set(raw_dir.glob("*.h5")) | {raw_dir / f"{stem}.h5" for stem in expected})
    ann: AnnotationSet | None = None
    rejects: list[dict[str, Any]] = []
    if annotations is not None:
        ann = read_annotations(annotations, file_list, rules=cfg.labels)
        if ann.rejects:
            log.warning(
                "%s: %d annotation rows rejected: %s", annotations, len(ann.rejects), ann.reject_counts()
            )
        rejects = [
            {
                "file": r.source,
                "line": r.row,
                "volume": r.file,
                "field": r.field,
                "kind": r.kind,
                "reason": r.reason,
            }
            for r in ann.rejects
        ]
        missing = set(ann.volumes) - {volume_key(p) for p in paths}
        if missing:
            log.info("%d annotated volumes are not in %s (ignored)", len(missing), raw_dir)
    tasks = [volume_task(p, ann, cfg, expected.get(volume_key(p))) for p in paths]
    return tasks, rejects


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; None -> ``(0, 1)``."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/8), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return i, n


# ------------------------------------------------------------------------------ per volume


@dataclass
class VolumeResult:
    """What one volume contributes: its patches and manifest rows, or why it was rejected.

    ``rows`` hold every manifest column except ``patch_id`` and ``split`` (assigned at merge).
    """

    volume: str
    source: str
    sequence: str
    label: str
    status: str  # "ok" or "rejected"
    field: str | None = None
    reason: str | None = None
    patches: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((0, 2, PATCH_SIZE, PATCH_SIZE), np.float32)
    )
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    mask: np.ndarray | None = None
    image_shape: tuple[int, int, int] = (0, 0, 0)
    seconds: float = 0.0
    #: Boxes of the volume that lie outside it (``volume, field, kind, reason``; see :func:`pixel_boxes`).
    box_rejects: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def normalise_slices(volume: np.ndarray) -> np.ndarray:
    """Divide every slice by its maximum magnitude (phase unchanged); all-zero slices stay zero.

    Args:
        volume: complex ``(S, H, W)``.
    Returns:
        complex64 ``(S, H, W)`` with ``max |slice| == 1`` for every non-zero slice.
    """
    peak = np.abs(volume).reshape(volume.shape[0], -1).max(axis=1)
    scale = np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1.0), 0.0)
    return (volume * scale[:, None, None]).astype(np.complex64)


def combine_volume(
    path: str | Path, cfg: PrepareConfig, device: str | None = None
) -> tuple[np.ndarray, Any, str]:
    """Read a fastMRI volume and ESPIRiT-combine it (not yet normalised).

    Returns:
        ``(images, header, sequence)``: complex64 ``(S, h, w)`` on the recon grid (the grid of
        ``reconstruction_rss``, where fastMRI+ boxes live), the :class:`AcquisitionHeader`, and
        the file's sequence (one of :data:`~magphase.conventions.SEQUENCES`).
    Raises:
        DataError: unreadable or malformed file, a sequence outside ``SEQUENCES`` (checked before
            any k-space is read), NaN/Inf or all-zero k-space.
    """
    from magphase.io.fastmri import ALL_ZERO, KSPACE, open_volume
    from magphase.mri.coils import espirit_combine
    from magphase.mri.kspace import remove_readout_oversampling

    with open_volume(path) as vol:
        sequence = vol.sequence
        if sequence not in SEQUENCES:
            raise DataError(
                path,
                "attrs/acquisition",
                f"sequence {sequence!r} is not one of {', '.join(SEQUENCES)} (nor named in the file name)",
            )
        # Oversampling removal is linear and per slice: doing it while reading halves the memory
        # held for the whole-volume ESPIRiT call (which needs every slice for its phase reference).
        kspace = np.stack(
            [
                remove_readout_oversampling(vol.kspace_slice(i), cfg.readout_oversampling)
                for i in range(vol.n_slices)
            ]
        )
        recon_shape = vol.recon_shape
        header = vol.header
    if not kspace.any():
        raise DataError(path, KSPACE, ALL_ZERO)
    try:
        images = espirit_combine(
            kspace, oversampling=None, recon_size=recon_shape, device=device, source=path, **cfg.espirit
        )
    except (ValueError, RuntimeError) as exc:
        raise DataError(path, "kspace", f"coil combination failed: {exc}") from exc
    images = np.asarray(images, dtype=np.complex64)
    if not np.isfinite(images).all():
        raise DataError(path, "kspace", "coil combination produced NaN/Inf")
    return images, header, sequence


def unusable_box(box: Box, shape: tuple[int, int, int]) -> tuple[str, str, str] | None:
    """``(field, kind, reason)`` when ``box`` cannot be placed on an ``(S, H, W)`` volume, else None.

    Unusable: a slice the volume lacks, a non-positive size, rows outside ``0 .. H`` (the
    flipped-y convention needs the whole height) or columns starting outside ``0 .. W - 1``. A box
    whose columns merely run past the right edge is usable (it is clipped).
    """
    s_count, h, w = shape
    if not 0 <= box.slice < s_count:
        return "slice", "out-of-image", f"slice {box.slice} is outside the volume's {s_count} slices"
    for name, size in (("width", box.width), ("height", box.height)):
        if size <= 0:
            return name, "zero-size", f"{name}={size} is not positive"
    if not 0 <= box.x < w:
        return "x", "out-of-image", f"x={box.x} is outside the image width {w}"
    if box.y < 0 or box.y + box.height > h:
        return "y", "out-of-image", f"rows y={box.y}..{box.y + box.height} are outside the image height {h}"
    return None


def pixel_boxes(
    boxes: Sequence[Box],
    shape: tuple[int, int, int],
    source: str = "",
    dropped: list[dict[str, Any]] | None = None,
) -> list[PixelBox]:
    """fastMRI+ boxes -> boxes on the stored array, clipped to it.

    Unusable boxes (:func:`unusable_box`) are dropped and logged; when ``dropped`` is a list, each
    is also appended to it as ``{"volume", "field", "kind", "reason"}`` (for the rejects report).
    """
    _, h, w = shape
    out = []
    for b in boxes:
        unusable = unusable_box(b, shape)
        if unusable is not None:
            field, kind, reason = unusable
            log.warning("%s: box %s dropped: %s", source, b, reason)
            if dropped is not None:
                where = f"box slice={b.slice} x={b.x} y={b.y} width={b.width} height={b.height} ({b.label})"
                dropped.append(
                    {"volume": b.file, "field": field, "kind": kind, "reason": f"{where}: {reason}"}
                )
            continue
        r0, r1, c0, c1 = box_to_array(b.x, b.y, b.width, b.height, h)
        out.append(PixelBox(b.slice, max(0, r0), min(h, r1), max(0, c0), min(w, c1), b.label))
    return out


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def plan_volume(
    label: str,
    masks: np.ndarray,
    boxes: Sequence[PixelBox],
    abnormal: Sequence[bool],
    cfg: PrepareConfig,
    rng: np.random.Generator,
) -> list[PatchSpec]:
    """Patch plan of one volume by the paper's rules (2.1.3).

    Args:
        label: the volume class (normal, abnormal, unlabeled).
        masks: bool ``(S, H, W)`` brain masks.
        boxes: every box of the volume on the stored array (any label).
        abnormal: per box, whether its label is abnormal (only those yield abnormal patches;
            every box, whatever its label, is avoided by the volume's normal patches).
    Returns:
        planned patches: abnormal box patches first, then normal ones.
    """
    valid = valid_positions(masks, PATCH_SIZE, cfg.min_brain_fraction)
    if label in ("normal", "unlabeled"):
        n = _draw(rng, cfg.normal_patches if label == "normal" else cfg.unlabeled_patches)
        return plan_random_patches(valid, n, label, rng)
    if label != "abnormal":
        raise ValueError(f"cannot plan patches for a volume labelled {label!r}")
    lesion_boxes = [b for b, a in zip(boxes, abnormal, strict=True) if a]
    lo, hi = cfg.abnormal_box_patches
    wanted = int(np.clip(round(sum(b.area for b in lesion_boxes) / cfg.box_area_per_patch), lo, hi))
    plans = plan_box_patches(
        valid, lesion_boxes, wanted, rng, size=PATCH_SIZE, min_box_overlap=cfg.min_box_overlap
    )
    # Re-index box ids onto the volume's full box list.
    index = [i for i, a in enumerate(abnormal) if a]
    plans = [PatchSpec(p.slice, p.row, p.col, p.label, index[p.box_id], p.box_overlap) for p in plans]
    near_box = touches_any_box(boxes, masks.shape, PATCH_SIZE, cfg.box_slice_margin, cfg.box_pixel_margin)
    n_normal = _draw(rng, cfg.abnormal_volume_normal_patches)
    return plans + plan_random_patches(valid, n_normal, "normal", rng, exclude=near_box)


def process_volume(
    task: VolumeTask, cfg: PrepareConfig, seed: int, device: str | None = None, nifti_dir: Path | None = None
) -> VolumeResult:
    """Combine, normalise, mask and patch one volume (raises :class:`DataError` on a bad file)."""
    start = time.perf_counter()
    images, header, sequence = combine_volume(task.path, cfg, device)
    images = normalise_slices(images)
    pixel_mm = header.recon_fov_mm[0] / header.recon_matrix[0]
    masks = brain_mask(np.abs(images), BrainMaskParams(**cfg.brain_mask.model_dump()), pixel_mm)
    if nifti_dir is not None:
        from magphase.io.nifti import export_nifti

        voxel = (
            header.recon_fov_mm[1] / header.recon_matrix[1],
            header.recon_fov_mm[0] / header.recon_matrix[0],
            header.recon_fov_mm[2],
        )
        export_nifti(images, nifti_dir / task.volume, voxel)
    box_rejects: list[dict[str, Any]] = []
    boxes = pixel_boxes(task.boxes, images.shape, str(task.path), box_rejects)
    abnormal = [normalize_label(b.label) in task.abnormal_labels for b in boxes]
    plans = plan_volume(task.label, masks, boxes, abnormal, cfg, volume_rng(seed, task.volume))
    patches = extract_patches(images, plans)
    site = site_from_filename(task.volume)
    rows = []
    for p in plans:
        box = boxes[p.box_id] if p.box_id >= 0 else None
        inside = float(masks[p.slice, p.row : p.row + PATCH_SIZE, p.col : p.col + PATCH_SIZE].mean())
        rows.append(
            {
                "volume": task.volume,
                "sequence": sequence,
                "label": p.label,
                "slice": p.slice,
                "row": p.row,
                "col": p.col,
                "box_overlap": round(p.box_overlap, 6),
                "source_label": task.label,
                "site": site,
                "box_id": p.box_id,
                "box_label": box.label if box else "",
                "box_row0": box.row0 if box else -1,
                "box_row1": box.row1 if box else -1,
                "box_col0": box.col0 if box else -1,
                "box_col1": box.col1 if box else -1,
                "brain_fraction": round(inside, 6),
            }
        )
    result = VolumeResult(
        volume=task.volume,
        source=str(task.path),
        sequence=sequence,
        label=task.label,
        status="ok" if plans else "rejected",
        field=None if plans else "brain_mask",
        reason=None
        if plans
        else f"no patch position is >= {cfg.min_brain_fraction:.0%} inside the brain mask",
        patches=patches,
        rows=rows,
        mask=masks,
        image_shape=images.shape,
        seconds=time.perf_counter() - start,
        box_rejects=box_rejects,
    )
    n_box = sum(r["box_id"] >= 0 for r in rows)
    if task.label == "abnormal" and n_box == 0:
        log.warning("%s: abnormal volume but no box passes the patch rules", task.volume)
    log.debug("%s: %d patches (%d from boxes) in %.2f s", task.volume, len(plans), n_box, result.seconds)
    return result


# ------------------------------------------------------------------------ per-volume files


def result_key(task: VolumeTask, cfg: PrepareConfig, seed: int) -> str:
    """Hash of everything that determines a volume's result (config, seed, label, boxes, file)."""
    stamp: list[int] | str
    if task.source_id is not None:
        stamp = task.source_id
    else:
        try:
            st = task.path.stat()
            stamp = [st.st_size, st.st_mtime_ns]
        except OSError:
            stamp = [-1, -1]
    settings = cfg.model_dump(mode="json", exclude={"splits", "external", "nifti"})
    return config_hash(
        settings,
        {"seed": seed, "label": task.label, "boxes": [asdict(b) for b in task.boxes], "file": stamp},
        RESULT_FORMAT,
    )


def result_path(out_dir: Path, volume: str) -> Path:
    return Path(out_dir) / VOLUMES_DIR / f"{volume}.h5"


def write_result(path: Path, result: VolumeResult, key: str, keep_mask: bool = True) -> None:
    """Write one volume's result atomically (temp file in the same folder, then ``os.replace``)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = RESULT_FORMAT
        f.attrs["key"] = key
        for name in ("volume", "source", "sequence", "label", "status"):
            f.attrs[name] = getattr(result, name)
        f.attrs["field"] = result.field or ""
        f.attrs["reason"] = result.reason or ""
        f.attrs["image_shape"] = np.asarray(result.image_shape, np.int64)
        f.attrs["seconds"] = result.seconds
        f.attrs["rows"] = json.dumps(result.rows)
        f.attrs["box_rejects"] = json.dumps(result.box_rejects)
        f.create_dataset("patches", data=result.patches.astype(np.float32))
        if keep_mask and result.mask is not None:
            f.create_dataset("brain_mask", data=result.mask.astype(np.uint8), compression="gzip", chunks=True)


def read_result_header(path: Path) -> dict[str, Any] | None:
    """Attributes of a per-volume file (``rows`` decoded); None when unreadable (treated as missing)."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            attrs["n_patches"] = int(f["patches"].shape[0])
    except (OSError, KeyError):
        return None
    attrs["rows"] = json.loads(attrs.get("rows", "[]"))
    attrs["box_rejects"] = json.loads(attrs.get("box_rejects", "[]"))
    return attrs


def read_result_patches(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.asarray(f["patches"], dtype=np.float32)


@dataclass(frozen=True)
class VolumeOutcome:
    """Progress report of one volume: ``status`` is ok, rejected or cached (already done)."""

    volume: str
    status: str
    n_patches: int
    seconds: float
    reason: str | None = None


def cached_outcome(
    task: VolumeTask, out_dir: Path, cfg: PrepareConfig, seed: int, nifti: bool = False
) -> VolumeOutcome | None:
    """The outcome of a volume whose up-to-date result already exists, else None (to be processed).

    A finished volume is redone only if NIfTI export is asked for and its files are missing.
    """
    path = result_path(out_dir, task.volume)
    existing = read_result_header(path) if path.exists() else None
    if existing is None or existing.get("key") != result_key(task, cfg, seed):
        return None
    phase_file = Path(out_dir) / "nifti" / f"{task.volume}_phase.nii.gz"
    if nifti and existing["status"] == "ok" and not phase_file.exists():
        return None
    return VolumeOutcome(task.volume, "cached", existing["n_patches"], 0.0, existing.get("reason") or None)


def run_volume(
    task: VolumeTask,
    out_dir: Path,
    cfg: PrepareConfig,
    seed: int,
    device: str | None = None,
    nifti: bool = False,
) -> VolumeOutcome:
    """Prepare one volume unless its up-to-date result exists; bad files become reject results."""
    cached = cached_outcome(task, out_dir, cfg, seed, nifti)
    if cached is not None:
        return cached
    path = result_path(out_dir, task.volume)
    key = result_key(task, cfg, seed)
    nifti_dir = Path(out_dir) / "nifti" if nifti else None
    start = time.perf_counter()
    if nifti_dir is not None:
        nifti_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = process_volume(task, cfg, seed, device, nifti_dir)
    except DataError as exc:
        log.warning("rejecting %s", exc)
        result = VolumeResult(
            volume=task.volume,
            source=str(task.path),
            sequence=sequence_from_filename(task.path.name) or "",
            label=task.label,
            status="rejected",
            field=exc.field or "",
            reason=exc.problem,
            seconds=time.perf_counter() - start,
        )
    write_result(path, result, key, keep_mask=cfg.keep_masks)
    return VolumeOutcome(task.volume, result.status, len(result.rows), result.seconds, result.reason)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def prepare_volumes(
    tasks: Sequence[VolumeTask],
    out_dir: str | Path,
    cfg: PrepareConfig,
    seed: int,
    *,
    device: str | None = None,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    nifti: bool = False,
    progress: Callable[[VolumeOutcome], None] | None = None,
) -> list[VolumeOutcome]:
    """Process this shard's share of ``tasks`` (``tasks[I::N]``, excluded volumes skipped).

    ``workers > 1`` runs volumes in that many processes (spawned, so CUDA works in them); every
    volume's result is independent of the worker count and order. ``progress`` is called in this
    process once per volume.
    """
    out_dir = Path(out_dir)
    (out_dir / VOLUMES_DIR).mkdir(parents=True, exist_ok=True)
    i, n = shard
    todo = [t for t in list(tasks)[i::n] if t.label != "excluded"]
    outcomes: list[VolumeOutcome] = []

    def _done(o: VolumeOutcome) -> None:
        outcomes.append(o)
        if progress is not None:
            progress(o)

    if workers <= 1 or len(todo) <= 1:
        for t in todo:
            _done(run_volume(t, out_dir, cfg, seed, device, nifti))
        return outcomes
    # Finished volumes are reported here; only the others are sent to worker processes.
    pending = []
    for t in todo:
        cached = cached_outcome(t, out_dir, cfg, seed, nifti)
        if cached is None:
            pending.append(t)
        else:
            _done(cached)
    if not pending:
        return outcomes
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        min(workers, len(pending)), mp_context=ctx, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(run_volume, t, out_dir, cfg, seed, device, nifti) for t in pending]
        try:
            for fut in cf.as_completed(futures):
                _done(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return outcomes


# -------------------------------------------------------------------------------- merging


class IncompleteError(MagphaseError):
    """``merge`` found volumes without a result (a shard has not finished)."""


@dataclass
class PrepareSummary:
    """What :func:`merge_prepared` produced."""

    store: Path
    n_patches: int
    n_volumes: int
    n_rejected: int
    table1: pd.DataFrame
    rejects: pd.DataFrame
    brain_mask_dice: dict[str, float] | None = None
    n_annotation_rejects: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "store": str(self.store),
            "n_patches": self.n_patches,
            "n_volumes": self.n_volumes,
            "n_rejected": self.n_rejected,
            "n_annotation_rejects": self.n_annotation_rejects,
            "brain_mask_dice": self.brain_mask_dice,
            "table1": self.table1.to_dict("records"),
        }


def brain_mask_agreement(out_dir: Path, truth_dir: Path, volumes: Sequence[str]) -> dict[str, float] | None:
    """Dice of the stored brain masks against simulator ground truth ``truth_dir/{stem}.h5``.

    The truth file's ``brain_mask`` (``(S, H, W)``, same grid) is compared slice by slice over the
    whole volume. Returns mean/min/median over volumes, or None when no truth file is found.
    """
    scores = []
    for v in volumes:
        truth_file = Path(truth_dir) / f"{v}.h5"
        mine = result_path(out_dir, v)
        if not truth_file.exists() or not mine.exists():
            continue
        try:
            with h5py.File(truth_file, "r") as t, h5py.File(mine, "r") as m:
                if "brain_mask" not in t or "brain_mask" not in m:
                    continue
                truth, ours = np.asarray(t["brain_mask"]) > 0, np.asarray(m["brain_mask"]) > 0
        except OSError:
            continue
        if truth.shape != ours.shape:
            log.warning("%s: truth brain mask %s vs ours %s; not compared", v, truth.shape, ours.shape)
            continue
        scores.append(dice(ours, truth))
    if not scores:
        return None
    a = np.asarray(scores)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "min": float(a.min()), "volumes": len(a)}


def merge_prepared(
    tasks: Sequence[VolumeTask],
    out_dir: str | Path,
    cfg: PrepareConfig,
    seed: int,
    *,
    allow_missing: bool = False,
    truth_dir: str | Path | None = None,
    figure: bool = True,
    annotations: str | Path | None = None,
    annotation_rejects: Sequence[dict[str, Any]] = (),
) -> PrepareSummary:
    """Build the store, rejects reports, Table 1 and figure from the per-volume results.

    Args:
        annotations: the annotation CSV, named in ``annotation_rejects.csv`` beside the boxes that
            processing found outside their volume.
        annotation_rejects: the rows the annotation reader rejected (:func:`discover_with_rejects`).

    Raises:
        IncompleteError: some volume has no result yet (unless ``allow_missing``: then they are
            reported in rejects.csv as "not processed").
    """
    out_dir = Path(out_dir)
    rejects: list[dict[str, str]] = []
    headers: list[dict[str, Any]] = []
    missing: list[str] = []
    for t in tasks:
        if t.label == "excluded":
            rejects.append({"file": str(t.path), "field": "label", "reason": "excluded label"})
            continue
        path = result_path(out_dir, t.volume)
        h = read_result_header(path) if path.exists() else None
        if h is None or h.get("key") != result_key(t, cfg, seed):
            missing.append(t.volume)
            continue
        if h["status"] != "ok":
            rejects.append({"file": h["source"], "field": h["field"], "reason": h["reason"]})
            continue
        headers.append(h)
    box_file = str(annotations) if annotations is not None else ""
    annotation_rows = list(annotation_rejects) + [
        {"file": box_file, "line": "", **r} for h in headers for r in h["box_rejects"]
    ]
    if missing and not allow_missing:
        raise IncompleteError(
            f"{len(missing)} volume(s) not prepared yet with this config (e.g. {missing[0]}); "
            "run the missing shards first"
        )
    rejects += [{"file": v, "field": "", "reason": "not processed"} for v in missing]

    # The volume's dominant abnormal finding: a manifest column always, a split stratum when asked.
    finding_of = {t.volume: dominant_finding(t) for t in tasks}
    stratify = cfg.splits.stratify_findings
    volumes = pd.DataFrame(
        [
            {
                "volume": h["volume"],
                "sequence": h["sequence"],
                "label": h["label"],
                "finding": finding_of.get(h["volume"], "") if stratify else "",
            }
            for h in headers
        ],
        columns=["volume", "sequence", "label", "finding"],
    )
    split_of = assign_splits(
        volumes, seed, cfg.splits.labelled, cfg.splits.unlabeled, cfg.splits.min_volumes_per_split
    )
    store_path = out_dir / PATCH_STORE
    meta = {
        "stage": "prepare",
        "seed": seed,
        "config_hash": config_hash(cfg, seed),
        "prepare": cfg.model_dump(mode="json"),
    }
    # Table 1 needs three columns only; the full rows live in the store's manifest.
    counted: list[tuple[str, str, str]] = []
    with StoreWriter(store_path, {"patches": (2, PATCH_SIZE, PATCH_SIZE)}, meta=meta, overwrite=True) as w:
        for h in sorted(headers, key=lambda h: h["volume"]):
            split = split_of[h["volume"]]
            finding = finding_of.get(h["volume"], "")
            rows = [
                {"patch_id": len(counted) + k, **r, "split": split, "finding": finding}
                for k, r in enumerate(h["rows"])
            ]
            w.append(rows, patches=read_result_patches(result_path(out_dir, h["volume"])))
            counted += [(r["label"], r["sequence"], split) for r in rows]
    manifest = pd.DataFrame(counted, columns=["label", "sequence", "split"])
    table = table1(manifest)
    atomic_write_csv(table, out_dir / "table1.csv")
    atomic_write_text(table1_markdown(table), out_dir / "table1.md")
    reject_frame = pd.DataFrame(rejects, columns=list(REJECT_COLUMNS))
    atomic_write_csv(reject_frame, out_dir / REJECTS_FILE)
    atomic_write_csv(
        pd.DataFrame(annotation_rows, columns=list(ANNOTATION_REJECT_COLUMNS)),
        out_dir / ANNOTATION_REJECTS_FILE,
    )
    agreement = None
    if truth_dir is not None:
        agreement = brain_mask_agreement(out_dir, Path(truth_dir), [h["volume"] for h in headers])
    summary = PrepareSummary(
        store=store_path,
        n_patches=len(manifest),
        n_volumes=len(headers),
        n_rejected=len(reject_frame),
        table1=table,
        rejects=reject_frame,
        brain_mask_dice=agreement,
        n_annotation_rejects=len(annotation_rows),
    )
    atomic_write_text(
        json.dumps({**summary.to_json(), "config_hash": meta["config_hash"]}, indent=2),
        out_dir / "summary.json",
    )
    if figure and len(manifest):
        from magphase.viz.figures_data import plot_example_patches

        plot_example_patches(Store(store_path), out_dir / "fig2_patches.png", seed=seed)
    log.info(
        "prepared %d patches from %d volumes (%d rejected)", len(manifest), len(headers), len(reject_frame)
    )
    return summary


def find_truth_dir(raw_dir: Path) -> Path | None:
    """The simulator's ground-truth folder (``truth/`` beside or inside the raw folder), if any."""
    for cand in (raw_dir / "truth", raw_dir.parent / "truth"):
        if cand.is_dir():
            return cand
    return None


def prepare(
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    annotations: str | Path | None = None,
    file_list: str | Path | None = None,
    cfg: PrepareConfig | None = None,
    seed: int = 0,
    device: str | None = None,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    merge: bool | None = None,
    process: bool = True,
    nifti: bool | None = None,
    figure: bool = True,
    progress: Callable[[VolumeOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    expected: Mapping[str, str] | None = None,
) -> PrepareSummary | None:
    """The whole stage: discover, process this shard's volumes, and merge.

    Args:
        merge: None (default) merges only when the run is not sharded; True merges after
            processing this shard.
        process: False skips processing: ``process=False, merge=True`` is the cluster "merge
            step" after every shard finished (it fails if some volume has no result).
        figure: draw ``fig2_patches.png`` when merging.
        on_start: called with the number of volumes this call will visit (for a progress bar).
        expected: volumes listed even when their raw file is gone (:func:`discover_with_rejects`).
    Returns:
        the merge summary, or None when no merge was done.
    """
    cfg = cfg or PrepareConfig()
    tasks, annotation_rejects = discover_with_rejects(raw_dir, annotations, file_list, cfg, expected)
    i, n = shard
    if process:
        if on_start is not None:
            on_start(sum(t.label != "excluded" for t in tasks[i::n]))
        prepare_volumes(
            tasks,
            out_dir,
            cfg,
            seed,
            device=device,
            workers=workers,
            shard=shard,
            nifti=cfg.nifti if nifti is None else nifti,
            progress=progress,
        )
    if merge is None:
        merge = n == 1
    if not merge:
        return None
    return merge_prepared(
        tasks,
        out_dir,
        cfg,
        seed,
        truth_dir=find_truth_dir(Path(raw_dir)),
        figure=figure,
        annotations=annotations,
        annotation_rejects=annotation_rejects,
    )
