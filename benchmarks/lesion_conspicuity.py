"""How visible are the simulated lesions? Contrast-to-noise and phase contrast per sequence and finding.

Plans a dataset with the given simulate preset and renders its ABNORMAL volumes noise-free with the
phantom (:func:`magphase.simulate.phantom.render_volume`, the images and lesion masks ``magphase
simulate`` writes before coils and noise). For every lesion on every slice where its annotated mask
covers at least ``--min-pixels`` pixels:

- ``contrast``: mean magnitude inside the mask minus the mean over a ring of normal brain around it
  (2-6 pixels out, other lesions excluded), in units of the slice;
- ``cnr``: |contrast| over the noise standard deviation of the combined image, taken as the slice's
  brain-average magnitude over the preset's SNR (the simulator's definition of SNR: brain-average
  signal of an optimal combination over its noise; x 0.75 at 1.5 T, as ``snr_factor_1p5t``);
- ``detectability``: cnr x sqrt(lesion pixels), the matched-filter SNR of a uniform blob of that size
  (a rough guide to what an ideal observer could see; >= 5 is the Rose criterion);
- ``phase``: the angle between the lesion's and the ring's mean complex value, radians.

    .venv/bin/python benchmarks/lesion_conspicuity.py [--volumes 120] [--preset reproduce] [--workers 2]

Prints a table per (sequence, label) and writes ``benchmarks/results/lesion_conspicuity.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from magphase.config.simulate import SimulateConfig  # noqa: E402
from magphase.simulate.dataset import PlannedVolume, SimulatedDatasetPlan  # noqa: E402
from magphase.simulate.phantom import render_volume  # noqa: E402
from magphase.utils.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lesion_conspicuity.json"
_RING = (2, 6)


def lesion_measures(
    image: np.ndarray, brain: np.ndarray, masks: np.ndarray, snr: float, min_pixels: int = 4
) -> list[dict]:
    """Per (lesion, slice) contrast, CNR, detectability and phase contrast (see the module docstring).

    image: complex (S, H, W) noise-free; brain: bool (S, H, W); masks: bool (L, S, H, W).
    """
    out = []
    any_lesion = masks.any(axis=0) if len(masks) else np.zeros_like(brain)
    mag = np.abs(image)
    for i, mask in enumerate(masks):
        for s in np.nonzero(mask.reshape(mask.shape[0], -1).sum(axis=1) >= min_pixels)[0]:
            m = mask[s]
            outer = ndimage.binary_dilation(m, iterations=_RING[1])
            inner = ndimage.binary_dilation(m, iterations=_RING[0])
            ring = outer & ~inner & brain[s] & ~any_lesion[s]
            if ring.sum() < min_pixels or not brain[s].any():
                continue
            sigma = float(mag[s][brain[s]].mean()) / snr
            contrast = float(mag[s][m].mean() - mag[s][ring].mean())
            cnr = abs(contrast) / sigma
            z_l, z_r = image[s][m].mean(), image[s][ring].mean()
            phase = float(abs(np.angle(z_l * np.conj(z_r)))) if abs(z_l) > 0 and abs(z_r) > 0 else 0.0
            out.append(
                {
                    "lesion": i,
                    "slice": int(s),
                    "pixels": int(m.sum()),
                    "contrast": contrast,
                    "cnr": cnr,
                    "detectability": cnr * float(np.sqrt(m.sum())),
                    "phase": phase,
                }
            )
    return out


def _measure(args: tuple[PlannedVolume, float, float, int]) -> list[dict]:
    volume, snr, factor_1p5, min_pixels = args
    truth = render_volume(volume.volume_spec())
    if not truth.lesions:
        return []
    snr_eff = snr * (factor_1p5 if truth.field_strength_t < 2.0 else 1.0)
    masks = np.stack([lesion.mask for lesion in truth.lesions])
    rows = lesion_measures(truth.image, truth.brain_mask, masks, snr_eff, min_pixels)
    for r in rows:
        lesion = truth.lesions[r["lesion"]]
        r.update(
            sequence=truth.sequence,
            label=lesion.label,
            susceptibility=bool(lesion.susceptibility),
            field_strength_t=truth.field_strength_t,
            stem=volume.stem,
        )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["sequence"], r["label"])].append(r)
        groups[(r["sequence"], "all")].append(r)
    table = []
    for (sequence, label), rs in sorted(groups.items()):
        cnr = np.array([r["cnr"] for r in rs])
        det = np.array([r["detectability"] for r in rs])
        phase = np.array([r["phase"] for r in rs])
        sign = np.array([np.sign(r["contrast"]) for r in rs])
        table.append(
            {
                "sequence": sequence,
                "label": label,
                "n": len(rs),
                "cnr_median": round(float(np.median(cnr)), 2),
                "cnr_below_1": round(float(np.mean(cnr < 1.0)), 3),
                "detectability_median": round(float(np.median(det)), 1),
                "detectability_below_5": round(float(np.mean(det < 5.0)), 3),
                "brighter": round(float(np.mean(sign > 0)), 3),
                "phase_median_rad": round(float(np.median(phase)), 3),
                "phase_p90_rad": round(float(np.percentile(phase, 90)), 3),
            }
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=120, help="abnormal volumes rendered")
    parser.add_argument("--preset", default="reproduce")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-pixels", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    base = SimulateConfig(preset=args.preset)
    cfg = SimulateConfig(preset=args.preset, volumes=max(base.volumes, 4 * args.volumes), external_volumes=0)
    plan = SimulatedDatasetPlan.build(cfg, args.seed)
    abnormal = [v for v in plan.volumes if v.volume_class == "abnormal"][: args.volumes]
    t0 = time.perf_counter()
    jobs = [(v, cfg.snr, cfg.snr_factor_1p5t, args.min_pixels) for v in abnormal]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = [r for vol in pool.map(_measure, jobs, chunksize=2) for r in vol]
    seconds = time.perf_counter() - t0
    table = summarise(rows)
    print(f"{len(abnormal)} abnormal volumes ({args.preset}), {len(rows)} lesion slices, {seconds:.0f} s")
    line = "{:9s} {:32s} {:>5s} {:>7s} {:>7s} {:>7s} {:>7s} {:>8s} {:>8s} {:>8s}"
    heads = ("sequence", "label", "n", "CNR med", "CNR<1", "det med", "det<5", "brighter", "dphi med")
    heads += ("dphi p90",)
    print(line.format(*heads))
    for t in table:
        print(
            line.format(
                t["sequence"],
                t["label"],
                str(t["n"]),
                f"{t['cnr_median']:.2f}",
                f"{t['cnr_below_1']:.2f}",
                f"{t['detectability_median']:.1f}",
                f"{t['detectability_below_5']:.2f}",
                f"{t['brighter']:.2f}",
                f"{t['phase_median_rad']:.3f}",
                f"{t['phase_p90_rad']:.3f}",
            )  # fmt: skip
        )
    result = {
        "preset": args.preset,
        "abnormal_volumes": len(abnormal),
        "lesion_slices": len(rows),
        "snr": cfg.snr,
        "seconds": round(seconds, 1),
        "table": table,
    }
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
