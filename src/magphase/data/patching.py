"""Patch geometry and sampling rules of the paper (2.1.3): where 96 x 96 patches may be cut.

Everything here works on top-left positions ``(slice, row, col)`` of square ``size x size``
patches on the stored array orientation (rows = readout after cropping, the orientation of
``reconstruction_rss``). A slice of shape ``(H, W)`` has ``(H - size + 1) x (W - size + 1)``
candidate positions. The rules are evaluated exactly, for every candidate position at once, with
summed-area tables (brain-mask fraction) and separable interval overlaps (box coverage), and
positions are then drawn uniformly *without replacement* from the positions that pass. So:

* a patch is kept only if at least ``min_brain_fraction`` of its pixels lie in the brain mask;
* a box-derived patch is drawn uniformly from every position whose patch covers at least
  ``min_box_overlap`` of the box area: the box lands at varying places inside the patch;
* the box patches of a volume are shared between its boxes in proportion to box area;
* "normal" patches of an abnormal volume come from positions touching no box (on the same slice
  or within ``box_slice_margin`` slices of it, because a lesion seen on slice s usually extends
  to its neighbours even where only one slice was annotated).

Randomness comes from the caller's ``numpy.random.Generator`` (seeded per volume by
:func:`magphase.data.prepare.volume_rng`), so a volume's patches do not depend on the order or
the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from magphase.conventions import PATCH_SIZE
from magphase.mri.complex import complex_to_channels


@dataclass(frozen=True)
class PixelBox:
    """An annotation box on the stored array: rows ``[row0, row1)``, columns ``[col0, col1)``."""

    slice: int
    row0: int
    row1: int
    col0: int
    col1: int
    label: str = ""

    @property
    def area(self) -> int:
        return max(0, self.row1 - self.row0) * max(0, self.col1 - self.col0)


@dataclass(frozen=True)
class PatchSpec:
    """One planned patch: top-left ``(row, col)`` on ``slice``, its class and the box it came from.

    ``box_id`` indexes the volume's box list (-1 for patches not derived from a box) and
    ``box_overlap`` is the fraction of that box's area the patch covers (0 otherwise).
    """

    slice: int
    row: int
    col: int
    label: str
    box_id: int = -1
    box_overlap: float = 0.0


def window_fraction(mask: np.ndarray, size: int = PATCH_SIZE) -> np.ndarray:
    """Fraction of ``True`` pixels in every ``size x size`` window of a 2-D mask.

    Args:
        mask: bool ``(H, W)``.
        size: window side.
    Returns:
        float64 ``(H - size + 1, W - size + 1)``; entry ``[r, c]`` is the mean of
        ``mask[r:r+size, c:c+size]``. Empty ``(0, 0)``-sized when the window does not fit.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    if h < size or w < size:
        return np.zeros((max(0, h - size + 1), max(0, w - size + 1)))
    # Summed-area table with a zero row/column in front: window sum = 4 corner look-ups.
    sat = np.zeros((h + 1, w + 1), dtype=np.int64)
    sat[1:, 1:] = mask.cumsum(0).cumsum(1)
    sums = sat[size:, size:] - sat[:-size, size:] - sat[size:, :-size] + sat[:-size, :-size]
    return sums / float(size * size)


def valid_positions(masks: np.ndarray, size: int = PATCH_SIZE, min_fraction: float = 0.8) -> np.ndarray:
    """Positions whose patch lies at least ``min_fraction`` inside the mask, for every slice.

    Args:
        masks: bool ``(S, H, W)`` brain masks.
    Returns:
        bool ``(S, H - size + 1, W - size + 1)``.
    """
    return np.stack([window_fraction(m, size) >= min_fraction - 1e-12 for m in masks])


def _interval_overlap(start_max: int, lo: int, hi: int, size: int) -> np.ndarray:
    """Length of ``[p, p + size) & [lo, hi)`` for every start ``p`` in ``0 .. start_max``."""
    starts = np.arange(start_max + 1)
    return np.clip(np.minimum(starts + size, hi) - np.maximum(starts, lo), 0, None)


def box_coverage(box: PixelBox, shape: tuple[int, int], size: int = PATCH_SIZE) -> np.ndarray:
    """Fraction of the box area covered by the patch at every top-left position of one slice.

    Args:
        box: the box (its slice is ignored here).
        shape: ``(H, W)`` of the slice.
    Returns:
        float64 ``(H - size + 1, W - size + 1)`` in [0, 1]; zeros for an empty box.
    """
    h, w = shape
    if box.area == 0 or h < size or w < size:
        return np.zeros((max(0, h - size + 1), max(0, w - size + 1)))
    rows = _interval_overlap(h - size, box.row0, box.row1, size)
    cols = _interval_overlap(w - size, box.col0, box.col1, size)
    return np.outer(rows, cols) / float(box.area)


def touches_any_box(
    boxes: Sequence[PixelBox],
    shape: tuple[int, int, int],
    size: int = PATCH_SIZE,
    slice_margin: int = 1,
    pixel_margin: int = 0,
) -> np.ndarray:
    """Positions whose patch intersects a box (grown by ``pixel_margin``) within ``slice_margin`` slices.

    Args:
        shape: ``(S, H, W)`` of the volume.
    Returns:
        bool ``(S, H - size + 1, W - size + 1)``.
    """
    s, h, w = shape
    out = np.zeros((s, max(0, h - size + 1), max(0, w - size + 1)), dtype=bool)
    if out.size == 0:
        return out
    for b in boxes:
        grown = PixelBox(
            b.slice,
            max(0, b.row0 - pixel_margin),
            min(h, b.row1 + pixel_margin),
            max(0, b.col0 - pixel_margin),
            min(w, b.col1 + pixel_margin),
        )
        if grown.area == 0:
            continue
        hit = box_coverage(grown, (h, w), size) > 0
        for z in range(max(0, b.slice - slice_margin), min(s, b.slice + slice_margin + 1)):
            out[z] |= hit
    return out


def sample_positions(allowed: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw up to ``n`` distinct positions uniformly from the ``True`` entries of ``allowed``.

    Args:
        allowed: bool ``(S, P, Q)`` (or ``(P, Q)``: then rows of the result have 2 entries).
    Returns:
        int64 ``(k, allowed.ndim)`` with ``k = min(n, allowed.sum())``, in draw order.
    """
    flat = np.flatnonzero(allowed)
    k = min(int(n), flat.size)
    if k <= 0:
        return np.zeros((0, allowed.ndim), dtype=np.int64)
    picked = rng.choice(flat, size=k, replace=False)
    return np.stack(np.unravel_index(picked, allowed.shape), axis=1).astype(np.int64)


def allocate_proportional(
    weights: Sequence[float], total: int, capacity: Sequence[int] | None = None
) -> np.ndarray:
    """Split ``total`` items in proportion to ``weights`` (largest remainder), respecting capacities.

    Whatever a capacity cannot take is handed on to the others in proportion to their weights,
    so the result sums to ``min(total, sum(capacity))``.

    Returns:
        int64 array, one count per weight.
    """
    w = np.asarray(weights, dtype=np.float64)
    cap = np.full(w.shape, max(int(total), 0), dtype=np.int64) if capacity is None else np.asarray(capacity)
    out = np.zeros(w.shape, dtype=np.int64)
    remaining = int(min(total, cap.sum()))
    while remaining > 0:
        open_ = (out < cap) & (w > 0)
        if not open_.any():
            open_ = out < cap
            w = np.where(open_, 1.0, 0.0)
        if not open_.any():
            break
        share = np.where(open_, w, 0.0)
        share = share / share.sum() * remaining
        base = np.floor(share).astype(np.int64)
        # Largest remainders (ties to the earlier index) get the items floor() left over.
        order = np.lexsort((np.arange(w.size), -(share - base)))
        for i in order[: remaining - base.sum()]:
            if open_[i]:
                base[i] += 1
        add = np.minimum(base, cap - out)
        if add.sum() == 0:
            break
        out += add
        remaining -= int(add.sum())
    return out


def plan_random_patches(
    valid: np.ndarray, n: int, label: str, rng: np.random.Generator, exclude: np.ndarray | None = None
) -> list[PatchSpec]:
    """``n`` patches at uniformly random valid positions over all slices (normal/unlabeled volumes).

    Args:
        valid: bool ``(S, P, Q)`` from :func:`valid_positions`.
        exclude: optional bool ``(S, P, Q)`` of forbidden positions (e.g. touching a box).
    """
    allowed = valid if exclude is None else valid & ~exclude
    return [PatchSpec(int(s), int(r), int(c), label) for s, r, c in sample_positions(allowed, n, rng)]


def plan_box_patches(
    valid: np.ndarray,
    boxes: Sequence[PixelBox],
    total: int,
    rng: np.random.Generator,
    *,
    size: int = PATCH_SIZE,
    min_box_overlap: float = 0.25,
    label: str = "abnormal",
) -> list[PatchSpec]:
    """Box-derived patches: ``total`` shared by area between boxes, each at a random shifted position.

    For box ``b`` the candidate positions are those that pass the brain-mask rule (``valid``) and
    whose patch covers at least ``min_box_overlap`` of the box area; its patches are drawn
    uniformly from them without replacement, and a position taken by one box is not reused by
    another. A box with fewer candidates than its share passes the rest on to the other boxes.

    Args:
        valid: bool ``(S, P, Q)``.
        boxes: boxes on the stored array; boxes on slices outside ``0..S-1`` get nothing.
    Returns:
        the planned patches, boxes in order, ``box_id`` = index into ``boxes``.
    """
    s_count, p, q = valid.shape
    shape = (p + size - 1, q + size - 1)
    candidates: list[np.ndarray] = []
    coverages: list[np.ndarray] = []
    for b in boxes:
        if not 0 <= b.slice < s_count or b.area == 0:
            coverages.append(np.zeros((p, q)))
            candidates.append(np.zeros((p, q), dtype=bool))
            continue
        cov = box_coverage(b, shape, size)
        coverages.append(cov)
        candidates.append(valid[b.slice] & (cov >= min_box_overlap - 1e-12))
    taken = np.zeros_like(valid)
    counts = allocate_proportional([b.area for b in boxes], total, [int(c.sum()) for c in candidates])
    plans: list[PatchSpec] = []
    shortfall = 0
    for i, (b, cand, n) in enumerate(zip(boxes, candidates, counts, strict=True)):
        if n == 0:
            continue
        picked = sample_positions(cand & ~taken[b.slice], int(n), rng)
        shortfall += int(n) - len(picked)
        for r, c in picked:
            taken[b.slice, r, c] = True
            plans.append(PatchSpec(b.slice, int(r), int(c), label, i, float(coverages[i][r, c])))
    # Overlapping boxes on one slice may compete for the same positions: hand the rest round-robin.
    while shortfall > 0:
        progressed = False
        for i, (b, cand) in enumerate(zip(boxes, candidates, strict=True)):
            if shortfall == 0:
                break
            if not cand.any():
                continue
            picked = sample_positions(cand & ~taken[b.slice], 1, rng)
            if len(picked):
                r, c = picked[0]
                taken[b.slice, r, c] = True
                plans.append(PatchSpec(b.slice, int(r), int(c), label, i, float(coverages[i][r, c])))
                shortfall -= 1
                progressed = True
        if not progressed:
            break
    return plans


def extract_patches(volume: np.ndarray, plans: Sequence[PatchSpec], size: int = PATCH_SIZE) -> np.ndarray:
    """Cut the planned patches out of a complex volume as two-channel float32 arrays.

    Args:
        volume: complex64 ``(S, H, W)`` (normalised slices).
    Returns:
        float32 ``(n, 2, size, size)``, channel 0 real, 1 imaginary.
    """
    if not plans:
        return np.zeros((0, 2, size, size), dtype=np.float32)
    cut = np.stack([volume[p.slice, p.row : p.row + size, p.col : p.col + size] for p in plans])
    return complex_to_channels(cut.astype(np.complex64))


def grid_starts(length: int, size: int = PATCH_SIZE, stride: int = 75, count: int = 4) -> list[int]:
    """Start offsets of an overlapping grid of ``count`` patches along one axis.

    Starts are ``0, stride, 2 stride, ...``; a start whose patch would run past ``length`` is
    clamped to ``length - size`` (with the paper's 320 / 96 / 75 the last start 225 would end at
    321, one pixel outside, and becomes 224). Only the outermost patches are ever clamped.
    """
    if length < size:
        raise ValueError(f"a {size}-pixel patch does not fit in {length} pixels")
    return [min(i * stride, length - size) for i in range(count)]


def centre_grid_positions(
    shape: tuple[int, int], size: int = PATCH_SIZE, stride: int = 75, count: int = 4, keep: int = 2
) -> list[tuple[int, int]]:
    """Top-left ``(row, col)`` of the ``keep x keep`` centre patches of a ``count x count`` grid.

    With the paper's 320 x 320 / 96 / 75 / 4 grid the kept starts are 75 and 150 on both axes:
    the four patches tile rows and columns 75..245, fully inside the image (no clamping involved).
    """
    rows = grid_starts(shape[0], size, stride, count)
    cols = grid_starts(shape[1], size, stride, count)
    lo = (count - keep) // 2
    return [(r, c) for r in rows[lo : lo + keep] for c in cols[lo : lo + keep]]
