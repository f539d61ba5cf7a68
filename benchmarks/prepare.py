"""Benchmark ``magphase prepare`` per volume: volumes per minute, and the time for all of fastMRI brain.

A synthetic head volume at fastMRI brain size (default 16 coils, 640 x 320 k-space with 2x readout
oversampling, 16 slices: a 320 x 320 recon) is written once in fastMRI format; the whole per-volume
pipeline (:func:`magphase.data.prepare.process_volume`: read + oversampling removal, ESPIRiT
combination, normalisation, brain mask, patch planning and cutting; an abnormal volume with 5 boxes)
is then timed ``--repeats`` times, with a stage breakdown, on CPU and, when present, on CUDA.
The extrapolation to the 6,970 fastMRI brain volumes assumes every volume costs as much as this one
(most are 16 coils x 640 x 320 x 16 slices; many have fewer coils or slices, so it is an upper
estimate) and perfect scaling over ``--workers`` processes / GPUs.

    .venv/bin/python benchmarks/prepare.py [--coils 16] [--slices 16] [--repeats 2] [--threads N]

Prints a table and writes ``benchmarks/results/prepare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from magphase.config import PrepareConfig
from magphase.data.patching import extract_patches
from magphase.data.prepare import (
    VolumeTask,
    normalise_slices,
    pixel_boxes,
    plan_volume,
    process_volume,
    volume_rng,
)
from magphase.io.annotations import Box, normalize_label
from magphase.io.fastmri import open_volume, write_volume
from magphase.io.ismrmrd import AcquisitionHeader
from magphase.mri.brainmask import BrainMaskParams, brain_mask
from magphase.mri.coils import espirit_combine
from magphase.mri.fft import fft2c
from magphase.mri.kspace import remove_readout_oversampling
from magphase.utils.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "prepare.json"
FASTMRI_BRAIN_VOLUMES = 6970


def synthetic_volume(path: Path, coils: int, slices: int, recon: int = 320, seed: int = 0) -> list[Box]:
    """Write a head-like multi-coil volume (brain, CSF, skull, scalp; smooth phase) and return 5 boxes."""
    rng = np.random.default_rng(seed)
    h = w = recon
    yy, xx = np.mgrid[0 : 2 * h, 0:w].astype(np.float32)
    cy, cx = h, w / 2
    kspace = np.empty((slices, coils, 2 * h, w), np.complex64)
    angles = 2 * np.pi * np.arange(coils) / coils
    maps = np.stack(
        [
            np.exp(
                -((yy - cy - 0.6 * h * np.sin(a)) ** 2 + (xx - cx - 0.6 * w * np.cos(a)) ** 2)
                / (2 * (0.5 * h) ** 2)
            )
            * np.exp(1j * (a + 0.01 * (xx - cx)))
            for a in angles
        ]
    ).astype(np.complex64)
    for s in range(slices):
        shrink = np.sqrt(max(0.3, 1 - 1.2 * ((s - slices / 2) / slices) ** 2))
        r = np.sqrt(((yy - cy) / (0.44 * h * shrink)) ** 2 + ((xx - cx) / (0.38 * w * shrink)) ** 2)
        mag = np.where(r < 1, 0.8, 0.0)
        mag = np.where(r < 0.9, 0.03, mag)
        mag = np.where(r < 0.84, 0.15, mag)
        mag = np.where(r < 0.8, 0.55 + 0.05 * rng.standard_normal(r.shape), mag)
        image = (mag * np.exp(1j * (0.002 * (xx - cx) ** 1 + 0.3 * s))).astype(np.complex64)
        coil_k = fft2c(image[None] * maps)
        noise = 0.002 * (rng.standard_normal(coil_k.shape) + 1j * rng.standard_normal(coil_k.shape))
        kspace[s] = (coil_k + noise).astype(np.complex64)
    header = AcquisitionHeader(
        encoded_matrix=(2 * h, w, 1),
        encoded_fov_mm=(440.0, 220.0, 5.0),
        recon_matrix=(h, w, 1),
        recon_fov_mm=(220.0, 220.0, 5.0),
        field_strength_t=3.0,
        tr_ms=9000.0,
        te_ms=100.0,
    )
    write_volume(path, kspace, header)
    return [
        Box(path.stem, slices // 2 + k % 3 - 1, 120 + 15 * k, 120 + 10 * k, 12 + 4 * k, 10 + 3 * k, "Mass")
        for k in range(5)
    ]


def time_stages(task: VolumeTask, cfg: PrepareConfig, device: str) -> dict[str, float]:
    """Seconds per stage of one volume (the same library calls process_volume makes)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t0 = time.perf_counter()
    with open_volume(task.path) as vol:
        kspace = np.stack([remove_readout_oversampling(vol.kspace_slice(i), 2) for i in range(vol.n_slices)])
        recon = vol.recon_shape
    t1 = time.perf_counter()
    images = np.asarray(espirit_combine(kspace, oversampling=None, recon_size=recon, device=device))
    sync()
    t2 = time.perf_counter()
    images = normalise_slices(images)
    masks = brain_mask(np.abs(images), BrainMaskParams(**cfg.brain_mask.model_dump()), 220.0 / 320)
    t3 = time.perf_counter()
    boxes = pixel_boxes(task.boxes, images.shape)
    plans = plan_volume("abnormal", masks, boxes, [True] * len(boxes), cfg, volume_rng(0, task.volume))
    extract_patches(images, plans)
    t4 = time.perf_counter()
    return {"read_s": t1 - t0, "espirit_s": t2 - t1, "mask_s": t3 - t2, "patches_s": t4 - t3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--coils", type=int, default=16)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--workers", type=int, default=None, help="processes assumed for the extrapolation")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PrepareConfig()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file_brain_AXFLAIR_200_6000001.h5"
        boxes = synthetic_volume(path, args.coils, args.slices)
        size_mb = path.stat().st_size / 2**20
        task = VolumeTask(
            path, "abnormal", tuple(boxes), tuple(normalize_label(x) for x in cfg.labels.abnormal_labels)
        )
        for device in devices:
            process_volume(task, cfg, 0, device)  # warm-up (allocations, CUDA context, kernels)
            totals, stages = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                result = process_volume(task, cfg, 0, device)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                totals.append(time.perf_counter() - t)
                stages.append(time_stages(task, cfg, device))
            per_volume = float(np.median(totals))
            workers = args.workers or (1 if device.startswith("cuda") else max(1, (os.cpu_count() or 1)))
            threads = torch.get_num_threads()
            rows.append(
                {
                    "device": torch.cuda.get_device_name()
                    if device.startswith("cuda")
                    else f"cpu x{threads} threads",
                    "coils": args.coils,
                    "slices": args.slices,
                    "kspace": [2 * 320, 320],
                    "file_mb": round(size_mb, 1),
                    "patches": len(result.rows),
                    "seconds_per_volume": round(per_volume, 3),
                    "best_seconds_per_volume": round(float(min(totals)), 3),
                    "volumes_per_minute": round(60.0 / per_volume, 2),
                    **{k: round(float(np.median([s[k] for s in stages])), 3) for k in stages[0]},
                    "fastmri_hours_1_process": round(FASTMRI_BRAIN_VOLUMES * per_volume / 3600, 2),
                    "extrapolation_processes": workers,
                    "fastmri_hours_parallel": round(FASTMRI_BRAIN_VOLUMES * per_volume / 3600 / workers, 2),
                }
            )
    header = [
        "device",
        "s/vol (median)",
        "best s/vol",
        "vol/min",
        "read",
        "espirit",
        "mask",
        "patches",
        "6970 vols (1 proc)",
        "parallel",
    ]
    print(" | ".join(header))
    for r in rows:
        print(
            " | ".join(
                [
                    r["device"],
                    f"{r['seconds_per_volume']:.2f}",
                    f"{r['best_seconds_per_volume']:.2f}",
                    f"{r['volumes_per_minute']:.1f}",
                    f"{r['read_s']:.2f}",
                    f"{r['espirit_s']:.2f}",
                    f"{r['mask_s']:.2f}",
                    f"{r['patches_s']:.3f}",
                    f"{r['fastmri_hours_1_process']:.1f} h",
                    f"{r['fastmri_hours_parallel']:.1f} h on {r['extrapolation_processes']}",
                ]
            )
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "prepare",
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "fastmri_brain_volumes": FASTMRI_BRAIN_VOLUMES,
        "load_average_1min": os.getloadavg()[0],
        "rows": rows,
    }
    atomic_write_text(json.dumps(payload, indent=2), RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
