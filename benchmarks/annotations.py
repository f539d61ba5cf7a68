"""Simulated fastMRI+ annotations against the real brain.csv: box sizes, boxes per slice, slices per volume.

Plans a dataset with the given simulate preset, renders only its ABNORMAL volumes with the phantom
(:func:`magphase.simulate.phantom.render_volume`: the lesion masks are those ``magphase simulate``
writes; no coils or k-space are needed for the boxes), draws each lesion's boxes as
:func:`magphase.simulate.dataset.lesion_boxes` does, writes a fastMRI+-format CSV and reads it back with
the reader the real CSV goes through. Then, pooled and per sequence, the two-sample Kolmogorov-Smirnov
statistic between simulated and real for each of: box sqrt(area) (pixels of the 320 x 320 image),
boxes per annotated slice, annotated slices per abnormal volume. The real CSV is
``../shared/data/fastmri_plus/brain.csv`` (MIT, fastMRI+).

    .venv/bin/python benchmarks/annotations.py [--volumes 300] [--preset reproduce] [--workers 2]

Prints a table and writes ``benchmarks/results/annotations.json`` (and the simulated CSV beside it).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.stats import ks_2samp  # noqa: E402

from magphase.config.simulate import SimulateConfig  # noqa: E402
from magphase.io.annotations import read_annotations, write_annotations  # noqa: E402
from magphase.simulate.dataset import PlannedVolume, SimulatedDatasetPlan, lesion_boxes  # noqa: E402
from magphase.simulate.findings import annotation_statistics, load_findings  # noqa: E402
from magphase.simulate.phantom import render_volume  # noqa: E402
from magphase.utils.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL_CSV = ROOT.parent / "shared" / "data" / "fastmri_plus" / "brain.csv"
RESULTS = ROOT / "benchmarks" / "results" / "annotations.json"
STATISTICS = ("box_size_px", "boxes_per_slice", "slices_per_volume")


def _boxes(volume: PlannedVolume) -> list:
    truth = render_volume(volume.volume_spec())
    masks = np.stack([lesion.mask for lesion in truth.lesions]) if truth.lesions else np.zeros((0, 1, 1, 1))
    labels = [lesion.label for lesion in truth.lesions]
    return lesion_boxes(volume.stem, masks, labels, runs=volume.label_runs())


def compare(real_csv: Path, sim_csv: Path) -> list[dict]:
    real = read_annotations(real_csv)
    sim = read_annotations(sim_csv)
    rows = []
    for sequence in (None, "AXFLAIR", "AXT1", "AXT1POST"):
        a, b = annotation_statistics(real, sequence), annotation_statistics(sim, sequence)
        for name in STATISTICS:
            x, y = getattr(a, name), getattr(b, name)
            if len(x) == 0 or len(y) == 0:
                continue
            rows.append(
                {
                    "sequence": sequence or "all",
                    "statistic": name,
                    "real_n": int(len(x)),
                    "sim_n": int(len(y)),
                    "real_q10_50_90": [round(float(q), 1) for q in np.percentile(x, [10, 50, 90])],
                    "sim_q10_50_90": [round(float(q), 1) for q in np.percentile(y, [10, 50, 90])],
                    "real_mean": round(float(np.mean(x)), 2),
                    "sim_mean": round(float(np.mean(y)), 2),
                    "ks": round(float(ks_2samp(x, y).statistic), 3),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=300, help="abnormal volumes rendered")
    parser.add_argument("--preset", default="reproduce")
    parser.add_argument("--n-slices", type=int, default=None, help="override the preset's slices per volume")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--sequence-mix", choices=("real", "preset"), default="real", help="abnormal volumes per sequence"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=REAL_CSV)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    base = SimulateConfig(preset=args.preset)
    # Enough planned volumes that the abnormal ones reach --volumes (labelled sequences only).
    extra: dict = {"n_slices": args.n_slices} if args.n_slices else {}
    if args.sequence_mix == "real":
        # The abnormal volumes per sequence in the same proportions as in the real CSV, so the pooled
        # rows compare like with like (the preset's mix is the paper's Table 1, not the annotated one).
        fitted = load_findings().data["sequences"]
        extra["sequence_mix"] = {seq: float(v["abnormal_volumes"]) for seq, v in fitted.items()}
    cfg = SimulateConfig(
        preset=args.preset, volumes=max(base.volumes, 8 * args.volumes), external_volumes=0, **extra
    )
    plan = SimulatedDatasetPlan.build(cfg, args.seed)
    abnormal = [v for v in plan.volumes if v.volume_class == "abnormal"][: args.volumes]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        boxes = [b for vol in pool.map(_boxes, abnormal, chunksize=4) for b in vol]
    seconds = time.perf_counter() - t0
    sim_csv = args.out.with_suffix(".sim.csv")
    sim_csv.parent.mkdir(parents=True, exist_ok=True)
    write_annotations(sim_csv, boxes)
    rows = compare(args.real, sim_csv)
    print(f"{len(abnormal)} abnormal volumes ({args.preset}, {cfg.n_slices} slices), {len(boxes)} boxes")
    print(f"rendered in {seconds:.0f} s on {args.workers} workers")
    line = "{:9s} {:18s} {:>18s} {:>18s} {:>9s} {:>8s} {:>6s}"
    print(
        line.format("sequence", "statistic", "real q10/50/90", "sim q10/50/90", "real mean", "sim mean", "KS")
    )
    for r in rows:
        rq = "/".join(f"{q:g}" for q in r["real_q10_50_90"])
        sq = "/".join(f"{q:g}" for q in r["sim_q10_50_90"])
        means = (f"{r['real_mean']:.2f}", f"{r['sim_mean']:.2f}", f"{r['ks']:.3f}")
        print(line.format(r["sequence"], r["statistic"], rq, sq, *means))
    result = {
        "preset": args.preset,
        "n_slices": cfg.n_slices,
        "sequence_mix": args.sequence_mix,
        "abnormal_volumes": len(abnormal),
        "boxes": len(boxes),
        "render_seconds": round(seconds, 1),
        "workers": args.workers,
        "rows": rows,
    }
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
