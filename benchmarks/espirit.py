"""Benchmark ESPIRiT sensitivity estimation: magphase (torch) vs BART ``ecalib`` on the same slice.

Cases: one slice of 16 coils x 640 x 320 (fastMRI brain k-space with 2x readout oversampling) and
8 coils x 320 x 320; magphase with the default coarse eigen grid (``eig_grid=64``) and at every
pixel (``eig_grid=None``); BART ``ecalib -m1`` with matched parameters when ``bart`` is on PATH
(same thread count), and the speed ratio; the whole-volume ``espirit_combine`` (16 slices, the
prepare stage's call) on CPU; CUDA when available. Accuracy columns compare the combined image
with the one from BART's maps and with magphase's own every-pixel result (1 - phase coherence and
the max error relative to the max magnitude, inside the object).

    .venv/bin/python benchmarks/espirit.py [--threads 1] [--repeats 3]

Prints a table and writes ``benchmarks/results/espirit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from magphase.mri.coils import combine_coils, espirit_combine
from magphase.mri.espirit import EspiritParams, espirit_maps
from magphase.mri.fft import fft2c, ifft2c
from magphase.mri.metrics import phase_coherence
from magphase.utils.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "espirit.json"
PARAMS = EspiritParams()


def synthetic_kspace(slices: int, coils: int, rows: int, cols: int, oversampled: bool, seed: int = 0):
    """Multi-coil k-space of an ellipse phantom with smooth phase and loop-coil-like smooth maps.

    Returns k-space complex64 (S, C, rows, cols) and the object mask (S, rows, cols).
    """
    rng = np.random.default_rng(seed)
    y = (np.arange(rows) - rows // 2) / rows
    x = (np.arange(cols) - cols // 2) / cols
    Y, X = np.meshgrid(y, x, indexing="ij")
    row_extent = 0.2 if oversampled else 0.4  # the object fills the central half of an oversampled FOV
    maps = []
    for c in range(coils):
        angle = 2 * np.pi * c / coils
        cy, cx = (0.35 if oversampled else 0.6) * np.sin(angle), 0.6 * np.cos(angle)
        magnitude = 1.0 / (1.0 + ((Y - cy) ** 2 + (X - cx) ** 2) / 0.08)
        maps.append(magnitude * np.exp(1j * (angle + 1.5 * (X * np.cos(angle) + Y * np.sin(angle)))))
    maps = np.array(maps)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0))
    kspace, masks = [], []
    for s in range(slices):
        scale = 1.0 - 0.2 * s / max(1, slices - 1)
        obj = (Y / (row_extent * scale)) ** 2 + (X / (0.36 * scale)) ** 2 <= 1
        inner = (Y / (0.4 * row_extent)) ** 2 + ((X - 0.1) / 0.12) ** 2 <= 1
        image = obj * (1.0 + 0.5 * inner) * np.exp(1j * (1.2 * X - 3.0 * Y + 2.0 * (X**2 + Y**2)))
        k = fft2c(maps * image)
        k += (
            1e-3
            * np.abs(k).max()
            / np.sqrt(rows * cols)
            * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
        )
        kspace.append(k.astype(np.complex64))
        masks.append(obj)
    return np.stack(kspace), np.stack(masks)


def best_time(fn, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (this process + waited-for children, e.g. BART) of ``fn``.

    CPU time is what a call costs on an idle machine with this thread count; wall time on a shared
    machine also contains the time other processes held the cores.
    """
    fn()  # warm-up (allocations, CUDA context)
    walls, cpus = [], []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        cpus.append(time.process_time() - cpu + child_cpu)
    return min(walls), min(cpus)


def write_cfl(stem: Path, array: np.ndarray) -> None:
    array = np.asarray(array, np.complex64)
    stem.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in array.shape) + "\n")
    array.T.tofile(stem.with_suffix(".cfl"))  # column-major


def read_cfl(stem: Path) -> np.ndarray:
    dims = [int(d) for d in stem.with_suffix(".hdr").read_text().splitlines()[1].split()]
    return np.fromfile(stem.with_suffix(".cfl"), np.complex64).reshape(dims, order="F")


def bart_ecalib(
    kspace_slice: np.ndarray, threads: int, repeats: int
) -> tuple[tuple[float, float], np.ndarray]:
    """(wall, CPU) seconds of ``bart ecalib`` on one (C, H, W) slice (best of ``repeats``) and its maps."""
    coils, rows, cols = kspace_slice.shape
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_cfl(folder / "k", kspace_slice.transpose(1, 2, 0)[:, :, None, :])
        command = [
            "bart", "ecalib", "-m1", f"-k{PARAMS.kernel_size}", f"-r{PARAMS.calib_size}",
            f"-t{PARAMS.threshold**2}", f"-c{PARAMS.crop}", "k", "maps",
        ]  # fmt: skip
        seconds = best_time(
            lambda: subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True), repeats
        )
        maps = read_cfl(folder / "maps").reshape(rows, cols, coils).transpose(2, 0, 1)
    return seconds, maps


def accuracy(kspace_slice, maps, reference_maps, mask) -> dict:
    images = ifft2c(kspace_slice)
    ours, ref = combine_coils(images, maps), combine_coils(images, reference_maps)
    # Remove the one global phase the references may differ by (BART fixes its PC's phase its own way).
    overlap = np.vdot(ours[mask], ref[mask])
    ours = ours * (overlap / abs(overlap) if abs(overlap) > 0 else 1.0)
    scale = np.abs(ref[mask]).max()
    return {
        "one_minus_coherence": 1.0 - phase_coherence(ours, ref, mask=mask),
        "max_error": float(np.abs(ours - ref)[mask].max() / scale),
    }


def run_case(coils: int, rows: int, cols: int, threads: int, repeats: int, batch: int) -> list[dict]:
    oversampled = rows == 2 * cols
    kspace, masks = synthetic_kspace(batch, coils, rows, cols, oversampled)
    one = kspace[:1]
    name = f"{coils} coils x {rows} x {cols}"
    rows_out = []
    maps_exact = espirit_maps(one, eig_grid=None)[0]
    maps_fast = espirit_maps(one)[0]
    for label, grid in (
        (f"magphase cpu eig_grid={PARAMS.eig_grid}", PARAMS.eig_grid),
        ("magphase cpu every pixel", None),
    ):
        seconds, cpu = best_time(lambda g=grid: espirit_maps(one, eig_grid=g), repeats)
        row = {"case": name, "method": label, "seconds_per_slice": seconds, "cpu_seconds_per_slice": cpu}
        row["threads"] = threads
        if grid is not None:
            row["vs_exact"] = accuracy(one[0], maps_fast, maps_exact, masks[0])
            batched, batched_cpu = best_time(lambda: espirit_maps(kspace), max(1, repeats // 2))
            row["seconds_per_slice_batched"] = batched / batch
            row["cpu_seconds_per_slice_batched"] = batched_cpu / batch
        rows_out.append(row)
    if torch.cuda.is_available():
        volume = torch.from_numpy(np.concatenate([kspace] * (16 // batch + 1))[:16]).cuda()
        seconds, _ = best_time(lambda: espirit_maps(volume), repeats)
        rows_out.append(
            {
                "case": name,
                "method": "magphase cuda (16-slice volume)",
                "seconds_per_slice": seconds / 16,
                "seconds_per_volume": seconds,
            }
        )
    if shutil.which("bart"):
        (seconds, cpu), bart_maps = bart_ecalib(one[0], threads, repeats)
        bart_row = {
            "case": name,
            "method": "bart ecalib",
            "seconds_per_slice": seconds,
            "cpu_seconds_per_slice": cpu,
        }
        rows_out.append({**bart_row, "threads": threads})
        for row in rows_out[:-1]:
            row["bart_over_magphase"] = seconds / row["seconds_per_slice"]
            if "cpu_seconds_per_slice" in row:
                row["bart_over_magphase_cpu"] = cpu / row["cpu_seconds_per_slice"]
        rows_out[0]["vs_bart"] = accuracy(one[0], maps_fast, bart_maps, masks[0])
        rows_out[1]["vs_bart"] = accuracy(one[0], maps_exact, bart_maps, masks[0])
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and BART (OpenMP) threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="slices in the batched timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for coils, height, width in ((16, 640, 320), (8, 320, 320)):
        rows += run_case(coils, height, width, args.threads, args.repeats, args.batch)
    volume, _ = synthetic_kspace(16, 16, 640, 320, oversampled=True)
    combine_cases = [("cpu", None)] + ([("cuda", "cuda")] if torch.cuda.is_available() else [])
    for label, device in combine_cases:
        seconds, cpu = best_time(lambda d=device: espirit_combine(volume, device=d), 1)
        rows.append(
            {
                "case": "volume 16 x 16 coils x 640 x 320",
                "method": f"espirit_combine {label}",
                "seconds_per_slice": seconds / 16,
                "cpu_seconds_per_slice": cpu / 16,
                "seconds_per_volume": seconds,
                "threads": args.threads,
            }
        )

    header = ("case", "method", "wall s", "CPU s", "BART/ours", "1-coh BART", "maxerr BART", "maxerr exact")
    line = "{:<33} {:<27} {:>7} {:>7} {:>9} {:>10} {:>11} {:>12}"
    print("seconds per slice; BART/ours on CPU time (wall-time ratio in the JSON)")
    print(line.format(*header))
    for row in rows:
        ratio = f"{row['bart_over_magphase_cpu']:.1f}x" if "bart_over_magphase_cpu" in row else ""
        vs_bart, vs_exact = row.get("vs_bart"), row.get("vs_exact")
        cpu = row.get("cpu_seconds_per_slice")
        cells = (
            row["case"],
            row["method"],
            f"{row['seconds_per_slice']:.3f}",
            f"{cpu:.3f}" if cpu is not None else "",
            ratio,
            f"{max(vs_bart['one_minus_coherence'], 1e-9):.0e}" if vs_bart else "",
            f"{vs_bart['max_error']:.1e}" if vs_bart else "",
            f"{vs_exact['max_error']:.1e}" if vs_exact else "",
        )
        print(line.format(*cells))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    report = {"benchmark": "espirit", "params": PARAMS.__dict__, "machine": machine, "rows": rows}
    atomic_write_text(json.dumps(report, indent=2), RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
