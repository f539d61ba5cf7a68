"""``magphase prepare-external``: the external test set (paper 2.1.4) -> its own patch store.

Per volume: readout-oversampling removal (factor read from the file: k-space rows / recon rows),
symmetric k-space crop or zero-fill to 320 x 320 (:func:`magphase.mri.kspace.resize_kspace`: a
larger matrix loses its k-space periphery, a low-pass; a smaller one is sinc-interpolated), ESPIRiT
combination, slice-wise normalisation to max magnitude 1 (as the training data). Slices flagged as
facial (eyes, sinuses: absent from fastMRI) are skipped. Each remaining slice is cut by the 4 x 4
overlapping grid of 96 x 96 patches with stride 75 and only its 2 x 2 centre patches are kept
(starts 75 and 150 on both axes: rows/columns 75..245). The grid's outer starts are 0, 75, 150
and 225 -- the last would end at 321, one pixel past a 320-pixel image, so it is clamped to 224
(:func:`magphase.data.patching.grid_starts`) -- but outer patches are discarded, so the kept
patches never depend on that choice. Each patch carries its volume's label (healthy -> normal,
metastasis -> abnormal); no brain-mask rule is applied (the paper keeps the centre patches
exactly), but each patch's brain fraction is recorded in the manifest.

Inputs:
    labels CSV: ``file,label,sequence`` (file stem or name; label e.g. healthy / metastasis)
    facial CSV (optional): ``file,slice,facial`` (facial: 1/0, true/false, yes/no)
Outputs in OUT: ``patches/`` (store, split ``external``), ``rejects.csv``, ``volumes.csv``
(one row per volume), ``table_external.csv``/``.md`` (patches by class x sequence), ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magphase.config import PrepareConfig, config_hash
from magphase.conventions import PATCH_SIZE
from magphase.data.patching import PatchSpec, centre_grid_positions, extract_patches
from magphase.data.prepare import REJECT_COLUMNS, normalise_slices
from magphase.data.store import StoreWriter
from magphase.errors import DataError
from magphase.io.annotations import volume_key
from magphase.mri.brainmask import BrainMaskParams, brain_mask
from magphase.utils.atomic import atomic_write_csv, atomic_write_text

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def _read_text_csv(path: Path, what: str, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV as strings (empty cells stay ``""``), column names stripped and lower-cased.

    Raises:
        DataError: unreadable file (names ``what``), not UTF-8 (field ``encoding``) or a missing
            required column.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            path, "encoding", f"{what} is not UTF-8 text ({exc.reason}); save it as UTF-8"
        ) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(path, None, f"cannot read {what}: {exc}") from exc
    frame.columns = [c.strip().lower() for c in frame.columns]
    for col in required:
        if col not in frame.columns:
            raise DataError(path, col, f"missing required column {col!r}")
    return frame


def read_external_labels(path: str | Path) -> pd.DataFrame:
    """Labels CSV -> DataFrame ``volume, label, sequence`` (stems; label lower-cased).

    Raises:
        DataError: unreadable file, missing column, duplicate file.
    """
    path = Path(path)
    frame = _read_text_csv(path, "labels CSV", ("file", "label"))
    if "sequence" not in frame.columns:
        frame["sequence"] = ""
    frame["volume"] = frame["file"].map(lambda f: volume_key(f.strip()))
    dup = frame["volume"].duplicated()
    if dup.any():
        raise DataError(path, "file", f"volume {frame.loc[dup, 'volume'].iloc[0]!r} listed twice")
    frame["label"] = frame["label"].str.strip().str.lower()
    frame["sequence"] = frame["sequence"].str.strip()
    return frame[["volume", "label", "sequence"]]


def read_facial_slices(path: str | Path | None) -> dict[str, set[int]]:
    """Facial CSV -> ``{stem: {slice, ...}}`` of slices to skip.

    Raises:
        DataError: unreadable file, missing column, non-integer slice or unreadable flag.
    """
    if path is None:
        return {}
    path = Path(path)
    frame = _read_text_csv(path, "facial-slices CSV", ("file", "slice"))
    out: dict[str, set[int]] = {}
    for line, rec in enumerate(frame.to_dict("records"), start=2):
        flag = str(rec.get("facial", "1")).strip().lower()
        if flag not in _TRUE | _FALSE:
            raise DataError(path, "facial", f"line {line}: cannot read {flag!r} as yes/no")
        try:
            s = int(float(rec["slice"]))
        except ValueError:
            raise DataError(path, "slice", f"line {line}: {rec['slice']!r} is not a slice index") from None
        if flag in _TRUE:
            out.setdefault(volume_key(rec["file"].strip()), set()).add(s)
    return out


def combine_external(path: Path, cfg: PrepareConfig, device: str | None = None) -> tuple[np.ndarray, float]:
    """Read, resize k-space to ``cfg.external.matrix`` and combine.

    Returns:
        complex64 ``(S, 320, 320)`` images and their pixel size in mm (the field of view is kept,
        so pixels shrink when a smaller matrix is zero-filled and grow when a larger one is cropped).
    Raises:
        DataError: unreadable or malformed file, NaN/Inf or all-zero k-space.
    """
    from magphase.io.fastmri import ALL_ZERO, KSPACE, open_volume
    from magphase.mri.coils import espirit_combine
    from magphase.mri.kspace import remove_readout_oversampling, resize_kspace

    with open_volume(path) as vol:
        rows = vol.kspace_shape[2]
        factor = max(1, round(rows / vol.recon_shape[0]))
        pixel_mm = vol.header.recon_fov_mm[0] / cfg.external.matrix[0]
        kspace = np.stack(
            [
                resize_kspace(remove_readout_oversampling(vol.kspace_slice(i), factor), cfg.external.matrix)
                for i in range(vol.n_slices)
            ]
        )
    if not kspace.any():
        raise DataError(path, KSPACE, ALL_ZERO)
    try:
        images = espirit_combine(
            kspace, oversampling=None, recon_size=None, device=device, source=path, **cfg.espirit
        )
    except (ValueError, RuntimeError) as exc:
        raise DataError(path, "kspace", f"coil combination failed: {exc}") from exc
    images = np.asarray(images, np.complex64)
    if not np.isfinite(images).all():
        raise DataError(path, "kspace", "coil combination produced NaN/Inf")
    return images, pixel_mm


@dataclass
class ExternalSummary:
    store: Path
    n_patches: int
    n_volumes: int
    n_rejected: int
    table: pd.DataFrame
    rejects: pd.DataFrame


def external_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Patches and volumes by class x sequence (the external analogue of Table 1 / paper Table 2)."""
    if not len(manifest):
        return pd.DataFrame(columns=["class", "sequence", "volumes", "patches"])
    g = manifest.groupby(["label", "sequence"])
    table = pd.DataFrame({"volumes": g["volume"].nunique(), "patches": g.size()}).reset_index()
    table = table.rename(columns={"label": "class"})
    total = {
        "class": "Total",
        "sequence": "",
        "volumes": manifest["volume"].nunique(),
        "patches": len(manifest),
    }
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def prepare_external(
    raw_dir: str | Path,
    labels_csv: str | Path,
    out_dir: str | Path,
    *,
    facial_csv: str | Path | None = None,
    cfg: PrepareConfig | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: Callable[[str, str, int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ExternalSummary:
    """Build the external test store (see the module docstring).

    Args:
        progress: called per volume with ``(volume, status, n_patches)``.
    Raises:
        DataError: unreadable labels/facial CSV or missing raw folder (bad volumes are rejected).
    """
    cfg = cfg or PrepareConfig()
    ext = cfg.external
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise DataError(raw_dir, None, "external raw folder does not exist")
    labels = read_external_labels(labels_csv)
    facial = read_facial_slices(facial_csv)
    label_map = {k.lower(): v for k, v in ext.label_map.items()}
    # Not only regular files: a folder named x.h5 or a broken link is rejected by name, not skipped.
    files = {volume_key(p): p for p in sorted(raw_dir.glob("*.h5"))}
    rejects: list[dict[str, str]] = []
    for stem in sorted(set(files) - set(labels["volume"])):
        rejects.append({"file": str(files[stem]), "field": "label", "reason": "volume not in the labels CSV"})
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"stage": "prepare-external", "seed": seed, "config_hash": config_hash(cfg.external, cfg.espirit)}
    rows_all: list[dict[str, Any]] = []
    volume_rows: list[dict[str, Any]] = []
    mask_params = BrainMaskParams(**cfg.brain_mask.model_dump())
    if on_start is not None:
        on_start(len(labels))
    with StoreWriter(
        out_dir / "patches", {"patches": (2, PATCH_SIZE, PATCH_SIZE)}, meta=meta, overwrite=True
    ) as w:
        for rec in labels.sort_values("volume").to_dict("records"):
            stem, raw_label = rec["volume"], rec["label"]
            status, n = "rejected", 0
            if stem not in files:
                rejects.append({"file": stem, "field": "file", "reason": f"not found in {raw_dir}"})
            elif raw_label not in label_map:
                rejects.append(
                    {"file": str(files[stem]), "field": "label", "reason": f"unknown label {raw_label!r}"}
                )
            else:
                start = time.perf_counter()
                try:
                    images, pixel_mm = combine_external(files[stem], cfg, device)
                    images = normalise_slices(images)
                except DataError as exc:
                    log.warning("rejecting %s", exc)
                    rejects.append(
                        {"file": str(files[stem]), "field": exc.field or "", "reason": exc.problem}
                    )
                    images = None
                if images is not None:
                    masks = brain_mask(np.abs(images), mask_params, pixel_mm)
                    skip = facial.get(stem, set())
                    positions = centre_grid_positions(
                        images.shape[1:], PATCH_SIZE, ext.stride, ext.grid, ext.keep
                    )
                    plans = [
                        PatchSpec(s, r, c, label_map[raw_label])
                        for s in range(images.shape[0])
                        if s not in skip
                        for r, c in positions
                    ]
                    rows = [
                        {
                            "patch_id": len(rows_all) + k,
                            "volume": stem,
                            "sequence": rec["sequence"],
                            "label": p.label,
                            "split": "external",
                            "slice": p.slice,
                            "row": p.row,
                            "col": p.col,
                            "box_overlap": 0.0,
                            "source_label": raw_label,
                            "site": "external",
                            "brain_fraction": round(
                                float(
                                    masks[
                                        p.slice, p.row : p.row + PATCH_SIZE, p.col : p.col + PATCH_SIZE
                                    ].mean()
                                ),
                                6,
                            ),
                        }
                        for k, p in enumerate(plans)
                    ]
                    if rows:
                        w.append(rows, patches=extract_patches(images, plans))
                        rows_all += rows
                        status, n = "ok", len(rows)
                    else:
                        rejects.append(
                            {
                                "file": str(files[stem]),
                                "field": "slice",
                                "reason": "every slice is flagged facial",
                            }
                        )
                    volume_rows.append(
                        {
                            "volume": stem,
                            "label": label_map[raw_label],
                            "source_label": raw_label,
                            "sequence": rec["sequence"],
                            "slices": images.shape[0],
                            "facial_slices_skipped": len(skip & set(range(images.shape[0]))),
                            "patches": n,
                            "seconds": round(time.perf_counter() - start, 3),
                        }
                    )
            if progress is not None:
                progress(stem, status, n)
    manifest = pd.DataFrame(rows_all)
    table = external_table(manifest)
    atomic_write_csv(table, out_dir / "table_external.csv")
    md = ["| Class | Sequence | Volumes | Patches |", "|---|---|---:|---:|"]
    md += [
        f"| {r['class']} | {r['sequence']} | {r['volumes']} | {r['patches']} |"
        for r in table.to_dict("records")
    ]
    atomic_write_text("\n".join(md) + "\n", out_dir / "table_external.md")
    atomic_write_csv(pd.DataFrame(volume_rows), out_dir / "volumes.csv")
    reject_frame = pd.DataFrame(rejects, columns=list(REJECT_COLUMNS))
    atomic_write_csv(reject_frame, out_dir / "rejects.csv")
    summary = ExternalSummary(
        out_dir / "patches", len(manifest), len(volume_rows), len(reject_frame), table, reject_frame
    )
    atomic_write_text(
        json.dumps(
            {
                "store": str(summary.store),
                "n_patches": summary.n_patches,
                "n_volumes": summary.n_volumes,
                "n_rejected": summary.n_rejected,
                "table": table.to_dict("records"),
            },
            indent=2,
            default=int,
        ),
        out_dir / "summary.json",
    )
    log.info(
        "external: %d patches from %d volumes (%d rejected)", len(manifest), len(volume_rows), len(rejects)
    )
    return summary
