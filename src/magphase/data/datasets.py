"""Torch datasets over the patch and latent stores, and the weights that balance them.

:class:`PatchDataset` reads one split of a patch store lazily (``patches`` ``N x 2 x 96 x 96``, the
sequence index as condition). :class:`LatentFlowDataset` serves latents of a latent store with their
sequence and class tokens, drawing ``z ~ N(mu, sigma^2)`` afresh every time (``latents="posterior"``)
or returning ``mu``; nothing noisy is cached. The ``*_sample_weights`` helpers give per-item weights
for a weighted sampler that balances sequences and, within a sequence, class tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from magphase.conventions import (
    CLASS_TOKEN_INDEX,
    PATCH_SIZE,
    SEQUENCE_INDEX,
    SEQUENCES,
    UNKNOWN_CLASS,
    UNLABELLED_SEQUENCES,
)
from magphase.data.store import MANIFEST_FILE, Store
from magphase.errors import DataError


def _sequence_key(name: str) -> str:
    # "T2-TIRM", "t2_tirm" and "T2TIRM" are one name: case and separators do not matter.
    return "".join(ch for ch in str(name).upper() if ch.isalnum())


def sequence_indices(
    names: Sequence[str], source: Path | None = None, aliases: dict[str, str] | None = None
) -> np.ndarray:
    """FiLM token per manifest sequence name (``SEQUENCE_INDEX``); other names go through ``aliases``.

    Names are compared ignoring case and separators (``T2-TIRM`` matches ``T2TIRM``).

    Raises:
        DataError: a name that is neither a fastMRI sequence nor an alias (names the manifest column).
    """
    known = {_sequence_key(s): SEQUENCE_INDEX[s] for s in SEQUENCES}
    for alias, target in (aliases or {}).items():
        known.setdefault(_sequence_key(alias), SEQUENCE_INDEX[target])
    keys = [_sequence_key(n) for n in names]
    bad = sorted({str(n) for n, k in zip(names, keys, strict=True) if k not in known})
    if bad:
        raise DataError(
            source,
            "sequence",
            f"unknown sequence names {bad}; expected {SEQUENCES} or an alias in autoencoder.sequence_aliases",
        )
    return np.array([known[k] for k in keys], dtype=np.int64)


class PatchDataset(Dataset):
    """One split of a patch store, read lazily: ``dataset[i] = {"x": 2x96x96 float32, "sequence": long}``.

    ``split=None`` takes every item. Batched reads go through :meth:`__getitems__` (one sorted HDF5
    read per batch instead of one per item), which torch's DataLoader uses when present.

    Raises:
        DataError: no ``patches`` array, a wrong patch shape, a manifest without ``sequence``/``split``,
            unknown sequence names, or an empty split.
    """

    def __init__(
        self,
        store: str | Path | Store,
        split: str | None = "train",
        sequence_aliases: dict[str, str] | None = None,
    ):
        self.store = store if isinstance(store, Store) else Store(store)
        shape = self.store.arrays.get("patches")
        if shape is None:
            raise DataError(self.store.path, "patches", "patch store lacks this array")
        if tuple(shape) != (2, PATCH_SIZE, PATCH_SIZE):
            raise DataError(self.store.path, "patches", f"patches have shape {shape}, expected (2, 96, 96)")
        manifest = self.store.manifest
        for col in ("sequence", "split"):
            if col not in manifest.columns:
                raise DataError(self.store.path / MANIFEST_FILE, col, "manifest lacks this column")
        self.indices = self.store.select(split=split) if split is not None else np.arange(len(self.store))
        if self.indices.size == 0:
            raise DataError(self.store.path / MANIFEST_FILE, "split", f"no items in split {split!r}")
        names = manifest["sequence"].astype(str).to_numpy()[self.indices]
        self.sequence_names = names
        self.sequences = sequence_indices(names, self.store.path / MANIFEST_FILE, sequence_aliases)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "x": torch.from_numpy(self.store.read("patches", int(self.indices[i]))),
            "sequence": torch.tensor(self.sequences[i]),
        }

    def __getitems__(self, items: Sequence[int]) -> list[dict[str, Tensor]]:
        items = np.asarray(items, dtype=np.int64)
        patches = torch.from_numpy(self.store.read("patches", self.indices[items]))
        seqs = torch.from_numpy(self.sequences[items])
        return [{"x": patches[k], "sequence": seqs[k]} for k in range(len(items))]


def random_flips(x: Tensor) -> Tensor:
    """Flip each ``B x C x H x W`` item up/down and left/right, each with probability 1/2 (torch RNG).

    Flips move pixels, not values, so magnitude and phase of every pixel are kept.
    """
    b = x.shape[0]
    flip_rows = torch.rand(b, device=x.device) < 0.5
    flip_cols = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip_rows[:, None, None, None], x.flip(-2), x)
    return torch.where(flip_cols[:, None, None, None], x.flip(-1), x)


def class_tokens(
    sequences: np.ndarray, labels: np.ndarray, unknown_sequences: tuple[str, ...] = UNLABELLED_SEQUENCES
) -> np.ndarray:
    """Stage-2 class token per sample: normal / abnormal, or unknown for unlabeled samples and for
    samples of ``unknown_sequences`` (whose labels are not used, paper Sec. 2.3.2)."""
    out = np.full(len(labels), UNKNOWN_CLASS, dtype=np.int64)
    labelled = ~np.isin(sequences, list(unknown_sequences))
    for name in ("normal", "abnormal"):
        out[labelled & (labels == name)] = CLASS_TOKEN_INDEX[name]
    return out


class LatentFlowDataset(Dataset):
    """Items of a latent store for flow training, read lazily.

    ``dataset[i]`` is a dict: ``mu`` and ``logvar`` float32 ``C x S x S`` (the posterior; the paper's
    autoencoder gives ``2 x 48 x 48``),
    ``sequence`` (long, ``SEQUENCE_INDEX``) and ``class_token`` (long, ``CLASS_TOKEN_INDEX``;
    see :func:`class_tokens`). The noisy draw ``z`` is made in the task's loss, fresh every step.

    Raises:
        DataError: missing ``mu``/``logvar`` arrays, wrong latent shape, unknown sequence names or
            labels, or no items in ``split``.
    """

    def __init__(
        self,
        store: str | Path | Store,
        split: str | None = "train",
        unknown_sequences: tuple[str, ...] = UNLABELLED_SEQUENCES,
        latent_shape: tuple[int, ...] | None = None,
    ):
        self.store = store if isinstance(store, Store) else Store(store)
        for name in ("mu", "logvar"):
            if name not in self.store.arrays:
                raise DataError(self.store.path, name, "latent store lacks this array")
            shape = self.store.arrays[name]
            if latent_shape is not None and shape != tuple(latent_shape):
                raise DataError(self.store.path, name, f"latents have shape {shape}, expected {latent_shape}")
            if len(shape) != 3 or shape[-1] != shape[-2] or shape != self.store.arrays["mu"]:
                raise DataError(self.store.path, name, f"latents must be C x S x S like mu, got {shape}")
        self.latent_shape: tuple[int, int, int] = tuple(self.store.arrays["mu"])  # type: ignore[assignment]
        manifest = self.store.manifest
        for col in ("sequence", "label", "split"):
            if col not in manifest.columns:
                raise DataError(self.store.path / MANIFEST_FILE, col, "manifest lacks this column")
        self.split = split
        self.indices = self.store.select(split=split) if split is not None else np.arange(len(self.store))
        if self.indices.size == 0:
            raise DataError(self.store.path / MANIFEST_FILE, "split", f"no items in split {split!r}")
        rows = manifest.iloc[self.indices]
        seqs = rows["sequence"].astype(str).to_numpy()
        bad = sorted(set(seqs) - set(SEQUENCES))
        if bad:
            raise DataError(self.store.path / MANIFEST_FILE, "sequence", f"unknown sequence names {bad}")
        labels = rows["label"].astype(str).to_numpy()
        bad = sorted(set(labels) - {"normal", "abnormal", "unlabeled"})
        if bad:
            raise DataError(self.store.path / MANIFEST_FILE, "label", f"unknown labels {bad}")
        self.sequence_names = seqs
        self.labels = labels
        self.sequences = np.array([SEQUENCE_INDEX[s] for s in seqs], dtype=np.int64)
        self.class_tokens = class_tokens(seqs, labels, tuple(unknown_sequences))

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        j = int(self.indices[i])
        return {
            "mu": torch.from_numpy(self.store.read("mu", j)),
            "logvar": torch.from_numpy(self.store.read("logvar", j)),
            "sequence": torch.tensor(self.sequences[i]),
            "class_token": torch.tensor(self.class_tokens[i]),
        }


def balanced_weights(groups: list[np.ndarray], levels: int) -> np.ndarray:
    """Sampling weights making groups equally likely, hierarchically.

    ``groups[0]`` is the outer key (e.g. sequence), ``groups[1]`` the inner key (e.g. class token)
    nested in it. With ``levels = 1`` every outer group gets the same total weight; with
    ``levels = 2`` additionally every inner group present within an outer group gets the same share.
    Weights sum to 1.
    """
    n = len(groups[0])
    w = np.ones(n, dtype=np.float64)
    outer = groups[0]
    outer_vals = np.unique(outer)
    for o in outer_vals:
        sel = outer == o
        if levels >= 2:
            inner = groups[1][sel]
            inner_vals, counts = np.unique(inner, return_counts=True)
            share = {v: 1.0 / (len(inner_vals) * c) for v, c in zip(inner_vals, counts, strict=True)}
            w[sel] = np.array([share[v] for v in inner]) / len(outer_vals)
        else:
            w[sel] = 1.0 / (sel.sum() * len(outer_vals))
    return w / w.sum()


def stage1_sample_weights(dataset: LatentFlowDataset, balance_sequences: bool) -> np.ndarray | None:
    """Stage-1 weights: None (uniform) or every sequence equally often."""
    return balanced_weights([dataset.sequences], 1) if balance_sequences else None


def stage2_sample_weights(
    dataset: LatentFlowDataset, balance_sequences: bool = True, balance_classes: bool = True
) -> np.ndarray | None:
    """Stage-2 weights: sequences equally often and, within each, every class token equally often
    (normal and abnormal balanced in the labelled sequences). None when neither is asked for."""
    if balance_sequences and balance_classes:
        return balanced_weights([dataset.sequences, dataset.class_tokens], 2)
    if balance_sequences:
        return balanced_weights([dataset.sequences], 1)
    if balance_classes:
        return balanced_weights([dataset.class_tokens], 1)
    return None


def canonical_latents(dataset: LatentFlowDataset) -> bool:
    """Whether the latent store holds phase-canonical patches (``meta.json`` ``canonical_phase``)."""
    return bool(dataset.store.meta.get("canonical_phase", False))
