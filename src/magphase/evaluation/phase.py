"""Phase statistics of generated phases against real ones and honest baselines (PhaseGen evaluation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from magphase.data.store import Store
from magphase.errors import DataError
from magphase.mri.complex import channels_to_complex
from magphase.utils.seeds import derived_rng


def patch_phase_smoothness(patches: np.ndarray, border: int | None = None) -> np.ndarray:
    """Per patch, the magnitude-weighted coherence of neighbouring phase differences, in [0, 1].

    ``R = |sum w exp(i (phi(r + d) - phi(r)))| / sum w`` over horizontal and vertical neighbours, with
    ``w = m(r) m(r + d)``: ``x(r + d) conj(x(r))`` carries both weight and phase difference. 1: locally flat
    phase; ~0: phase unrelated between neighbours. ``border=b`` counts only the neighbour pairs with both
    pixels within ``b`` pixels of the patch edge (where a network's padding or pooling shows).
    """
    z = channels_to_complex(patches).astype(np.complex128)  # sums over many pixels: double precision
    h, w = z.shape[-2:]
    band = None
    if border is not None:
        if border < 1 or 2 * border >= min(h, w):
            raise ValueError(f"border must be in [1, {min(h, w) // 2 - 1}], got {border}")
        band = np.ones((h, w), dtype=bool)
        band[border:-border, border:-border] = False
    num = den = 0.0
    for a, b, pairs in (
        (z[:, :, 1:], z[:, :, :-1], (np.s_[:, 1:], np.s_[:, :-1])),
        (z[:, 1:, :], z[:, :-1, :], (np.s_[1:, :], np.s_[:-1, :])),
    ):
        prod = a * np.conj(b)
        if band is not None:
            prod = prod * (band[pairs[0]] & band[pairs[1]])
        num += prod.sum(axis=(1, 2))
        den += np.abs(prod).sum(axis=(1, 2))
    return np.abs(num) / np.maximum(den, 1e-12)


def phase_smoothness(patches: np.ndarray) -> float:
    """Mean of :func:`patch_phase_smoothness` over the patches."""
    return float(np.mean(patch_phase_smoothness(patches)))


def phase_agreement(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per patch, how well two phases of the same magnitude agree, up to a global offset: in [0, 1].

    ``|sum m^2 exp(i (phi_g - phi_r))| / sum m^2``: 1 when the phases differ by a constant, ~0 when unrelated.
    ``generated`` and ``real`` are ``N x 2 x H x W`` (real, imaginary) with the same magnitudes.
    """
    g = channels_to_complex(generated).astype(np.complex128)
    r = channels_to_complex(real).astype(np.complex128)
    prod = g * np.conj(r)  # |g||r| = m^2, angle = phi_g - phi_r
    return np.abs(prod.sum(axis=(1, 2))) / np.maximum(np.abs(prod).sum(axis=(1, 2)), 1e-12)


def constant_phase(real: np.ndarray) -> np.ndarray:
    """The baseline "no phase model": the real magnitudes with phase 0 (``N x 2 x H x W``)."""
    return np.stack([np.hypot(real[:, 0], real[:, 1]), np.zeros_like(real[:, 0])], axis=1)


def random_phase(real: np.ndarray, seed: int = 0, start: int = 0) -> np.ndarray:
    """The baseline "noise phase": the real magnitudes with i.i.d. uniform phase per pixel.

    Patch ``j`` draws from a generator seeded by ``(seed, start + j)`` (independent of chunking).
    """
    m = np.hypot(real[:, 0], real[:, 1])
    phi = np.stack(
        [derived_rng(seed, start + j).uniform(-np.pi, np.pi, size=m.shape[1:]) for j in range(len(m))]
    )
    return np.stack([m * np.cos(phi), m * np.sin(phi)], axis=1).astype(np.float32)


#: Width (pixels) of the edge band of ``border_smoothness_*`` in :func:`evaluate_phasegen`.
BORDER = 2


_PHASE_STATS = (
    "smoothness_real",
    "smoothness_phasegen",
    "smoothness_random",
    "border_smoothness_real",
    "border_smoothness_phasegen",
    "agreement_phasegen",
    "agreement_constant",
)


def evaluate_phasegen(
    synthetic: str | Path | Store, real: str | Path | Store | None = None, *, chunk: int = 256
) -> pd.DataFrame:
    """Phase statistics of a PhaseGen store against the real patches it took its magnitudes from.

    Per sequence (and ``all``): ``n``; ``smoothness`` (:func:`phase_smoothness`) of the real, PhaseGen, and
    random-phase patches, and of the real and PhaseGen patches within :data:`BORDER` pixels of the edge
    (``border_smoothness_*``); ``agreement`` (:func:`phase_agreement`, mean over patches) of PhaseGen and of
    the constant-phase baseline with the real phase. A good phase model is as smooth as the real phase
    and agrees with it better than a constant phase (which only captures the mean phase).

    Raises:
        DataError: the synthetic store has no ``source_patch_id`` or names patches the real store lacks.
    """
    syn = synthetic if isinstance(synthetic, Store) else Store(synthetic)
    src = real if real is not None else syn.meta.get("source")
    if src is None:
        raise DataError(syn.path, "source", "no real store given and none recorded in meta.json")
    src = src if isinstance(src, Store) else Store(src)
    if "source_patch_id" not in syn.manifest.columns:
        raise DataError(syn.path, "source_patch_id", "not a PhaseGen store (manifest lacks this column)")
    pos = pd.Series(np.arange(len(src)), index=src.manifest["patch_id"].astype(str))
    ids = syn.manifest["source_patch_id"].astype(str)
    missing = sorted(set(ids) - set(pos.index))
    if missing:
        raise DataError(src.path, "patch_id", f"{len(missing)} source patches missing, e.g. {missing[:3]}")
    # Per-patch values in chunks (a real-data store does not fit in memory twice), then means per sequence.
    cols: dict[str, list[np.ndarray]] = {k: [] for k in _PHASE_STATS}
    src_idx = pos[ids].to_numpy()
    for a in range(0, len(syn), chunk):
        g = syn.read("patches", np.arange(a, min(a + chunk, len(syn))))
        r = src.read("patches", src_idx[a : a + chunk])
        cols["smoothness_real"].append(patch_phase_smoothness(r))
        cols["smoothness_phasegen"].append(patch_phase_smoothness(g))
        cols["smoothness_random"].append(patch_phase_smoothness(random_phase(r, start=a)))
        cols["border_smoothness_real"].append(patch_phase_smoothness(r, border=BORDER))
        cols["border_smoothness_phasegen"].append(patch_phase_smoothness(g, border=BORDER))
        cols["agreement_phasegen"].append(phase_agreement(g, r))
        cols["agreement_constant"].append(phase_agreement(constant_phase(r), r))
    per_patch = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    per_patch.insert(0, "sequence", syn.manifest["sequence"].astype(str).to_numpy())
    rows = []
    for seq in [*sorted(set(per_patch["sequence"])), "all"]:
        part = per_patch if seq == "all" else per_patch[per_patch["sequence"] == seq]
        rows.append({"sequence": seq, "n": len(part), **{k: float(part[k].mean()) for k in _PHASE_STATS}})
    return pd.DataFrame(rows)


def phasegen_markdown(table: pd.DataFrame) -> str:
    """The :func:`evaluate_phasegen` table as Markdown."""
    lines = [
        "| Sequence | n | smoothness real | smoothness PhaseGen | smoothness random | border real "
        "| border PhaseGen | agreement PhaseGen | agreement constant |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.sequence} | {r.n} | {r.smoothness_real:.3f} | {r.smoothness_phasegen:.3f} "
            f"| {r.smoothness_random:.3f} | {r.border_smoothness_real:.3f} "
            f"| {r.border_smoothness_phasegen:.3f} "
            f"| {r.agreement_phasegen:.3f} | {r.agreement_constant:.3f} |"
        )
    return "\n".join(lines) + "\n"
