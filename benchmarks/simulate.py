"""Benchmark the simulator: seconds per volume on one CPU core and disk per volume.

Per configuration, a few volumes (different sequences, lesions, seeds) are simulated exactly as
``magphase simulate`` does (:func:`magphase.simulate.dataset.simulate_volume` split into its stages):

* ``render``: the phantom's noise-free complex volume (:func:`magphase.simulate.phantom.render_volume`);
* ``kspace``: coil maps, coil images, FFT, correlated noise, RSS (``acquisition.acquire``);
* ``write``: fastMRI file + truth sidecar (:func:`~magphase.simulate.acquisition.write_acquisition`).

The first render of a process loads the head model; it is timed apart (``cold_start_s``) and excluded.
Single-threaded (``OMP_NUM_THREADS=1``, one torch thread): the numbers are per core.

    .venv/bin/python benchmarks/simulate.py [--volumes 3] [--configs fastmri,demo]

Prints a table and writes ``benchmarks/results/simulate.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from magphase.config.simulate import SimulateConfig  # noqa: E402
from magphase.simulate.acquisition import truth_path_for, write_acquisition  # noqa: E402
from magphase.simulate.dataset import SimulatedDatasetPlan, acquire_planned, raw_path  # noqa: E402
from magphase.simulate.phantom import VolumeSpec, render_volume  # noqa: E402
from magphase.utils.atomic import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "simulate.json"

#: name -> (slices, coils, recon matrix); "fastmri" is the issue's reference size (kspace 640 x 320).
CONFIGS: dict[str, tuple[int, int, tuple[int, int]]] = {
    "fastmri": (16, 16, (320, 320)),
    "fastmri-20coils": (16, 20, (320, 320)),
    "demo": (12, 4, (320, 320)),
    "external-384": (12, 6, (384, 384)),
}


def bench_config(name: str, n_volumes: int, out: Path) -> dict:
    n_slices, n_coils, matrix = CONFIGS[name]
    cfg = SimulateConfig(
        volumes=max(n_volumes, 5),
        n_slices=n_slices,
        coils={n_coils: 1.0},
        matrix=matrix,
        min_volumes_per_cell=1,
    )
    plan = SimulatedDatasetPlan.build(cfg, seed=2024)
    # Lesioned volumes first (they cost the most), then others: a fair mix of sequences.
    volumes = sorted(plan.volumes, key=lambda v: (-len(v.lesions), v.index))[:n_volumes]
    rows = []
    for volume in volumes:
        t0 = time.perf_counter()
        truth_volume = render_volume(volume.volume_spec())
        t1 = time.perf_counter()
        acquisition = acquire_planned(volume, truth_volume, plan.sites[volume.site])
        t2 = time.perf_counter()
        raw = raw_path(out, volume)
        write_acquisition(raw, acquisition, {"plan_hash": volume.plan_hash()})
        t3 = time.perf_counter()
        raw_mb = raw.stat().st_size / 1e6
        truth_mb = truth_path_for(raw).stat().st_size / 1e6
        rows.append(
            {
                "stem": volume.stem,
                "render_s": t1 - t0,
                "kspace_s": t2 - t1,
                "write_s": t3 - t2,
                "total_s": t3 - t0,
                "raw_mb": raw_mb,
                "truth_mb": truth_mb,
            }
        )
        raw.unlink()
        truth_path_for(raw).unlink()
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "stem"}
    return {
        "config": name,
        "slices": n_slices,
        "coils": n_coils,
        "recon_matrix": list(matrix),
        "kspace_shape": [n_slices, n_coils, 2 * matrix[0], matrix[1]],
        "volumes": len(rows),
        **{f"mean_{k}": v for k, v in mean.items()},
        "per_volume": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=3, help="volumes per configuration")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS)
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]

    t0 = time.perf_counter()
    render_volume(VolumeSpec(seed=0, sequence="AXT2", matrix=(64, 64), n_slices=2))
    cold_start = time.perf_counter() - t0

    results = []
    with tempfile.TemporaryDirectory(prefix="magphase-bench-sim-") as tmp:
        for name in names:
            results.append(bench_config(name, args.volumes, Path(tmp)))

    header = (
        f"{'config':<16}{'kspace (S,C,H,W)':>22}{'render s':>10}{'kspace s':>10}{'write s':>9}{'total s':>9}"
    )
    header += f"{'raw MB':>9}{'truth MB':>10}"
    print(f"simulator, one CPU core ({platform.machine()}); head-model cold start {cold_start:.1f} s")
    print(header)
    for r in results:
        shape = "x".join(str(v) for v in r["kspace_shape"])
        print(
            f"{r['config']:<16}{shape:>22}{r['mean_render_s']:>10.2f}{r['mean_kspace_s']:>10.2f}"
            f"{r['mean_write_s']:>9.2f}{r['mean_total_s']:>9.2f}{r['mean_raw_mb']:>9.0f}{r['mean_truth_mb']:>10.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "cold_start_s": cold_start,
        "load_average": list(os.getloadavg()),
        "results": results,
    }
    atomic_write_text(json.dumps(payload, indent=2), RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
