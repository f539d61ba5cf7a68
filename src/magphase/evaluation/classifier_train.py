"""Training and applying the evaluation classifier through the shared engine (paper 2.4).

Pieces:

- :class:`ArraySource` / :class:`ItemSet`: which rows of which store array form a labelled set (targets 0/1).
  A source holds its rows in memory when the experiment's arrays fit ``preload_max_bytes`` (one read
  shared by every configuration and run), otherwise it reads lazily per item.
- :class:`ClassifierTask`: the :class:`~magphase.training.TrainTask` — optional posterior draw
  ``z = mu + sigma * eps`` (fresh every batch, never cached), patch augmentation, input mode (complex
  ``[real, imag]`` or magnitude-only ``[|x|, 0]``), mixup, binary cross-entropy on the logit.
- :func:`train_classifier`: class-balanced sampling (weights ``1 / class count``) through
  :func:`magphase.training.fit` with the cosine schedule and EMA of :class:`TrainSettings`.
- :func:`predict_probabilities`: sigmoid outputs of the EMA model, batched, deterministic.
- :func:`train_with_recipe` / :func:`recipe_hash`: one classifier run of an experiment (``cfg.realfake`` or
  ``cfg.downstream``) with the shared recipe of :class:`EvaluationConfig`, and the hash its result rows carry.
- :class:`ResultsFile`: the resumable results CSV (a finished (config, run) row is never recomputed).
- :func:`select_candidate` / :func:`write_selection`: checkpoint selection from per-candidate scores.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from magphase.config.evaluation import (
    AugmentConfig,
    ClassifierConfig,
    DownstreamConfig,
    EvaluationConfig,
    RealFakeConfig,
)
from magphase.config.training import TrainSettings
from magphase.data.augment import augment_batch
from magphase.data.store import Store
from magphase.errors import DataError
from magphase.models.classifier import ResNetSEClassifier, build_classifier, default_stem_stride
from magphase.models.weights import load_ema_into, read_weights_metadata
from magphase.mri.complex import magnitude_phase
from magphase.training import ProgressEvent, TrainResult, TrainTaskBase, fit
from magphase.training.checkpoint import CHECKPOINT_NAME
from magphase.training.distributed import barrier, is_main_process
from magphase.utils.atomic import atomic_write_csv, atomic_write_text
from magphase.utils.seeds import derived_rng

log = logging.getLogger(__name__)

InputMode = Literal["complex", "magnitude"]
INPUT_MODES: tuple[str, ...] = ("complex", "magnitude")
#: The config section of one experiment: ``EvaluationConfig.realfake`` or ``EvaluationConfig.downstream``.
ExperimentConfig = RealFakeConfig | DownstreamConfig


# ------------------------------------------------------------------------------------------ data
class ArraySource:
    """Rows of one array of one store, read lazily or held in memory.

    Args:
        store: a :class:`Store` or its path.
        array: array name (``patches``, ``mu``, ``logvar``, ...).
        preload_rows: rows to read once into memory (others are still readable lazily).
    """

    def __init__(self, store: Store | str | Path, array: str, preload_rows: np.ndarray | None = None):
        self.store = store if isinstance(store, Store) else Store(store)
        if array not in self.store.arrays:
            raise DataError(self.store.path, array, f"array missing (store has {sorted(self.store.arrays)})")
        self.array = array
        self.item_shape: tuple[int, ...] = tuple(self.store.arrays[array])
        self._rows: np.ndarray | None = None
        self._data: np.ndarray | None = None
        if preload_rows is not None:
            rows = np.unique(np.asarray(preload_rows, dtype=np.int64))
            self._rows = rows
            self._data = self.store.read(array, rows)

    @property
    def preloaded(self) -> bool:
        return self._data is not None

    def item_bytes(self) -> int:
        return 4 * int(np.prod(self.item_shape))

    def read(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """float32 ``len(rows) x item_shape``."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._rows is not None and self._data is not None and rows.size:
            pos = np.searchsorted(self._rows, rows)
            pos_c = np.minimum(pos, len(self._rows) - 1)
            if np.all(self._rows[pos_c] == rows):
                return self._data[pos_c]
        return self.store.read(self.array, rows)

    def read_one(self, row: int) -> np.ndarray:
        if self._rows is not None and self._data is not None:
            pos = int(np.searchsorted(self._rows, row))
            if pos < len(self._rows) and self._rows[pos] == row:
                return self._data[pos]
        return self.store.read(self.array, int(row))


def open_source(
    store: Store | str | Path, array: str, rows: np.ndarray | None, max_bytes: int
) -> ArraySource:
    """An :class:`ArraySource` preloaded with ``rows`` when they fit in ``max_bytes`` (lazy otherwise)."""
    src = ArraySource(store, array)
    if rows is None:
        return src
    n = int(np.unique(np.asarray(rows, dtype=np.int64)).size)
    if n * src.item_bytes() <= max_bytes:
        return ArraySource(src.store, array, preload_rows=rows)
    log.info("%s/%s: %d items exceed preload_max_bytes; reading lazily", src.store.path, array, n)
    return src


@dataclass(frozen=True)
class ItemSet:
    """A labelled set of store rows.

    Attributes:
        source: where the inputs come from (``C x H x W`` float32 per row).
        rows: store rows (int64).
        targets: 0/1 per row (float32): 1 = positive class (synthetic, abnormal).
        logvar: optional source of log-variances with the input's shape: training draws
            ``z = x + exp(logvar / 2) * eps`` afresh every batch (real latents in posterior mode).
        name: free label for logs.
    """

    source: ArraySource
    rows: np.ndarray
    targets: np.ndarray
    logvar: ArraySource | None = None
    name: str = ""

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows, dtype=np.int64)
        targets = np.broadcast_to(np.asarray(self.targets, dtype=np.float32), rows.shape).copy()
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "targets", targets)

    def __len__(self) -> int:
        return int(self.rows.size)


def constant_items(
    source: ArraySource, rows: np.ndarray, target: float, logvar: ArraySource | None = None, name: str = ""
) -> ItemSet:
    """An :class:`ItemSet` whose rows all carry ``target``."""
    rows = np.asarray(rows, dtype=np.int64)
    return ItemSet(source, rows, np.full(rows.size, target, np.float32), logvar, name)


class ClassifierDataset(Dataset):
    """Concatenation of item sets; item ``i`` is ``{"x": C x H x W, "y": scalar[, "std": C x H x W]}``.

    ``std`` (``exp(logvar / 2)``, zeros for sets without log-variances) is present when any set has one.
    """

    def __init__(self, parts: Sequence[ItemSet]):
        parts = [p for p in parts if len(p)]
        if not parts:
            raise DataError("classifier dataset", "rows", "no items")
        shapes = {p.source.item_shape for p in parts}
        if len(shapes) != 1:
            raise DataError(
                parts[0].source.store.path, parts[0].source.array, f"item shapes differ: {shapes}"
            )
        self.parts = parts
        self.item_shape: tuple[int, ...] = shapes.pop()
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.with_std = any(p.logvar is not None for p in parts)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def targets(self) -> np.ndarray:
        return np.concatenate([p.targets for p in self.parts])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        part = self.parts[k]
        row = int(part.rows[i - self.offsets[k]])
        item = {
            "x": torch.from_numpy(np.array(part.source.read_one(row), dtype=np.float32)),
            "y": torch.tensor(float(part.targets[i - self.offsets[k]]), dtype=torch.float32),
        }
        if self.with_std:
            if part.logvar is None:
                item["std"] = torch.zeros(self.item_shape, dtype=torch.float32)
            else:
                item["std"] = torch.from_numpy(np.exp(0.5 * part.logvar.read_one(row)).astype(np.float32))
        return item


def class_balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Per-item weights ``1 / count(class)``: both classes are drawn equally often.

    Raises:
        DataError: one class is missing (a binary classifier cannot be trained).
    """
    t = np.asarray(targets)
    classes, counts = np.unique(t, return_counts=True)
    if classes.size < 2:
        raise DataError("training set", "targets", f"only one class present ({classes.tolist()})")
    weight_of = dict(zip(classes.tolist(), (1.0 / counts).tolist(), strict=True))
    return np.array([weight_of[v] for v in t.tolist()], dtype=np.float64)


# ------------------------------------------------------------------------------------------ task
def prepare_input(x: Tensor, input_mode: str) -> Tensor:
    """Network input from ``B x 2 x H x W`` ``[real, imag]``: unchanged (complex) or ``[|x|, 0]`` (magnitude).

    The magnitude-only input keeps two channels (the second all zeros) so the ablation trains exactly the
    same network, parameter for parameter; only the phase information is removed.
    """
    if input_mode == "complex":
        return x
    if input_mode == "magnitude":
        mag, _ = magnitude_phase(x, axis=1)
        return torch.stack([mag, torch.zeros_like(mag)], dim=1).to(x.dtype)
    raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")


def mixup(x: Tensor, y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al. 2018): ``lam x + (1 - lam) x[perm]`` with ``lam ~ Beta(alpha, alpha)``.

    One ``lam`` per batch, drawn with torch's global CPU generator (seeded and checkpointed by the engine).
    Mixing complex images with a real weight keeps them complex images. ``alpha <= 0`` returns the inputs.
    """
    if alpha <= 0:
        return x, y
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0]).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], lam * y + (1.0 - lam) * y[perm]


class ClassifierTask(TrainTaskBase):
    """Binary classification task for :func:`magphase.training.fit`.

    Args:
        network: classifier sizes.
        input_shape: ``(C, H, W)`` of the stored items.
        mixup_alpha: mixup Beta parameter (0: off).
        augment: patch augmentation (None: off).
        input_mode: ``complex`` or ``magnitude``.
    """

    def __init__(
        self,
        network: ClassifierConfig,
        input_shape: tuple[int, ...],
        *,
        mixup_alpha: float = 0.2,
        augment: AugmentConfig | None = None,
        input_mode: str = "complex",
    ):
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        self.network = network
        self.input_shape = tuple(int(s) for s in input_shape)
        self.mixup_alpha = float(mixup_alpha)
        self.augment = augment
        self.input_mode = input_mode

    def model_config(self) -> dict[str, Any]:
        size = max(self.input_shape[-2:])
        return {
            "arch": "resnet_se",
            "in_channels": int(self.input_shape[0]),
            "widths": list(self.network.widths),
            "blocks": list(self.network.blocks),
            "se_reduction": self.network.se_reduction,
            "stem_stride": self.network.stem_stride or default_stem_stride(size),
            "dropout": self.network.dropout,
            "pooling": self.network.pooling,
            "canonical_phase": self.network.canonical_phase,
            "input_shape": list(self.input_shape),
            "input_mode": self.input_mode,
        }

    def build_model(self) -> nn.Module:
        return build_classifier(self.model_config())

    def inputs(self, batch: Mapping[str, Tensor], train: bool) -> Tensor:
        """Network input of a batch: posterior draw, augmentation (training only), input mode."""
        x = batch["x"]
        if train and "std" in batch:
            x = x + batch["std"] * torch.randn_like(x)
        if train and self.augment is not None:
            x = augment_batch(x, self.augment)
        return prepare_input(x, self.input_mode)

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.inputs(batch, train=True)
        y = batch["y"].float()
        x, y_mix = mixup(x, y, self.mixup_alpha)
        logits = model(x).float()
        loss = F.binary_cross_entropy_with_logits(logits, y_mix)
        accuracy = ((logits.detach() > 0).float() == y).float().mean()
        return loss, {"accuracy": accuracy}


# ------------------------------------------------------------------------------------------ train / predict
def train_classifier(
    train_items: Sequence[ItemSet],
    out_dir: str | Path,
    *,
    network: ClassifierConfig,
    settings: TrainSettings,
    mixup_alpha: float = 0.2,
    augment: AugmentConfig | None = None,
    input_mode: str = "complex",
    balance_classes: bool = True,
    resume: bool = True,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> TrainResult:
    """Train one classifier on ``train_items`` (targets 0/1) in ``out_dir`` through the shared engine.

    Sampling is class-balanced (weights ``1 / class count``) unless ``balance_classes`` is False. The
    learning-rate schedule, EMA, seed and device come from ``settings`` (call ``settings.resolved`` first).
    With ``resume`` an interrupted run continues from ``out_dir/checkpoint.pt``; a finished one returns at
    once with its EMA weights.

    Returns:
        The engine's :class:`TrainResult`; evaluate ``result.ema_model``.
    """
    dataset = ClassifierDataset(train_items)
    weights = class_balanced_weights(dataset.targets) if balance_classes else None
    task = ClassifierTask(
        network, dataset.item_shape, mixup_alpha=mixup_alpha, augment=augment, input_mode=input_mode
    )
    return fit(task, dataset, settings, out_dir, resume=resume, sample_weights=weights, progress=progress)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    items: ItemSet | Sequence[ItemSet],
    *,
    input_mode: str = "complex",
    batch_size: int = 256,
    posterior_seed: int = 0,
) -> np.ndarray:
    """Sigmoid probabilities ``(N,)`` (float64) of the concatenated item sets, in their order.

    Sets with log-variances are scored on ONE fixed draw ``x + sigma * eps`` per item (eps from a numpy
    generator seeded by ``(posterior_seed, set index)``), so every classifier sees the same test inputs.
    The model runs in eval mode on its own device, in float32.
    """
    parts = [items] if isinstance(items, ItemSet) else list(items)
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    out: list[np.ndarray] = []
    try:
        for k, part in enumerate(parts):
            rng = derived_rng(posterior_seed, k)
            for s in range(0, len(part), batch_size):
                rows = part.rows[s : s + batch_size]
                x = part.source.read(rows)
                if part.logvar is not None:
                    std = np.exp(0.5 * part.logvar.read(rows))
                    x = x + std * rng.standard_normal(x.shape).astype(np.float32)
                xt = prepare_input(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), input_mode)
                logits = model(xt.to(param.device, torch.float32)).float()
                out.append(torch.sigmoid(logits).cpu().numpy().astype(np.float64))
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float64)


def load_trained_classifier(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[ResNetSEClassifier, dict]:
    """Rebuild a trained classifier from its run folder (``ema.safetensors``) with its model config."""
    meta = read_weights_metadata(run_dir)
    config = dict(meta["model_config"])
    model = build_classifier(config).to(device)
    load_ema_into(model, run_dir)
    return model.eval(), config


def run_settings(train: TrainSettings, seed: int, device: str | None) -> TrainSettings:
    """``train`` with this run's seed; ``device`` overrides the configured device (None: keep, else auto)."""
    update: dict[str, Any] = {"seed": int(seed)}
    if device is not None:
        update["device"] = device
    elif train.device is None:
        update["device"] = "auto"
    return train.model_copy(update=update)


RUN_HASH_NAME = "settings_hash.txt"


def claim_run_dir(run_dir: str | Path, row_hash: str | None) -> bool:
    """Whether a classifier run folder may be resumed: it was started with the same settings hash.

    Writes ``settings_hash.txt`` (rank 0) so an interrupted run resumes later; a folder started under
    other settings is retrained from scratch (``resume=False`` replaces its checkpoint and metrics).
    """
    run_dir = Path(run_dir)
    marker = run_dir / RUN_HASH_NAME
    same = row_hash is None or (marker.is_file() and marker.read_text().strip() == row_hash)
    if not same and is_main_process():
        atomic_write_text(f"{row_hash}\n", marker)
    barrier()
    return same


def drop_checkpoint(run_dir: str | Path) -> None:
    """Delete a finished run's ``checkpoint.pt`` (the EMA weights stay): saves disk over many runs."""
    (Path(run_dir) / CHECKPOINT_NAME).unlink(missing_ok=True)


def train_with_recipe(
    items: Sequence[ItemSet],
    run_dir: Path,
    cfg: EvaluationConfig,
    experiment: ExperimentConfig,
    *,
    run_seed: int,
    device: str | None,
    row_hash: str | None,
    input_mode: str = "complex",
) -> tuple[TrainResult, float]:
    """Train one classifier of ``experiment`` (``cfg.realfake`` or ``cfg.downstream``) in ``run_dir``.

    The recipe is shared by both experiments: ``cfg``'s network, mixup, class balancing and augmentation
    (when ``experiment.augment``), with ``experiment.train`` at ``run_seed``. The folder is resumed only
    when it was started under ``row_hash`` (:func:`claim_run_dir`).

    Returns:
        The engine's result (evaluate ``result.ema_model``) and the wall time of the call in seconds.
    """
    t0 = time.perf_counter()
    result = train_classifier(
        items,
        run_dir,
        network=cfg.classifier,
        settings=run_settings(experiment.train, run_seed, device),
        mixup_alpha=cfg.mixup_alpha,
        augment=cfg.augment if experiment.augment else None,
        input_mode=input_mode,
        balance_classes=cfg.balance_classes,
        resume=claim_run_dir(run_dir, row_hash),
    )
    return result, time.perf_counter() - t0


def finish_run(run_dir: Path, cfg: EvaluationConfig) -> None:
    """After a run is scored: drop its resumable checkpoint unless ``cfg.keep_checkpoints`` (rank 0)."""
    if not cfg.keep_checkpoints and is_main_process():
        drop_checkpoint(run_dir)


# ------------------------------------------------------------------------------------------ results
#: TrainSettings fields that do not change a trained classifier (bookkeeping, workers, device).
_HASH_FREE_TRAIN_FIELDS = {
    "checkpoint_every",
    "keep_every",
    "log_every",
    "num_workers",
    "device",
    "deterministic",
}


def settings_hash(*parts: Any) -> str:
    """Short stable hash of the settings that determine a result row (pydantic models, dicts, scalars).

    ``TrainSettings`` enter without their bookkeeping fields (checkpoint/log cadence, workers, device), so
    moving a run to a GPU or changing its logging does not invalidate finished rows.
    """
    from magphase.config import config_hash

    cleaned: list[Any] = []
    for p in parts:
        if isinstance(p, TrainSettings):
            cleaned.append(p.model_dump(mode="json", exclude=_HASH_FREE_TRAIN_FIELDS))
        else:
            cleaned.append(p)
    return config_hash(*cleaned)


def recipe_hash(cfg: EvaluationConfig, experiment: ExperimentConfig, *parts: Any) -> str:
    """:func:`settings_hash` of the recipe :func:`train_with_recipe` uses, followed by ``parts``."""
    return settings_hash(
        cfg.classifier,
        cfg.mixup_alpha,
        cfg.balance_classes,
        cfg.augment if experiment.augment else None,
        experiment.train,
        *parts,
    )


def store_fingerprint(store: Store | str | Path | None) -> str | None:
    """Identity of a store's content for :func:`settings_hash`: its ``meta.json`` (count, arrays, provenance).

    Independent of where the store lives, so moving a run folder keeps finished rows; a regenerated store
    (other weights, seed or guidance) has other provenance and invalidates them.
    """
    if store is None:
        return None
    st = store if isinstance(store, Store) else Store(store)
    from magphase.config import config_hash

    return config_hash(st.meta)


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof = 1; 0 for a single value) and count of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _key_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


@dataclass
class ResultsFile:
    """A results CSV keyed by ``key_columns``; every append rewrites it atomically (rank 0 only).

    A row whose key is present is finished: callers check :meth:`has` before training, so an interrupted
    experiment resumes where it stopped and a finished one recomputes nothing. With ``settings_hash``
    every appended row records it, and rows written under other settings are dropped on load (logged), so
    a changed recipe is recomputed instead of mixed with old numbers.
    """

    path: Path
    key_columns: tuple[str, ...]
    settings_hash: str | None = None
    _frame: pd.DataFrame = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.is_file() and self.path.stat().st_size > 0:
            self._frame = pd.read_csv(self.path, keep_default_na=True)
            missing = [c for c in self.key_columns if c not in self._frame.columns]
            if missing:
                raise DataError(self.path, missing[0], "results file lacks a key column")
            if self.settings_hash is not None:
                recorded = (
                    self._frame["settings_hash"].astype(str)
                    if "settings_hash" in self._frame.columns
                    else pd.Series("", index=self._frame.index)
                )
                stale = (recorded != self.settings_hash).to_numpy()
                if stale.any():
                    log.warning(
                        "%s: %d rows were computed with other settings; they will be recomputed",
                        self.path,
                        int(stale.sum()),
                    )
                    self._frame = self._frame[~stale].reset_index(drop=True)
        else:
            self._frame = pd.DataFrame(columns=list(self.key_columns))

    def _keys(self) -> set[tuple[str, ...]]:
        return {
            tuple(_key_text(v) for v in row)
            for row in self._frame[list(self.key_columns)].itertuples(index=False, name=None)
        }

    def has(self, **key: Any) -> bool:
        """Whether a row with exactly this key is recorded."""
        want = tuple(_key_text(key[c]) for c in self.key_columns)
        return want in self._keys()

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add rows (replacing any with the same key) and rewrite the file atomically."""
        if not rows:
            return
        extra = {"settings_hash": self.settings_hash} if self.settings_hash is not None else {}
        new = pd.DataFrame([{**dict(r), **extra} for r in rows])
        new_keys = {tuple(_key_text(r[c]) for c in self.key_columns) for r in rows}
        if len(self._frame):
            old_keys = [
                tuple(_key_text(v) for v in row)
                for row in self._frame[list(self.key_columns)].itertuples(index=False, name=None)
            ]
            keep = np.array([k not in new_keys for k in old_keys], dtype=bool)
            frame = pd.concat([self._frame[keep], new], ignore_index=True) if keep.any() else new
        else:
            frame = new
        self._frame = frame
        if is_main_process():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_csv(frame, self.path)
        barrier()

    def frame(self) -> pd.DataFrame:
        """All rows recorded so far."""
        return self._frame.copy()


@dataclass
class SelectionResult:
    """Outputs of a checkpoint selection: the winner, every candidate's score and the files."""

    best: str
    scores: dict[str, float]
    criterion: str
    results_csv: Path
    selection_json: Path


def write_selection(
    out_dir: Path, scores: dict[str, float], *, lowest: bool, experiment: str
) -> SelectionResult:
    """Write ``selection.json`` with the winner (lowest or highest finite score) and return it."""
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    if not finite:
        raise DataError(
            out_dir / "selection.json", "scores", f"no candidate has a finite validation AUROC ({experiment})"
        )
    best = (min if lowest else max)(finite, key=finite.__getitem__)
    criterion = f"{'lowest' if lowest else 'highest'} mean validation AUROC ({experiment})"
    path = out_dir / "selection.json"
    if is_main_process():
        atomic_write_text(
            json.dumps({"best": best, "criterion": criterion, "scores": scores}, indent=2) + "\n", path
        )
    log.info("selected %s by %s: %s", best, criterion, scores)
    return SelectionResult(best, scores, criterion, out_dir / "selection.csv", path)


def select_candidate(
    results: ResultsFile,
    candidates: Iterable[str],
    score_column: str,
    *,
    lowest: bool,
    experiment: str,
) -> SelectionResult:
    """Score each candidate by the mean of its finite ``score_column`` values in ``results`` (keyed by a
    ``candidate`` column) and write the winner with :func:`write_selection` beside the results file."""
    frame = results.frame()
    names = frame["candidate"].astype(str)
    scores = {str(name): mean_std(frame[names == str(name)][score_column])[0] for name in candidates}
    return write_selection(results.path.parent, scores, lowest=lowest, experiment=experiment)


def write_summary_files(
    table: pd.DataFrame,
    markdown: str,
    summary: Mapping[str, Any],
    *,
    csv_path: Path,
    md_path: Path,
    json_path: Path,
) -> tuple[Path, Path, Path]:
    """An experiment's summary: ``table`` as CSV, its Markdown and ``summary`` as JSON (atomic, rank 0)."""
    if is_main_process():
        atomic_write_csv(table, csv_path)
        atomic_write_text(markdown, md_path)
        atomic_write_text(json.dumps(summary, indent=2) + "\n", json_path)
    return csv_path, md_path, json_path


def finite_or_nan(x: float) -> float:
    """``x`` when finite, else NaN (keeps CSVs free of inf)."""
    return float(x) if math.isfinite(x) else float("nan")


__all__ = [
    "INPUT_MODES",
    "ArraySource",
    "ClassifierDataset",
    "ClassifierTask",
    "ItemSet",
    "ResultsFile",
    "SelectionResult",
    "class_balanced_weights",
    "constant_items",
    "claim_run_dir",
    "drop_checkpoint",
    "finish_run",
    "load_trained_classifier",
    "mean_std",
    "mixup",
    "open_source",
    "predict_probabilities",
    "prepare_input",
    "recipe_hash",
    "run_settings",
    "select_candidate",
    "settings_hash",
    "store_fingerprint",
    "train_classifier",
    "train_with_recipe",
    "write_summary_files",
    "write_selection",
]
