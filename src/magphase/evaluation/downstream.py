"""Downstream normal-vs-abnormal classification on decoded patches (paper 2.4.2, Figs. 6-8).

A classifier (same SE-ResNet family and recipe as real-vs-synthetic, input ``2 x 96 x 96``) is trained on
compositions of real and synthetic training patches and ALWAYS tested on real data: the real test split
(patch-level AUROC) and, when given, the external test store (volume-level AUROC, each volume scored by
the mean of its top 5 % patch probabilities). Synthetic patches are stage-2 latents sampled with w = 2 and
decoded by the autoencoder, class- and sequence-matched to the real training set (at least as many per
(label, sequence) as the real training set has, so the fully synthetic and +100 % configurations fit).

Configurations (names as in ``results.csv``):

- ``real100``: the full real training set, the 100 %-real baseline (dashed line of Figs. 6-8).
- ``realNNN``: substitution, real-only condition: NNN % of the real training VOLUMES, nothing added.
- ``substNNN``: substitution, real + synthetic: NNN % of the real volumes; each removed real patch is
  replaced by a synthetic patch of the same label and sequence (total size constant). ``subst000`` is
  fully synthetic.
- ``addNNN``: additive: the full real set plus NNN % of its size in synthetic patches.
- ``...-mag``: the same composition with magnitude-only input ``[|x|, 0]`` (beyond the paper: what phase
  adds).

Real and synthetic subsets are hierarchical (:mod:`magphase.data.subsets`). Each configuration is trained
``runs`` times; run ``k`` uses the same seed in every configuration (common random numbers: differences
between configurations are not blurred by different initialisations). Every (configuration, run) result
row is written to ``results.csv`` at once; a re-run skips recorded rows.

Beside the run-to-run mean and std, every test and external AUROC gets a volume-level bootstrap 95 %
interval (:mod:`magphase.evaluation.bootstrap`; each run keeps its test patch probabilities in
``test_patches.csv`` and its external volume scores in ``external_volumes.csv``), and every configuration
is compared with its reference (``real100``; a magnitude-only configuration with its complex twin) by a
paired bootstrap of the difference: the summary says when the two cannot be told apart. ``auroc_train``
(the classifier on its own training items, no augmentation) shows whether the recipe fits its data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magphase.config.evaluation import DownstreamConfig, EvaluationConfig
from magphase.conventions import LABELLED_SEQUENCES
from magphase.data.store import Store
from magphase.data.subsets import Composition, additive_sets, stratum_counts, substitution_sets
from magphase.errors import ConfigError, DataError
from magphase.evaluation.aggregate import binary_targets, external_auroc
from magphase.evaluation.bootstrap import auroc_replicates, difference_interval, interval
from magphase.evaluation.classifier_train import (
    ArraySource,
    ItemSet,
    ResultsFile,
    SelectionResult,
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
from magphase.evaluation.paper import PAPER_DOWNSTREAM
from magphase.training.distributed import is_main_process
from magphase.utils.atomic import atomic_write_csv
from magphase.utils.seeds import derive_seed

log = logging.getLogger(__name__)

LABELLED = ("normal", "abnormal")
#: Per-run files the bootstrap reads: test patch probabilities, external volume scores.
TEST_PATCHES_NAME = "test_patches.csv"
EXTERNAL_VOLUMES_NAME = "external_volumes.csv"
_RUN_TAG = 0xD0E5
_SUBSET_TAG = 0x5B5E
_BOOT_TAG = 0xB0B5


# ------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class TrainingConfiguration:
    """One downstream training configuration.

    Attributes:
        name: identifier (``real100``, ``real070``, ``subst070``, ``add030``, ``subst000-mag``...).
        experiment: ``baseline``, ``substitution``, ``additive`` or ``ablation``.
        condition: ``real_only``, ``real_synthetic`` (substitution) or ``real_plus_synthetic`` (additive).
        real_fraction: fraction of real training volumes kept.
        synthetic_fraction: synthetic items relative to the full real training size (nominal; the
            substitution share is ``1 - real_fraction`` of volumes, the actual item count is recorded).
        input_mode: ``complex`` or ``magnitude``.
    """

    name: str
    experiment: str
    condition: str
    real_fraction: float
    synthetic_fraction: float
    input_mode: str = "complex"


def _pct(f: float) -> str:
    return f"{round(100 * f):03d}"


def plan_configurations(dcfg: DownstreamConfig) -> list[TrainingConfiguration]:
    """Every configuration of the substitution, additive and magnitude-only experiments (baseline once)."""
    plan = [TrainingConfiguration("real100", "baseline", "real_only", 1.0, 0.0)]
    for r in dcfg.real_fractions:
        if r >= 1.0:
            continue
        if r > 0.0:  # a real-only set with no volumes cannot be trained
            plan.append(TrainingConfiguration(f"real{_pct(r)}", "substitution", "real_only", r, 0.0))
        plan.append(TrainingConfiguration(f"subst{_pct(r)}", "substitution", "real_synthetic", r, 1.0 - r))
    for a in dcfg.additive_fractions:
        plan.append(TrainingConfiguration(f"add{_pct(a)}", "additive", "real_plus_synthetic", 1.0, a))
    if dcfg.magnitude_only:
        for r in dcfg.magnitude_only_fractions:
            base = "real100" if r >= 1.0 else f"subst{_pct(r)}"
            condition = "real_only" if r >= 1.0 else "real_synthetic"
            plan.append(TrainingConfiguration(f"{base}-mag", "ablation", condition, r, 1.0 - r, "magnitude"))
    return plan


# ------------------------------------------------------------------------------------------ data
@dataclass
class DownstreamData:
    """The real and synthetic sets of one downstream experiment.

    Attributes:
        real: real patch store; ``train``, ``val``, ``test``: store rows of labelled patches per split.
        real_train: manifest of the real training rows (positions index ``train``).
        synthetic: synthetic patch store (may be None for a real-only use); ``pool``: its usable rows.
        synthetic_pool: manifest of the pool (positions index ``pool``).
        external: external store (None when absent) and its labelled ``external_rows``.
        sources: array sources keyed ``real``, ``synthetic``, ``external``.
    """

    real: Store
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    real_train: pd.DataFrame
    synthetic: Store | None
    pool: np.ndarray
    synthetic_pool: pd.DataFrame
    external: Store | None
    external_rows: np.ndarray
    sources: dict[str, ArraySource]

    def items(self, key: str, rows: np.ndarray, manifest: pd.DataFrame, name: str) -> ItemSet:
        """An item set of store ``key`` rows with targets from the labels (abnormal = 1)."""
        labels = manifest["label"].to_numpy()[rows] if len(rows) else np.zeros(0, object)
        return ItemSet(self.sources[key], rows, binary_targets(labels, name), name=name)


def _labelled_rows(store: Store, split: str | None) -> np.ndarray:
    m = store.manifest
    mask = m["label"].isin(LABELLED).to_numpy()
    if split is not None:
        mask = mask & (m["split"] == split).to_numpy()
    return np.flatnonzero(mask)


def load_downstream_data(
    real_store: str | Path,
    synthetic_store: str | Path | None,
    external_store: str | Path | None,
    max_bytes: int,
) -> DownstreamData:
    """Open the stores, select the labelled rows and preload what fits in ``max_bytes``.

    Real: labelled (normal/abnormal) patches of the ``train``, ``val`` and ``test`` splits. Synthetic
    pool: labelled patches of the sequences present in the real training set (every split value).
    External: every labelled patch of the external store.

    Raises:
        DataError: no labelled training, validation or test patches; array shapes differ between stores.
    """
    real = Store(real_store)
    for col in ("volume", "sequence", "label", "split"):
        if col not in real.manifest.columns:
            raise DataError(real.path, col, "manifest column missing")
    train, val, test = (_labelled_rows(real, s) for s in ("train", "val", "test"))
    for name, rows in (("train", train), ("val", val), ("test", test)):
        if rows.size == 0:
            raise DataError(real.path, "split", f"no labelled (normal/abnormal) patches in split {name!r}")
    real_train = real.manifest.iloc[train].reset_index(drop=True)
    synthetic = Store(synthetic_store) if synthetic_store is not None else None
    pool = np.zeros(0, np.int64)
    if synthetic is not None:
        sm = synthetic.manifest
        pool = np.flatnonzero(
            (sm["label"].isin(LABELLED) & sm["sequence"].isin(set(real_train["sequence"]))).to_numpy()
        )
    synthetic_pool = (
        synthetic.manifest.iloc[pool].reset_index(drop=True) if synthetic is not None else pd.DataFrame()
    )
    external = Store(external_store) if external_store is not None else None
    ext_rows = _labelled_rows(external, None) if external is not None else np.zeros(0, np.int64)
    budget = int(max_bytes)
    sources: dict[str, ArraySource] = {}
    for key, store, rows in (
        ("real", real, np.concatenate([train, val, test])),
        ("synthetic", synthetic, pool),
        ("external", external, ext_rows),
    ):
        if store is None:
            continue
        if "patches" not in store.arrays:
            raise DataError(store.path, "patches", f"patch array missing (has {sorted(store.arrays)})")
        src = open_source(store, "patches", rows, budget)
        budget -= rows.size * src.item_bytes() if src.preloaded else 0
        sources[key] = src
    shapes = {k: s.item_shape for k, s in sources.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(real.path, "patches", f"patch shapes differ between stores: {shapes}")
    return DownstreamData(
        real, train, val, test, real_train, synthetic, pool, synthetic_pool, external, ext_rows, sources
    )


def downstream_required_counts(
    real_store: str | Path | Store, dcfg: DownstreamConfig
) -> dict[tuple[str, str], int]:
    """Synthetic stage-2 patches to generate per (label, sequence) for :func:`run_downstream`.

    The real training count of each labelled (label, sequence) stratum times the largest synthetic share
    any configuration draws (1.0 for the fully synthetic ``subst000``, or the largest additive fraction),
    rounded up. Generate them with w = ``dcfg.guidance`` and decode them (store array ``patches``).
    """
    real = real_store if isinstance(real_store, Store) else Store(real_store)
    rows = _labelled_rows(real, "train")
    plan = plan_configurations(dcfg)
    share = max([c.synthetic_fraction for c in plan if c.condition == "real_plus_synthetic"], default=0.0)
    if any(c.condition == "real_synthetic" for c in plan):
        share = max(share, 1.0)
    counts = stratum_counts(real.manifest.iloc[rows]) if rows.size else {}
    return {key: int(np.ceil(share * n - 1e-9)) for key, n in counts.items() if share > 0}


def build_compositions(
    data: DownstreamData, plan: list[TrainingConfiguration], subset_seed: int
) -> dict[str, Composition]:
    """Each configuration's training set: positions into ``data.real_train`` / ``data.synthetic_pool``."""
    needs_synthetic = any(c.synthetic_fraction > 0 for c in plan)
    if needs_synthetic and data.synthetic is None:
        raise ConfigError("the downstream plan has synthetic configurations but no synthetic store was given")
    real_fracs = sorted({c.real_fraction for c in plan if c.condition != "real_plus_synthetic"})
    add_fracs = sorted({c.synthetic_fraction for c in plan if c.condition == "real_plus_synthetic"})
    syn_manifest = data.synthetic_pool if data.synthetic is not None else None
    real_only = substitution_sets(data.real_train, None, real_fracs, subset_seed, replace=False)
    substituted = (
        substitution_sets(data.real_train, syn_manifest, real_fracs, subset_seed, replace=True)
        if needs_synthetic
        else {}
    )
    added = additive_sets(data.real_train, syn_manifest, add_fracs, subset_seed) if add_fracs else {}
    out: dict[str, Composition] = {}
    for c in plan:
        if c.condition == "real_only":
            out[c.name] = real_only[c.real_fraction]
        elif c.condition == "real_synthetic":
            out[c.name] = substituted[c.real_fraction]
        else:
            out[c.name] = added[c.synthetic_fraction]
    return out


# ------------------------------------------------------------------------------------------ one run
def _train_and_evaluate(
    data: DownstreamData,
    composition: Composition,
    input_mode: str,
    run_dir: Path,
    cfg: EvaluationConfig,
    run_seed: int,
    device: str | None,
    *,
    with_tests: bool = True,
    row_hash: str | None = None,
) -> dict[str, Any]:
    """Train one downstream classifier on ``composition``; AUROC on real val, real test and external."""
    dcfg = cfg.downstream
    parts = []
    if len(composition.real):
        parts.append(data.items("real", data.train[composition.real], data.real.manifest, "real/train"))
    if len(composition.synthetic):
        assert data.synthetic is not None
        parts.append(
            data.items("synthetic", data.pool[composition.synthetic], data.synthetic.manifest, "synthetic")
        )
    result, train_s = train_with_recipe(
        parts, run_dir, cfg, dcfg, run_seed=run_seed, device=device, row_hash=row_hash, input_mode=input_mode
    )
    model = result.ema_model
    kw = {"input_mode": input_mode, "batch_size": cfg.eval_batch_size}

    def auroc(items: ItemSet | list[ItemSet]) -> float:
        targets = np.concatenate([i.targets for i in items]) if isinstance(items, list) else items.targets
        return safe_auroc(targets, predict_probabilities(model, items, **kw))

    real_volumes = data.real_train["volume"].to_numpy()[composition.real] if len(composition.real) else []
    row: dict[str, Any] = {
        "n_real_volumes": int(len(set(real_volumes))),
        "n_real": int(len(composition.real)),
        "n_synthetic": int(len(composition.synthetic)),
        "n_total": composition.size,
        "auroc_train": auroc(parts),
        "auroc_val": auroc(data.items("real", data.val, data.real.manifest, "real/val")),
        "auroc_test": float("nan"),
        "auroc_external": float("nan"),
        "steps": result.step,
        "train_time_s": round(train_s, 2),
    }
    if with_tests:
        test_items = data.items("real", data.test, data.real.manifest, "real/test")
        p_test = predict_probabilities(model, test_items, **kw)
        row["auroc_test"] = safe_auroc(test_items.targets, p_test)
        test_sequences = data.real.manifest["sequence"].to_numpy()[data.test].astype(str)
        for seq in LABELLED_SEQUENCES:
            k = test_sequences == seq
            # NaN without a warning where the split holds one class of this sequence (or none)
            row[f"auroc_test_{seq}"] = safe_auroc(test_items.targets[k], p_test[k], warn=False)
        if is_main_process():
            patches = pd.DataFrame(
                {
                    "row": data.test,
                    "volume": data.real.manifest["volume"].to_numpy()[data.test],
                    "sequence": test_sequences,
                    "target": test_items.targets.astype(np.int64),
                    "p": p_test,
                }
            )
            atomic_write_csv(patches, run_dir / TEST_PATCHES_NAME)
        if data.external is not None and data.external_rows.size:
            ext_items = data.items("external", data.external_rows, data.external.manifest, "external")
            p = predict_probabilities(model, ext_items, **kw)
            ext_manifest = data.external.manifest.iloc[data.external_rows]
            row["auroc_external"], volumes = external_auroc(
                p, ext_manifest, dcfg.external_top_fraction, str(data.external.path)
            )
            if is_main_process():
                atomic_write_csv(volumes, run_dir / EXTERNAL_VOLUMES_NAME)
    finish_run(run_dir, cfg)
    return row


# ------------------------------------------------------------------------------------------ experiment
@dataclass
class DownstreamResult:
    """Outputs of :func:`run_downstream` (paths inside ``out_dir``)."""

    out_dir: Path
    results_csv: Path
    summary_csv: Path
    summary_md: Path
    summary_json: Path
    figures: dict[str, Path]
    summary: pd.DataFrame


def _downstream_hash(cfg: EvaluationConfig, seed: int, data: DownstreamData) -> str:
    """Settings that determine a downstream result row (recipe, training, seed, store contents)."""
    dcfg = cfg.downstream
    return recipe_hash(
        cfg,
        dcfg,
        dcfg.external_top_fraction,
        seed,
        store_fingerprint(data.real),
        store_fingerprint(data.synthetic),
        store_fingerprint(data.external),
    )


def run_downstream(
    real_store: str | Path,
    synthetic_store: str | Path | None,
    out_dir: str | Path,
    cfg: EvaluationConfig,
    *,
    external_store: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    figures: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    plan: list[TrainingConfiguration] | None = None,
    runs: int | None = None,
) -> DownstreamResult:
    """The substitution, additive and magnitude-only experiments; resumable.

    Args:
        real_store: real patch store (``patches`` N x 2 x 96 x 96; manifest ``volume, sequence, label,
            split``).
        synthetic_store: decoded stage-2 synthetic patches (w = ``cfg.downstream.guidance``) with
            ``label`` and ``sequence``; per (label, sequence) at least the real training count. None only
            when the plan has no synthetic configuration.
        out_dir: output folder: ``results.csv`` (one row per configuration x run), ``summary.csv``,
            ``summary.md``, ``summary.json``, ``fig6_substitution_test.png``,
            ``fig7_substitution_external.png``, ``fig8_additive.png``, runs in ``runs/<config>/run<k>/``
            (each with ``ema.safetensors`` and, with an external store, ``external_volumes.csv``).
        cfg: the evaluation config section.
        external_store: external patch store (volume-level labels on every patch) or None.
        seed: run-wide seed (subsets and classifier seeds derive from it).
        device: training device (None: ``cfg.downstream.train.device`` or auto).
        figures: draw the PNG figures.
        on_start: called once with the number of (configuration, run) jobs.
        on_result: called after each job (trained or already recorded) with its result row.
        plan: the configurations to train (None: :func:`plan_configurations` of ``cfg.downstream``; the
            learning curve passes its real-only plan).
        runs: classifier runs per configuration (None: ``cfg.downstream.runs``).
    Returns:
        :class:`DownstreamResult` with the summary frame (one row per configuration).
    """
    dcfg = cfg.downstream
    out_dir = Path(out_dir)
    plan = plan_configurations(dcfg) if plan is None else plan
    n_runs = dcfg.runs if runs is None else int(runs)
    data = load_downstream_data(real_store, synthetic_store, external_store, cfg.preload_max_bytes)
    compositions = build_compositions(data, plan, derive_seed(seed, _SUBSET_TAG))
    row_hash = _downstream_hash(cfg, seed, data)
    results = ResultsFile(out_dir / "results.csv", ("config", "run"), row_hash)
    if on_start is not None:
        on_start(len(plan) * n_runs)
    for c in plan:
        for r in range(n_runs):
            if not results.has(config=c.name, run=r):
                run_seed = derive_seed(seed, _RUN_TAG, r)
                row = {
                    "config": c.name,
                    "run": r,
                    "experiment": c.experiment,
                    "condition": c.condition,
                    "real_fraction": c.real_fraction,
                    "synthetic_fraction": c.synthetic_fraction,
                    "input_mode": c.input_mode,
                    "seed": run_seed,
                    **_train_and_evaluate(
                        data,
                        compositions[c.name],
                        c.input_mode,
                        out_dir / "runs" / c.name / f"run{r}",
                        cfg,
                        run_seed,
                        device,
                        row_hash=row_hash,
                    ),
                }
                results.append([row])
                log.info(
                    "downstream %s run %d: AUROC test %.3f external %.3f",
                    c.name,
                    r,
                    row["auroc_test"],
                    row["auroc_external"],
                )
            if on_result is not None:
                frame = results.frame()
                match = frame[(frame["config"] == c.name) & (frame["run"].astype(int) == r)]
                on_result(match.iloc[-1].to_dict())
    frame = results.frame()
    frame = frame[frame["config"].isin([c.name for c in plan]) & (frame["run"].astype(int) < n_runs)]
    summary = summarize_downstream(frame, plan)
    summary = add_intervals(summary, out_dir, n_runs, dcfg.bootstrap, seed)
    paths = write_downstream_summary(summary, out_dir, cfg)
    figs: dict[str, Path] = {}
    if figures and is_main_process():
        from magphase.viz.figures_eval import write_downstream_figures

        figs = write_downstream_figures(summary, out_dir)
    return DownstreamResult(out_dir, out_dir / "results.csv", *paths, figures=figs, summary=summary)


def summarize_downstream(
    results: pd.DataFrame, plan: list[TrainingConfiguration] | None = None
) -> pd.DataFrame:
    """One row per configuration: mean, sample std and count of each AUROC, mean set sizes, paper values."""
    order = [c.name for c in plan] if plan else list(dict.fromkeys(results["config"]))
    rows = []
    for name in order:
        sub = results[results["config"] == name]
        if sub.empty:
            continue
        first = sub.iloc[0]
        row: dict[str, Any] = {
            "config": name,
            "experiment": first["experiment"],
            "condition": first["condition"],
            "real_fraction": float(first["real_fraction"]),
            "synthetic_fraction": float(first["synthetic_fraction"]),
            "input_mode": first["input_mode"],
            "n_runs": int(sub["run"].nunique()),
            "n_real_volumes": float(sub["n_real_volumes"].mean()) if "n_real_volumes" in sub else np.nan,
            "n_real": float(sub["n_real"].mean()),
            "n_synthetic": float(sub["n_synthetic"].mean()),
        }
        for metric in ("train", "val", "test", "external", *(f"test_{q}" for q in LABELLED_SEQUENCES)):
            if f"auroc_{metric}" not in sub.columns:  # rows written before the column existed
                row[f"auroc_{metric}_mean"], row[f"auroc_{metric}_std"], row[f"auroc_{metric}_n"] = (
                    float("nan"),
                    float("nan"),
                    0,
                )
                continue
            mean, std, n = mean_std(sub[f"auroc_{metric}"].to_numpy(dtype=np.float64))
            row[f"auroc_{metric}_mean"], row[f"auroc_{metric}_std"], row[f"auroc_{metric}_n"] = mean, std, n
            paper = PAPER_DOWNSTREAM.get(name, {}).get(metric)
            if metric in ("test", "external"):
                row[f"paper_{metric}_mean"] = paper[0] if paper else float("nan")
                row[f"paper_{metric}_std"] = paper[1] if paper else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def reference_configuration(name: str) -> str | None:
    """The configuration ``name`` is compared with: a magnitude-only one with its complex twin, every
    other one with the real-only baseline ``real100`` (which has none)."""
    if name.endswith("-mag"):
        return name.removesuffix("-mag")
    return None if name == "real100" else "real100"


def run_scores(out_dir: Path, name: str, n_runs: int, file: str, score: str) -> pd.DataFrame | None:
    """One column of scores per run (rows aligned across runs) with ``volume`` and ``target``; None when a
    run's file is missing or the runs scored different items."""
    frames = []
    for r in range(n_runs):
        path = out_dir / "runs" / name / f"run{r}" / file
        if not path.is_file():
            return None
        frames.append(pd.read_csv(path))
    base = frames[0]
    for f in frames[1:]:
        if (
            len(f) != len(base)
            or not (f["volume"].astype(str).to_numpy() == base["volume"].astype(str)).all()
        ):
            log.warning("%s: runs of %s scored different items; no interval", file, name)
            return None
    out = base[["volume", "target"]].copy()
    for r, f in enumerate(frames):
        out[f"s{r}"] = f[score].to_numpy(np.float64)
    return out


_SCORE_FILES = {"test": (TEST_PATCHES_NAME, "p"), "external": (EXTERNAL_VOLUMES_NAME, "score")}


def configuration_replicates(
    out_dir: Path, name: str, n_runs: int, key: str, n_boot: int, seed: int
) -> tuple[float, np.ndarray] | None:
    """Run-mean AUROC of configuration ``name`` on set ``key`` (``test`` or ``external``) and its volume
    bootstrap replicates (:func:`magphase.evaluation.bootstrap.auroc_replicates`, resamples seeded by the
    run seed so every configuration of ``seed`` shares them); None when its scores are missing or hold
    one class."""
    file, score = _SCORE_FILES[key]
    scores = run_scores(out_dir, name, n_runs, file, score)
    if scores is None or scores["target"].nunique() < 2:
        return None
    runs = scores[[f"s{r}" for r in range(n_runs)]].to_numpy().T
    return auroc_replicates(
        scores["target"].to_numpy(),
        runs,
        scores["volume"].to_numpy(),
        n_boot=n_boot,
        seed=derive_seed(seed, _BOOT_TAG),
    )


def add_intervals(summary: pd.DataFrame, out_dir: Path, n_runs: int, n_boot: int, seed: int) -> pd.DataFrame:
    """Add volume-bootstrap 95 % intervals of the test and external AUROC to each configuration, and the
    paired interval of its difference from :func:`reference_configuration` (columns ``auroc_<set>_lo``,
    ``_hi``, ``_boot_sd``, ``reference``, ``delta_<set>``, ``delta_<set>_lo``, ``_hi`` and
    ``distinct_<set>``: ``yes`` when the difference's interval excludes 0, ``no`` when it does not).

    Every configuration is resampled with the same volume draws (same ``seed``, same test items), so the
    differences are paired. NaN (and an empty ``distinct_<set>``) where a run's scores are missing or
    ``n_boot`` is 0.
    """
    summary = summary.copy()
    summary["reference"] = [reference_configuration(n) or "" for n in summary["config"]]
    for key in _SCORE_FILES:
        for col in ("lo", "hi", "boot_sd"):
            summary[f"auroc_{key}_{col}"] = np.nan
        for col in ("", "_lo", "_hi"):
            summary[f"delta_{key}{col}"] = np.nan
        summary[f"distinct_{key}"] = ""
    if n_boot <= 0 or summary.empty:
        return summary
    for key in _SCORE_FILES:
        reps: dict[str, tuple[float, np.ndarray]] = {}
        for name in summary["config"]:
            r = configuration_replicates(out_dir, str(name), n_runs, key, n_boot, seed)
            if r is not None:
                reps[str(name)] = r
        for i, name in enumerate(summary["config"]):
            if name not in reps:
                continue
            iv = interval(*reps[name])
            summary.loc[i, [f"auroc_{key}_lo", f"auroc_{key}_hi", f"auroc_{key}_boot_sd"]] = (
                iv.lo,
                iv.hi,
                iv.sd,
            )
            ref = summary.loc[i, "reference"]
            if ref in reps:
                d = difference_interval(reps[name], reps[ref])
                summary.loc[i, [f"delta_{key}", f"delta_{key}_lo", f"delta_{key}_hi"]] = (
                    d.estimate,
                    d.lo,
                    d.hi,
                )
                if np.isfinite(d.lo):
                    summary.loc[i, f"distinct_{key}"] = "yes" if d.excludes_zero else "no"
    return summary


def format_mean_std(mean: float, std: float) -> str:
    return "–" if not np.isfinite(mean) else f"{mean:.3f} ± {std:.3f}"


def format_with_interval(row: pd.Series, key: str) -> str:
    """``mean ± std [lo, hi]`` of one AUROC column of a summary row (interval omitted when absent)."""
    text = format_mean_std(row[f"auroc_{key}_mean"], row[f"auroc_{key}_std"])
    lo, hi = row.get(f"auroc_{key}_lo", np.nan), row.get(f"auroc_{key}_hi", np.nan)
    return text if not (np.isfinite(lo) and np.isfinite(hi)) else f"{text} [{lo:.3f}, {hi:.3f}]"


def format_difference(row: pd.Series, key: str) -> str:
    """``+0.012 [-0.030, 0.055] n.d.`` against the row's reference (``–`` when none)."""
    d = row.get(f"delta_{key}", np.nan)
    if not np.isfinite(d):
        return "–"
    lo, hi = row[f"delta_{key}_lo"], row[f"delta_{key}_hi"]
    verdict = {"yes": "", "no": " n.d."}.get(str(row.get(f"distinct_{key}", "")), "")
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]{verdict}"


def downstream_markdown(summary: pd.DataFrame) -> str:
    """Markdown tables: substitution, additive, magnitude-only ablation (paper values where published)."""

    def table(sub: pd.DataFrame, first_col: str, first_val: Callable[[pd.Series], str]) -> list[str]:
        lines = [
            f"| {first_col} | config | n real | n synthetic | AUROC train | AUROC test | vs real100 (test) "
            "| AUROC external | vs real100 (external) | paper test | paper external |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in sub.iterrows():
            lines.append(
                f"| {first_val(r)} | {r['config']} | {r['n_real']:.0f} | {r['n_synthetic']:.0f} "
                f"| {format_mean_std(r.get('auroc_train_mean', np.nan), r.get('auroc_train_std', np.nan))} "
                f"| {format_with_interval(r, 'test')} | {format_difference(r, 'test')} "
                f"| {format_with_interval(r, 'external')} | {format_difference(r, 'external')} "
                f"| {format_mean_std(r['paper_test_mean'], r['paper_test_std'])} "
                f"| {format_mean_std(r['paper_external_mean'], r['paper_external_std'])} |"
            )
        return lines

    complex_rows = summary[summary["input_mode"] == "complex"]
    subst = complex_rows[complex_rows["condition"].isin(["real_only", "real_synthetic"])].copy()
    subst = subst.sort_values(["condition", "real_fraction"], ascending=[True, False])
    add = complex_rows[
        complex_rows["config"].eq("real100") | complex_rows["condition"].eq("real_plus_synthetic")
    ]
    runs = int(summary["n_runs"].max()) if len(summary) else 0
    out = [
        f"AUROC mean ± sample std over {runs} classifier run{'' if runs == 1 else 's'} per configuration"
        + ("; a single run has no spread (± 0.000)" if runs == 1 else "")
        + ', then [95 % volume-bootstrap interval] of that mean. "vs real100": the paired bootstrap '
        "difference from the real-only baseline with its 95 % interval; n.d. = not distinguishable (the "
        "interval contains 0). AUROC train: the classifier on its own training patches (no augmentation).",
        "",
        "### Substitution (real fraction of training volumes; removed patches replaced by synthetic)",
        "",
    ]
    out += table(
        subst, "real %", lambda r: f"{100 * r['real_fraction']:.0f} ({r['condition'].replace('_', ' ')})"
    )
    out += ["", "### Additive (full real set + synthetic, % of the real size)", ""]
    out += table(add, "added %", lambda r: f"{100 * r['synthetic_fraction']:.0f}")
    mag = summary[summary["input_mode"] == "magnitude"]
    if len(mag):
        out += [
            "",
            "### Magnitude only vs complex input (beyond the paper)",
            "",
            "| composition | AUROC test complex | AUROC test magnitude | magnitude - complex (test) "
            "| AUROC external complex | AUROC external magnitude | magnitude - complex (external) |",
            "|---|---|---|---|---|---|---|",
        ]
        by_name = summary.set_index("config")
        for _, r in mag.iterrows():
            base = r["config"].removesuffix("-mag")
            c = by_name.loc[base] if base in by_name.index else None
            ct = format_with_interval(c, "test") if c is not None else "–"
            ce = format_with_interval(c, "external") if c is not None else "–"
            out.append(
                f"| {base} | {ct} | {format_with_interval(r, 'test')} "
                f"| {format_difference(r, 'test')} | {ce} "
                f"| {format_with_interval(r, 'external')} | {format_difference(r, 'external')} |"
            )
    seq_cols = [q for q in LABELLED_SEQUENCES if f"auroc_test_{q}_mean" in summary.columns]
    if seq_cols and len(summary):
        out += [
            "",
            "### Test AUROC per sequence (patches of one sequence: its abnormal against its normal ones)",
            "",
            "| config | input | " + " | ".join(seq_cols) + " |",
            "|---|---|" + "---|" * len(seq_cols),
        ]
        for _, r in summary.iterrows():
            cells = [format_mean_std(r[f"auroc_test_{q}_mean"], r[f"auroc_test_{q}_std"]) for q in seq_cols]
            out.append(f"| {r['config']} | {r['input_mode']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_downstream_summary(
    summary: pd.DataFrame, out_dir: Path, cfg: EvaluationConfig
) -> tuple[Path, Path, Path]:
    """``summary.csv``, ``summary.md``, ``summary.json`` (atomic, rank 0)."""
    payload = {
        "experiment": "downstream",
        "guidance": cfg.downstream.guidance,
        "runs": cfg.downstream.runs,
        "external_top_fraction": cfg.downstream.external_top_fraction,
        "configurations": json.loads(summary.to_json(orient="records")),
    }
    return write_summary_files(
        summary,
        downstream_markdown(summary),
        payload,
        csv_path=out_dir / "summary.csv",
        md_path=out_dir / "summary.md",
        json_path=out_dir / "summary.json",
    )


# ------------------------------------------------------------------------------------------ selection
def select_stage2_checkpoint(
    real_store: str | Path,
    candidates: Mapping[str, str | Path],
    out_dir: str | Path,
    cfg: EvaluationConfig,
    *,
    seed: int = 0,
    device: str | None = None,
) -> SelectionResult:
    """Pick the stage-2 checkpoint whose synthetic patches train the BEST downstream classifier (2.4.3).

    For every candidate (name -> decoded synthetic patch store from that checkpoint, w = 2), a classifier
    is trained ``cfg.downstream.selection_runs`` times on the fully synthetic composition (``subst000``:
    as many synthetic patches per (label, sequence) as the real training set has) and scored on the real
    VALIDATION split. Training on synthetic data alone measures the diagnostic content of the samples
    directly, without real data masking a weak generator. The highest mean validation AUROC wins.
    Resumable (``selection.csv``); every candidate uses the same seeds and the same hierarchical order.
    """
    if not candidates:
        raise ConfigError("stage-2 selection needs at least one candidate store")
    dcfg = cfg.downstream
    out_dir = Path(out_dir)
    plan = [TrainingConfiguration("subst000", "substitution", "real_synthetic", 0.0, 1.0)]
    row_hash = recipe_hash(
        cfg,
        dcfg,
        seed,
        store_fingerprint(real_store),
        {str(n): store_fingerprint(p) for n, p in candidates.items()},
    )
    results = ResultsFile(out_dir / "selection.csv", ("candidate", "run"), row_hash)
    for name, path in candidates.items():
        todo = [r for r in range(dcfg.selection_runs) if not results.has(candidate=name, run=r)]
        if not todo:
            continue
        data = load_downstream_data(real_store, path, None, cfg.preload_max_bytes)
        composition = build_compositions(data, plan, derive_seed(seed, _SUBSET_TAG))["subst000"]
        for r in todo:
            run_seed = derive_seed(seed, _RUN_TAG, r)
            row = _train_and_evaluate(
                data,
                composition,
                "complex",
                out_dir / "runs" / str(name) / f"run{r}",
                cfg,
                run_seed,
                device,
                with_tests=False,
                row_hash=row_hash,
            )
            results.append([{"candidate": name, "run": r, "store": str(path), **row}])
    return select_candidate(results, candidates, "auroc_val", lowest=False, experiment="downstream")


__all__ = [
    "DownstreamData",
    "DownstreamResult",
    "TrainingConfiguration",
    "add_intervals",
    "build_compositions",
    "configuration_replicates",
    "downstream_markdown",
    "downstream_required_counts",
    "format_difference",
    "format_mean_std",
    "format_with_interval",
    "load_downstream_data",
    "plan_configurations",
    "reference_configuration",
    "run_scores",
    "run_downstream",
    "select_stage2_checkpoint",
    "summarize_downstream",
    "write_downstream_summary",
]
