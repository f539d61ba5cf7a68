"""Measure the image quality of simulated volumes: noise, dynamic range, slice maxima, reference scores.

For a few volumes per labelled sequence (AXFLAIR, AXT1, AXT1POST) each ground truth is rendered once and
acquired twice, with the acquisition effects off (the simulator before issue 24) and on (the defaults),
then prepared as ``magphase prepare`` does (:func:`magphase.data.prepare.combine_volume`: ESPIRiT
combination; :func:`~magphase.data.prepare.normalise_slices`; brain mask; patch planning and cutting).
Per sequence and arm it reports, on the prepared (slice-max normalised) images:

* ``noise/max``: robust standard deviation (1.4826 MAD) of ``|prepared| - a |truth|`` inside the brain
  (``a`` fitted per slice), i.e. thermal noise plus fine-scale artefact; ``resid/max`` the plain std;
* ``brain/max``: mean brain magnitude;
* where each slice's maximum lies (brain, extra-cerebral head tissue, outside the head mask);
* the no-training reference (2x2 mean pooling + bilinear up-sampling,
  :func:`magphase.evaluation.reconstruction.baseline_reconstruction`) PSNR / SSIM on the 96x96 patches;
* the fraction of volumes with each acquisition effect (truth attribute ``effects_applied``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/image_quality.py [--volumes 3] [--slices 8] [--coils 4]

Prints a table and writes ``benchmarks/results/image_quality.json``. Scratch files go to a temporary
folder and are deleted.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from magphase.config import PrepareConfig  # noqa: E402
from magphase.config.simulate import SimulateConfig  # noqa: E402
from magphase.data.patching import extract_patches  # noqa: E402
from magphase.data.prepare import combine_volume, normalise_slices, plan_volume, volume_rng  # noqa: E402
from magphase.evaluation.metrics import reconstruction_metrics  # noqa: E402
from magphase.evaluation.reconstruction import baseline_reconstruction  # noqa: E402
from magphase.mri.brainmask import BrainMaskParams, brain_mask  # noqa: E402
from magphase.simulate.acquisition import write_acquisition  # noqa: E402
from magphase.simulate.dataset import SimulatedDatasetPlan, acquire_planned, raw_path  # noqa: E402
from magphase.simulate.kspace_effects import EFFECT_NAMES, AcquisitionEffects  # noqa: E402
from magphase.simulate.phantom import render_volume  # noqa: E402
from magphase.utils.atomic import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "image_quality.json"
SEQUENCES = ("AXFLAIR", "AXT1", "AXT1POST")
ARMS = {"old (effects off)": AcquisitionEffects.off(), "new (effects on)": AcquisitionEffects()}


def image_statistics(images: np.ndarray, truth) -> dict[str, float | list[int]]:
    """Noise, dynamic range and slice-maximum location of prepared ``images`` (S, H, W) vs the truth."""
    mag, ref = np.abs(images), np.abs(truth.image)
    noise, resid, brain_mean, where = [], [], [], [0, 0, 0]
    for s in range(mag.shape[0]):
        brain = truth.brain_mask[s]
        if brain.sum() < 200:
            continue
        a = float((mag[s][brain] * ref[s][brain]).sum() / max((ref[s][brain] ** 2).sum(), 1e-12))
        r = mag[s][brain] - a * ref[s][brain]
        noise.append(1.4826 * float(np.median(np.abs(r - np.median(r)))))
        resid.append(float(r.std()))
        brain_mean.append(float(mag[s][brain].mean()))
        i = np.unravel_index(int(np.argmax(mag[s])), mag[s].shape)
        where[0 if brain[i] else 1 if truth.head_mask[s][i] else 2] += 1
    return {
        "noise_over_max": float(np.mean(noise)),
        "residual_over_max": float(np.mean(resid)),
        "brain_mean_over_max": float(np.mean(brain_mean)),
        "max_in_brain_head_outside": where,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=3, help="volumes per sequence")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--coils", type=int, default=4)
    parser.add_argument("--matrix", type=int, default=320)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = SimulateConfig(
        volumes=len(SEQUENCES) * args.volumes * 2,
        n_slices=args.slices,
        coils={args.coils: 1.0},
        matrix=(args.matrix, args.matrix),
        sequence_mix=dict.fromkeys(SEQUENCES, 1.0),
        min_volumes_per_cell=0,
    )
    plan = SimulatedDatasetPlan.build(cfg, seed=args.seed)
    chosen = [v for seq in SEQUENCES for v in [p for p in plan.volumes if p.sequence == seq][: args.volumes]]
    prep = PrepareConfig()
    mask_params = BrainMaskParams(**prep.brain_mask.model_dump())
    per_volume: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="magphase-bench-iq-") as tmp:
        for volume in chosen:
            truth_volume = render_volume(volume.volume_spec())
            for arm, effects in ARMS.items():
                site = dataclasses.replace(plan.sites[volume.site], effects=effects)
                t0 = time.perf_counter()
                acquisition = acquire_planned(volume, truth_volume, site)
                acquire_s = time.perf_counter() - t0
                raw = raw_path(Path(tmp) / arm.split()[0], volume)
                raw.parent.mkdir(parents=True, exist_ok=True)
                write_acquisition(raw, acquisition)
                images = normalise_slices(combine_volume(raw, prep)[0])
                pixel_mm = cfg.fov_mm[0] / args.matrix
                masks = brain_mask(np.abs(images), mask_params, pixel_mm)
                plans = plan_volume("normal", masks, [], [], prep, volume_rng(0, raw.name))
                patches = extract_patches(images, plans)
                x = torch.from_numpy(patches)
                scores = reconstruction_metrics(baseline_reconstruction(x), x)
                applied = [e for e in str(acquisition.truth.attrs.get("effects_applied", "")).split(",") if e]
                per_volume.append(
                    {
                        "arm": arm,
                        "stem": volume.stem,
                        "sequence": volume.sequence,
                        "snr": volume.snr,
                        "acquire_s": acquire_s,
                        "patches": len(patches),
                        "reference_psnr": float(np.mean(scores["psnr"])),
                        "reference_ssim": float(np.mean(scores["ssim"])),
                        "effects_applied": applied,
                        **image_statistics(images, acquisition.truth),
                    }
                )
                for path in (raw, raw.parent / "truth" / raw.name):
                    path.unlink()

    rows = []
    for arm in ARMS:
        for seq in SEQUENCES:
            vols = [v for v in per_volume if v["arm"] == arm and v["sequence"] == seq]
            where = np.sum([v["max_in_brain_head_outside"] for v in vols], axis=0)
            rows.append(
                {
                    "arm": arm,
                    "sequence": seq,
                    "volumes": len(vols),
                    **{
                        k: float(np.mean([v[k] for v in vols]))
                        for k in (
                            "snr",
                            "noise_over_max",
                            "residual_over_max",
                            "brain_mean_over_max",
                            "reference_psnr",
                            "reference_ssim",
                            "acquire_s",
                        )
                    },
                    "max_in_brain_head_outside": [int(v) for v in where],
                    "effect_fractions": {
                        e: float(np.mean([e in v["effects_applied"] for v in vols])) for e in EFFECT_NAMES
                    },
                }
            )
    print(
        f"image quality of simulated volumes ({args.volumes}/sequence, {args.coils} coils, "
        f"{args.matrix}^2, {args.slices} slices; one CPU core, {platform.machine()})"
    )
    print(
        f"{'arm':<18}{'seq':<10}{'snr':>6}{'noise/max':>10}{'resid/max':>10}{'brain/max':>10}"
        f"{'max b/h/o':>11}{'ref PSNR':>9}{'ref SSIM':>9}{'acq s':>7}  effects (trunc/pf/motion/flow)"
    )
    for r in rows:
        frac = "/".join(f"{r['effect_fractions'][e]:.2f}" for e in EFFECT_NAMES)
        where = "/".join(str(v) for v in r["max_in_brain_head_outside"])
        print(
            f"{r['arm']:<18}{r['sequence']:<10}{r['snr']:>6.1f}{r['noise_over_max']:>10.4f}"
            f"{r['residual_over_max']:>10.4f}{r['brain_mean_over_max']:>10.3f}{where:>11}"
            f"{r['reference_psnr']:>9.2f}{r['reference_ssim']:>9.4f}{r['acquire_s']:>7.2f}  {frac}"
        )
    payload = {
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "load_average": list(os.getloadavg()),
        "settings": vars(args),
        "results": rows,
        "per_volume": per_volume,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(payload, indent=2), RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
