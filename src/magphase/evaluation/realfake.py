"""Real vs synthetic classification in latent space (paper 2.4.1, Table 4) and stage-1 model selection.

Per sequence, a classifier learns to tell real latents (target 0) from stage-1 synthetic latents sampled
with guidance w = 1 (target 1). The synthetic latents match the real ones in number and split: for every
sequence, ``n_train`` synthetic training and ``n_val`` validation latents (the real split sizes), and
``n_test_sets`` independent synthetic test sets of ``n_test`` latents each, every one scored together with
the same fixed real test split. The classifier is trained ``runs`` times (seeds differ), so Table 4 reports
the mean +- sample std over ``runs x n_test_sets`` AUROCs. 0.5 means real and synthetic cannot be told
apart; 1.0 means they separate perfectly.

Inputs:

- the real latent store (arrays ``mu``, ``logvar``; manifest with ``sequence`` and ``split``);
- one synthetic latent store (one array, e.g. ``z``/``latents``/``mu``; manifest with ``sequence``) holding
  per sequence at least ``n_train + n_val`` latents — and, when no separate test stores are given, another
  ``n_test_sets * n_test`` for the test sets (:func:`realfake_required_counts` says how many);
- optionally the test stores: either ``n_test_sets`` stores (set k = store k) or one store cut into
  ``n_test_sets`` disjoint sets.

Synthetic items are assigned to train / val / test here (seeded order per sequence, by ``patch_id``); a
``split`` column the generator may have written is ignored.

Real input: by default a fresh posterior draw ``z ~ N(mu, sigma^2)`` per training batch (and one fixed
draw for validation/test), because that is what the flow model learns to generate when trained on
posterior draws (``flow.latents = posterior``); ``mean`` uses ``mu`` (for a flow trained on ``mu``).
Comparing generated posterior-like draws with noise-free ``mu`` would let the classifier detect the
noise level instead of the distribution.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magphase.config.evaluation import EvaluationConfig
from magphase.conventions import SEQUENCE_INDEX, SEQUENCES
from magphase.data.store import Store
from magphase.errors import ConfigError, DataError
from magphase.evaluation.classifier_train import (
    ArraySource,
    ItemSet,
    ResultsFile,
    SelectionResult,
    constant_items,
    finish_run,
    mean_std,
    open_source,
    predict_probabilities,
    recipe_hash,
    select_candidate,
    store_fingerprint,
    train_with_recipe,
    write_summary_files,
)
from magphase.evaluation.metrics import safe_auroc
from magphase.evaluation.paper import PAPER_TABLE4
from magphase.utils.seeds import derive_seed, derived_rng

log = logging.getLogger(__name__)


_SYNTHETIC_ARRAY_NAMES = ("z", "latents", "latent", "mu", "samples")
_SEED_TAG = 0x4EA1


# ------------------------------------------------------------------------------------------ inputs
def latent_arrays(store: Store, synthetic: bool) -> tuple[str, str | None]:
    """(input array, log-variance array or None) of a latent store.

    Real stores use ``mu`` (+ ``logvar``). Synthetic stores hold draws already: their first array among
    ``z, latents, latent, mu, samples`` (or their only array) is used as is, never with added noise.
    """
    names = list(store.arrays)
    if not synthetic:
        if "mu" not in store.arrays:
            raise DataError(store.path, "mu", f"real latent store lacks 'mu' (has {names})")
        return "mu", ("logvar" if "logvar" in store.arrays else None)
    for name in _SYNTHETIC_ARRAY_NAMES:
        if name in store.arrays:
            return name, None
    if len(names) == 1:
        return names[0], None
    raise DataError(store.path, "arrays", f"cannot tell the latent array among {names}")


def real_split_counts(real: Store, sequences: Sequence[str] | None = None) -> pd.DataFrame:
    """Real latents per sequence and split: index = sequence, columns ``train, val, test``."""
    m = real.manifest
    for col in ("sequence", "split"):
        if col not in m.columns:
            raise DataError(real.path, col, "manifest column missing")
    counts = m.groupby(["sequence", "split"]).size().unstack(fill_value=0)
    for s in ("train", "val", "test"):
        if s not in counts.columns:
            counts[s] = 0
    counts = counts[["train", "val", "test"]].astype(int)
    if sequences is not None:
        missing = [s for s in sequences if s not in counts.index]
        if missing:
            raise DataError(real.path, "sequence", f"no real latents of {missing}")
        counts = counts.loc[list(sequences)]
    return counts.sort_index(key=lambda idx: [SEQUENCE_INDEX.get(s, 99) for s in idx])


def realfake_required_counts(
    real_store: str | Path | Store, n_test_sets: int = 4, sequences: Sequence[str] | None = None
) -> dict[str, int]:
    """Synthetic stage-1 latents to generate per sequence for ONE store holding train, val and test sets.

    ``n_train + n_val + n_test_sets * n_test`` of the real split sizes. With separate test stores the
    main store needs ``n_train + n_val`` and each test store ``n_test`` (or one store ``n_test_sets *
    n_test``).
    """
    real = real_store if isinstance(real_store, Store) else Store(real_store)
    counts = real_split_counts(real, sequences)
    return {str(seq): int(r["train"] + r["val"] + n_test_sets * r["test"]) for seq, r in counts.iterrows()}


def resolve_real_latents(cfg: Any) -> str:
    """The real-latent mode for a whole :class:`~magphase.config.MagphaseConfig`.

    ``evaluation.realfake.real_latents`` when set, else how the flow model was trained (``flow.latents``:
    ``posterior`` -> posterior draws, ``mean`` -> ``mu``).
    """
    explicit = cfg.evaluation.realfake.real_latents
    if explicit is not None:
        return explicit
    return "mean" if getattr(cfg.flow, "latents", "posterior") == "mean" else "posterior"


def _seeded_rows(manifest: pd.DataFrame, sequence: str, seed: int) -> np.ndarray:
    """Store rows of ``sequence`` in a seeded order independent of the manifest's row order."""
    rows = np.flatnonzero((manifest["sequence"] == sequence).to_numpy())
    if "patch_id" in manifest.columns:
        rows = rows[np.argsort(manifest["patch_id"].astype(str).to_numpy()[rows], kind="stable")]
    perm = derived_rng(seed, _SEED_TAG, SEQUENCE_INDEX.get(sequence, 99)).permutation(rows.size)
    return rows[perm]


@dataclass(frozen=True)
class SequenceSplit:
    """Store rows of one sequence: real and synthetic, per split; ``synthetic_test`` holds the test sets."""

    sequence: str
    real: dict[str, np.ndarray]
    synthetic: dict[str, np.ndarray]
    synthetic_test: list[np.ndarray] = field(default_factory=list)


def matched_synthetic_splits(
    real: Store,
    synthetic: Store,
    sequence: str,
    seed: int,
    *,
    test_stores: Sequence[Store] = (),
    n_test_sets: int = 0,
) -> SequenceSplit:
    """Assign synthetic latents of ``sequence`` to train / val (and test sets) matching the real counts.

    Args:
        real: real latent store (split column used as is).
        synthetic: synthetic store for train and val (and the test sets when ``test_stores`` is empty).
        sequence: sequence name.
        seed: assignment seed.
        test_stores: none, ``n_test_sets`` stores, or one store cut into ``n_test_sets`` sets.
        n_test_sets: test sets wanted (0: none, e.g. for checkpoint selection).
    Raises:
        DataError: a synthetic store has too few latents of ``sequence`` (names the store and numbers).
        ConfigError: the number of test stores is neither 0, 1 nor ``n_test_sets``.
    """
    m = real.manifest
    seq_mask = (m["sequence"] == sequence).to_numpy()
    real_rows = {s: np.flatnonzero(seq_mask & (m["split"] == s).to_numpy()) for s in ("train", "val", "test")}
    n_train, n_val, n_test = (len(real_rows[s]) for s in ("train", "val", "test"))
    order = _seeded_rows(synthetic.manifest, sequence, seed)
    need = n_train + n_val + (n_test_sets * n_test if not test_stores else 0)
    if order.size < need:
        raise DataError(
            synthetic.path, "sequence", f"needs {need} synthetic latents of {sequence}, has {order.size}"
        )
    syn = {"train": order[:n_train], "val": order[n_train : n_train + n_val]}
    tests: list[np.ndarray] = []
    if n_test_sets:
        if not test_stores:
            rest = order[n_train + n_val :]
            tests = [rest[k * n_test : (k + 1) * n_test] for k in range(n_test_sets)]
        elif len(test_stores) in (1, n_test_sets):
            for k in range(n_test_sets):
                store = test_stores[k] if len(test_stores) > 1 else test_stores[0]
                t_order = _seeded_rows(store.manifest, sequence, seed + 1)
                lo = 0 if len(test_stores) > 1 else k * n_test
                if t_order.size < lo + n_test:
                    raise DataError(
                        store.path,
                        "sequence",
                        f"needs {lo + n_test} latents of {sequence}, has {t_order.size}",
                    )
                tests.append(t_order[lo : lo + n_test])
        else:
            raise ConfigError(
                f"synthetic test stores: give none, one, or n_test_sets={n_test_sets}; got {len(test_stores)}"
            )
    return SequenceSplit(sequence, real_rows, syn, tests)


# ------------------------------------------------------------------------------------------ results
@dataclass
class RealFakeResult:
    """Outputs of :func:`run_realfake` (paths inside ``out_dir``)."""

    out_dir: Path
    results_csv: Path
    table4_csv: Path
    table4_md: Path
    summary_json: Path
    table: pd.DataFrame


def table4(results: pd.DataFrame) -> pd.DataFrame:
    """Per-sequence AUROC mean +- sample std over all (run, test set) rows, with the paper's values."""
    rows = []
    for seq in sorted(results["sequence"].unique(), key=lambda s: SEQUENCE_INDEX.get(s, 99)):
        sub = results[results["sequence"] == seq]
        mean, std, n = mean_std(sub["auroc"].to_numpy())
        val_mean, val_std, _ = mean_std(sub.drop_duplicates("run")["val_auroc"].to_numpy())
        paper = PAPER_TABLE4.get(seq, (float("nan"), float("nan")))
        rows.append(
            {
                "sequence": seq,
                "auroc_mean": mean,
                "auroc_std": std,
                "n_evaluations": n,
                "n_runs": int(sub["run"].nunique()),
                "n_test_sets": int(sub["test_set"].nunique()),
                "val_auroc_mean": val_mean,
                "val_auroc_std": val_std,
                "paper_auroc_mean": paper[0],
                "paper_auroc_std": paper[1],
            }
        )
    return pd.DataFrame(rows)


def _fmt(mean: float, std: float) -> str:
    return "n/a" if not np.isfinite(mean) else f"{mean:.3f} ± {std:.3f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def table4_markdown(table: pd.DataFrame) -> str:
    """Table 4 as Markdown: this run's AUROC beside the paper's."""
    lines = [
        "| Sequence | AUROC (this run) | evaluations | AUROC (paper) |",
        "|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.sequence} | {_fmt(r.auroc_mean, r.auroc_std)} "
            f"| {_count(r.n_runs, 'run')} x {_count(r.n_test_sets, 'test set')} "
            f"| {_fmt(r.paper_auroc_mean, r.paper_auroc_std)} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ core
@dataclass
class _SequenceData:
    split: SequenceSplit
    real_x: ArraySource
    real_logvar: ArraySource | None
    syn_x: ArraySource
    test_x: list[ArraySource]


def _open_sequence(
    real: Store,
    synthetic: Store,
    split: SequenceSplit,
    test_stores: Sequence[Store],
    real_latents: str,
    max_bytes: int,
) -> _SequenceData:
    """Array sources for one sequence, preloaded when they fit ``max_bytes`` (split across arrays)."""
    mean_name, logvar_name = latent_arrays(real, synthetic=False)
    if real_latents == "posterior" and logvar_name is None:
        raise DataError(real.path, "logvar", "posterior real latents need a 'logvar' array")
    use_logvar = real_latents == "posterior"
    syn_name, _ = latent_arrays(synthetic, synthetic=True)
    real_rows = np.concatenate(list(split.real.values()))
    syn_rows = np.concatenate([split.synthetic["train"], split.synthetic["val"]])
    if not test_stores:
        syn_rows = np.concatenate([syn_rows, *split.synthetic_test])
    n_arrays = 2 + int(use_logvar) + len(test_stores)
    budget = max_bytes // max(1, n_arrays)
    real_x = open_source(real, mean_name, real_rows, budget)
    real_lv = open_source(real, logvar_name, real_rows, budget) if use_logvar and logvar_name else None
    syn_x = open_source(synthetic, syn_name, syn_rows, budget)
    test_x: list[ArraySource] = []
    if test_stores:
        for k, rows in enumerate(split.synthetic_test):
            store = test_stores[k] if len(test_stores) > 1 else test_stores[0]
            test_x.append(open_source(store, latent_arrays(store, synthetic=True)[0], rows, budget))
    else:
        test_x = [syn_x] * len(split.synthetic_test)
    return _SequenceData(split, real_x, real_lv, syn_x, test_x)


def _train_sequence_run(
    data: _SequenceData,
    run_dir: Path,
    cfg: EvaluationConfig,
    run_seed: int,
    device: str | None,
    eval_seed: int,
    with_tests: bool,
    row_hash: str | None = None,
) -> dict[str, Any]:
    """Train one real-vs-synthetic classifier and score validation (and test sets)."""
    sp = data.split
    train_items = [
        constant_items(data.real_x, sp.real["train"], 0.0, data.real_logvar, "real/train"),
        constant_items(data.syn_x, sp.synthetic["train"], 1.0, None, "synthetic/train"),
    ]
    result, train_s = train_with_recipe(
        train_items, run_dir, cfg, cfg.realfake, run_seed=run_seed, device=device, row_hash=row_hash
    )
    model = result.ema_model

    def score(items: list[ItemSet]) -> float:
        p = predict_probabilities(model, items, batch_size=cfg.eval_batch_size, posterior_seed=eval_seed)
        return safe_auroc(np.concatenate([it.targets for it in items]), p)

    real_val = constant_items(data.real_x, sp.real["val"], 0.0, data.real_logvar)
    syn_val = constant_items(data.syn_x, sp.synthetic["val"], 1.0)
    out: dict[str, Any] = {
        "val_auroc": score([real_val, syn_val]),
        "train_time_s": round(train_s, 2),
        "steps": result.step,
        "n_train_real": len(sp.real["train"]),
        "n_train_synthetic": len(sp.synthetic["train"]),
        "n_val_real": len(sp.real["val"]),
        "n_val_synthetic": len(sp.synthetic["val"]),
        "test_aurocs": [],
    }
    if with_tests:
        real_test = constant_items(data.real_x, sp.real["test"], 0.0, data.real_logvar)
        p_real = predict_probabilities(
            model, real_test, batch_size=cfg.eval_batch_size, posterior_seed=eval_seed
        )
        for k, rows in enumerate(sp.synthetic_test):
            syn_test = constant_items(data.test_x[k], rows, 1.0)
            p_syn = predict_probabilities(model, syn_test, batch_size=cfg.eval_batch_size)
            t = np.concatenate([np.zeros(p_real.size), np.ones(p_syn.size)])
            out["test_aurocs"].append(
                (k, safe_auroc(t, np.concatenate([p_real, p_syn])), p_real.size, p_syn.size)
            )
    finish_run(run_dir, cfg)
    return out


def _run_seeds(seed: int, sequence: str, run: int) -> tuple[int, int]:
    """(training seed of classifier ``run`` of ``sequence``, posterior-draw seed of its evaluation)."""
    tag = (seed, _SEED_TAG, SEQUENCE_INDEX.get(sequence, 99))
    return derive_seed(*tag, run), derive_seed(*tag, 0xE7A1)


def _sequences(real: Store, cfg: EvaluationConfig) -> list[str]:
    present = set(real.manifest["sequence"].astype(str))
    wanted = cfg.realfake.sequences or tuple(s for s in SEQUENCES if s in present)
    missing = [s for s in wanted if s not in present]
    if missing:
        raise DataError(real.path, "sequence", f"no real latents of {missing}")
    return list(wanted)


def run_realfake(
    real_store: str | Path,
    synthetic_store: str | Path,
    out_dir: str | Path,
    cfg: EvaluationConfig,
    *,
    synthetic_test_stores: Sequence[str | Path] = (),
    seed: int = 0,
    device: str | None = None,
    real_latents: str | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> RealFakeResult:
    """Real vs synthetic latent classification for every sequence (paper Table 4); resumable.

    Args:
        real_store: real latent store (``mu``, ``logvar``; manifest ``sequence``, ``split``).
        synthetic_store: stage-1 synthetic latents (w = ``cfg.realfake.guidance``), see module doc.
        out_dir: output folder: ``results.csv`` (one row per sequence x run x test set), ``table4.csv``,
            ``table4.md``, ``summary.json``, classifier runs in ``runs/<SEQ>/run<k>/``.
        cfg: the evaluation config section.
        synthetic_test_stores: optional separate test stores (none, one, or ``n_test_sets``).
        seed: run-wide seed (synthetic split assignment, classifier seeds).
        device: training device (``auto``, ``cpu``, ``cuda``...); None: ``cfg.realfake.train.device`` or auto.
        real_latents: ``posterior`` or ``mean``; None: ``cfg.realfake.real_latents`` or ``posterior``.
        on_start: called once with the number of (sequence, run) jobs.
        on_result: called after each finished (or already recorded) job with a summary dict.
    Returns:
        :class:`RealFakeResult` with the Table 4 frame.
    """
    rf = cfg.realfake
    mode = real_latents or rf.real_latents or "posterior"
    if mode not in ("posterior", "mean"):
        raise ConfigError(f"real_latents must be posterior or mean, got {mode!r}")
    out_dir = Path(out_dir)
    real = Store(real_store)
    synthetic = Store(synthetic_store)
    tests = [Store(p) for p in synthetic_test_stores]
    sequences = _sequences(real, cfg)
    row_hash = recipe_hash(
        cfg,
        rf,
        rf.n_test_sets,
        mode,
        seed,
        store_fingerprint(real),
        store_fingerprint(synthetic),
        [store_fingerprint(t) for t in tests],
    )
    results = ResultsFile(out_dir / "results.csv", ("sequence", "run", "test_set"), row_hash)
    if on_start is not None:
        on_start(len(sequences) * rf.runs)
    for seq in sequences:
        jobs = [
            r
            for r in range(rf.runs)
            if not all(results.has(sequence=seq, run=r, test_set=k) for k in range(rf.n_test_sets))
        ]
        data = None
        if jobs:
            split = matched_synthetic_splits(
                real, synthetic, seq, seed, test_stores=tests, n_test_sets=rf.n_test_sets
            )
            data = _open_sequence(real, synthetic, split, tests, mode, cfg.preload_max_bytes)
        for r in range(rf.runs):
            if r in jobs and data is not None:
                run_seed, eval_seed = _run_seeds(seed, seq, r)
                res = _train_sequence_run(
                    data,
                    out_dir / "runs" / seq / f"run{r}",
                    cfg,
                    run_seed,
                    device,
                    eval_seed,
                    with_tests=True,
                    row_hash=row_hash,
                )
                rows = [
                    {
                        "sequence": seq,
                        "run": r,
                        "test_set": k,
                        "seed": run_seed,
                        "auroc": auc,
                        "val_auroc": res["val_auroc"],
                        "n_train_real": res["n_train_real"],
                        "n_train_synthetic": res["n_train_synthetic"],
                        "n_test_real": n_real,
                        "n_test_synthetic": n_syn,
                        "real_latents": mode,
                        "steps": res["steps"],
                        "train_time_s": res["train_time_s"],
                    }
                    for k, auc, n_real, n_syn in res["test_aurocs"]
                ]
                results.append(rows)
                log.info(
                    "realfake %s run %d: val AUROC %.3f, test AUROCs %s",
                    seq,
                    r,
                    res["val_auroc"],
                    [round(x[1], 3) for x in res["test_aurocs"]],
                )
            if on_result is not None:
                frame = results.frame()
                sub = frame[(frame["sequence"] == seq) & (frame["run"].astype(int) == r)]
                on_result({"sequence": seq, "run": r, "auroc_mean": float(sub["auroc"].mean())})
    frame = results.frame()
    frame = frame[frame["sequence"].isin(sequences)]
    table = table4(frame)
    paths = _write_table4(out_dir, table, cfg, mode)
    return RealFakeResult(out_dir, out_dir / "results.csv", *paths, table=table)


def _write_table4(
    out_dir: Path, table: pd.DataFrame, cfg: EvaluationConfig, mode: str
) -> tuple[Path, Path, Path]:
    summary = {
        "experiment": "realfake",
        "guidance": cfg.realfake.guidance,
        "runs": cfg.realfake.runs,
        "n_test_sets": cfg.realfake.n_test_sets,
        "real_latents": mode,
        "table4": json.loads(table.to_json(orient="records")),
    }
    return write_summary_files(
        table,
        table4_markdown(table),
        summary,
        csv_path=out_dir / "table4.csv",
        md_path=out_dir / "table4.md",
        json_path=out_dir / "summary.json",
    )


# ------------------------------------------------------------------------------------------ selection
def select_stage1_checkpoint(
    real_store: str | Path,
    candidates: Mapping[str, str | Path],
    out_dir: str | Path,
    cfg: EvaluationConfig,
    *,
    seed: int = 0,
    device: str | None = None,
    real_latents: str | None = None,
) -> SelectionResult:
    """Pick the stage-1 checkpoint whose synthetic latents are HARDEST to tell from real (paper 2.4.3).

    For every candidate (name -> synthetic latent store sampled from that checkpoint, w = 1, at least
    ``n_train + n_val`` latents per sequence), per sequence ``cfg.realfake.selection_runs`` classifiers
    are trained on real vs synthetic training latents and scored on the VALIDATION split (real val +
    as many synthetic). A candidate's score is its mean validation AUROC over sequences and runs; the
    lowest wins. Every candidate uses the same classifier seeds. Resumable (``selection.csv``).

    Returns:
        :class:`SelectionResult`; ``selection.json`` holds the same.
    """
    if not candidates:
        raise ConfigError("stage-1 selection needs at least one candidate store")
    rf = cfg.realfake
    mode = real_latents or rf.real_latents or "posterior"
    out_dir = Path(out_dir)
    real = Store(real_store)
    sequences = _sequences(real, cfg)
    row_hash = recipe_hash(
        cfg,
        rf,
        mode,
        seed,
        store_fingerprint(real),
        {str(n): store_fingerprint(p) for n, p in candidates.items()},
    )
    results = ResultsFile(out_dir / "selection.csv", ("candidate", "sequence", "run"), row_hash)
    for name, path in candidates.items():
        synthetic = Store(path)
        for seq in sequences:
            todo = [
                r for r in range(rf.selection_runs) if not results.has(candidate=name, sequence=seq, run=r)
            ]
            if not todo:
                continue
            split = matched_synthetic_splits(real, synthetic, seq, seed)
            data = _open_sequence(real, synthetic, split, (), mode, cfg.preload_max_bytes)
            for r in todo:
                run_seed, eval_seed = _run_seeds(seed, seq, r)
                res = _train_sequence_run(
                    data,
                    out_dir / "runs" / name / seq / f"run{r}",
                    cfg,
                    run_seed,
                    device,
                    eval_seed,
                    with_tests=False,
                    row_hash=row_hash,
                )
                results.append(
                    [
                        {
                            "candidate": name,
                            "sequence": seq,
                            "run": r,
                            "store": str(path),
                            "val_auroc": res["val_auroc"],
                            "train_time_s": res["train_time_s"],
                        }
                    ]
                )
    return select_candidate(results, candidates, "val_auroc", lowest=True, experiment="realfake")


__all__ = [
    "RealFakeResult",
    "SelectionResult",
    "SequenceSplit",
    "latent_arrays",
    "matched_synthetic_splits",
    "real_split_counts",
    "realfake_required_counts",
    "resolve_real_latents",
    "run_realfake",
    "select_stage1_checkpoint",
    "table4",
    "table4_markdown",
]
