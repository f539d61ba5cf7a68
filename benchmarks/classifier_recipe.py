"""Downstream classifier recipes: does the real-only classifier fit its training data, and which generalises?

Trains the real-only downstream classifier (``real100``: every real training volume, nothing synthetic)
under several recipes of the ``evaluation`` section and reports, per recipe, the AUROC on its own training
patches (no augmentation), on the real validation and test splits and on the external set, each test /
external number with its 95 % volume-bootstrap interval, the difference from the first recipe (paired
bootstrap, same test volumes) and the training time. The recipe that fits (train clearly above val) and
scores best on VALIDATION is the one to apply identically to every condition; test and external are shown
for the record, not for the choice. Results of each recipe are resumable folders under ``--out``.

    .venv/bin/python benchmarks/classifier_recipe.py --real RUN/prepare/patches \
        --external RUN/prepare-external/patches --out runs/recipes [--config configs/reproduce.yaml] \
        [--runs 2] [--recipes avg,max,avgmax,...]

Prints a table and writes ``benchmarks/results/classifier_recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from magphase.config import load_config
from magphase.evaluation.bootstrap import difference_interval
from magphase.evaluation.downstream import (
    TrainingConfiguration,
    configuration_replicates,
    run_downstream,
)
from magphase.utils.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "classifier_recipe.json"

#: Recipes as ``--set`` overrides of the loaded config (the first is the reference of the differences).
RECIPES: dict[str, list[str]] = {
    "avg": ["evaluation.classifier.pooling=avg"],
    "max": ["evaluation.classifier.pooling=max"],
    "avgmax": ["evaluation.classifier.pooling=avgmax"],
    "avgmax-3x": ["evaluation.classifier.pooling=avgmax", "evaluation.downstream.train.steps=1200"],
    "avgmax-wide": [
        "evaluation.classifier.pooling=avgmax",
        "evaluation.classifier.widths=[32,64,128]",
    ],
    "avgmax-wide-3x": [
        "evaluation.classifier.pooling=avgmax",
        "evaluation.classifier.widths=[32,64,128]",
        "evaluation.downstream.train.steps=1200",
    ],
    "avgmax-nomixup": ["evaluation.classifier.pooling=avgmax", "evaluation.mixup_alpha=0"],
    "max-lr3e-3": ["evaluation.classifier.pooling=max", "evaluation.downstream.train.lr=3e-3"],
    "max-3x": ["evaluation.classifier.pooling=max", "evaluation.downstream.train.steps=1200"],
    "max-3x-lr2e-3": [
        "evaluation.classifier.pooling=max",
        "evaluation.downstream.train.steps=1200",
        "evaluation.downstream.train.lr=2e-3",
    ],
    "max-canon": ["evaluation.classifier.pooling=max", "evaluation.classifier.canonical_phase=true"],
    "max-3x-lr2e-3-canon-bf16": [
        "evaluation.classifier.pooling=max",
        "evaluation.classifier.canonical_phase=true",
        "evaluation.downstream.train.steps=1200",
        "evaluation.downstream.train.lr=2e-3",
        "evaluation.downstream.train.amp=bf16",
    ],
    "max-3x-lr2e-3-nomixup-bf16": [
        "evaluation.classifier.pooling=max",
        "evaluation.downstream.train.steps=1200",
        "evaluation.downstream.train.lr=2e-3",
        "evaluation.downstream.train.amp=bf16",
        "evaluation.mixup_alpha=0",
    ],
    "max-3x-lr2e-3-bf16": [
        "evaluation.classifier.pooling=max",
        "evaluation.downstream.train.steps=1200",
        "evaluation.downstream.train.lr=2e-3",
        "evaluation.downstream.train.amp=bf16",
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, required=True)
    ap.add_argument("--external", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "reproduce.yaml")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    args = ap.parse_args()
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        raise SystemExit(f"error: unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    plan = [TrainingConfiguration("real100", "baseline", "real_only", 1.0, 0.0)]
    rows: list[dict[str, Any]] = []
    reps: dict[str, dict[str, Any]] = {}
    for name in names:
        cfg = load_config(args.config, RECIPES[name])
        out = args.out / name
        t0 = time.perf_counter()
        res = run_downstream(
            args.real, None, out, cfg.evaluation, external_store=args.external, seed=cfg.seed,
            device="cpu", figures=False, plan=plan, runs=args.runs,
        )  # fmt: skip
        s = res.summary.iloc[0]
        row: dict[str, Any] = {
            "recipe": name,
            "overrides": RECIPES[name],
            "runs": args.runs,
            "steps": cfg.evaluation.downstream.train.steps,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        for key in ("train", "val", "test", "external"):
            row[f"auroc_{key}"] = float(s[f"auroc_{key}_mean"])
            row[f"auroc_{key}_std"] = float(s[f"auroc_{key}_std"])
        reps[name] = {}
        for key in ("test", "external"):
            # the interval of this recipe as the summary computed it; replicates for the paired difference
            row[f"auroc_{key}_lo"] = float(s[f"auroc_{key}_lo"])
            row[f"auroc_{key}_hi"] = float(s[f"auroc_{key}_hi"])
            r = configuration_replicates(
                out, "real100", args.runs, key, cfg.evaluation.downstream.bootstrap, cfg.seed
            )
            reps[name][key] = r
            base = reps[names[0]].get(key)
            if r is not None and base is not None and name != names[0]:
                d = difference_interval(r, base)
                row[f"delta_{key}"], row[f"delta_{key}_lo"], row[f"delta_{key}_hi"] = d.estimate, d.lo, d.hi
        rows.append(row)
        print(json.dumps(row), flush=True)

    def f(r: dict, key: str) -> str:
        text = f"{r[f'auroc_{key}']:.3f} ± {r[f'auroc_{key}_std']:.3f}"
        lo, hi = r.get(f"auroc_{key}_lo", np.nan), r.get(f"auroc_{key}_hi", np.nan)
        return text + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")

    def d(r: dict, key: str) -> str:
        if f"delta_{key}" not in r:
            return "–"
        return f"{r[f'delta_{key}']:+.3f} [{r[f'delta_{key}_lo']:+.3f}, {r[f'delta_{key}_hi']:+.3f}]"

    print(
        f"\n| recipe | steps | AUROC train | AUROC val | AUROC test | vs {names[0]} (test) | AUROC external "
        f"| vs {names[0]} (external) | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['steps']} | {r['auroc_train']:.3f} ± {r['auroc_train_std']:.3f} "
            f"| {r['auroc_val']:.3f} ± {r['auroc_val_std']:.3f} | {f(r, 'test')} | {d(r, 'test')} "
            f"| {f(r, 'external')} | {d(r, 'external')} | {r['wall_s']:.0f} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"real": str(args.real), "external": str(args.external), "config": str(args.config)}
    payload["rows"] = rows
    atomic_write_text(json.dumps(payload, indent=2) + "\n", RESULTS)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
