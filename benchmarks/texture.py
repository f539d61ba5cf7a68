"""Benchmark the phantom's fine-scale content: texture and phase statistics, old code vs new.

A few noise-free volumes per sequence are rendered with :func:`magphase.simulate.phantom.render_volume`
(no coils, no k-space) twice in one run, each in its own process: by the source tree of a baseline
git revision (``--baseline``, default ``main``; exported with ``git archive``) and by this checkout.
The same seeds give the same subject geometry in both, so the new render's tissue labels
(``GroundTruthVolume.tissue_labels``) select the same pixels in both. Reported inside the brain:

* ``mag_slope``: slope of the radially averaged magnitude power spectrum (log-log, 0.1 - 0.5
  cycles/mm) over 64 x 64 squares lying entirely in the brain (Hann window, mean removed);
* ``cov_wm`` / ``cov_gm`` / ``cov_deep``: median local coefficient of variation in 5 x 5 windows
  lying entirely in that tissue;
* ``ref_psnr``: PSNR (dB) of the no-training reference (2 x 2 mean pooling + bilinear
  up-sampling, as ``magphase.evaluation.reconstruction.baseline_reconstruction``) on 96 x 96
  patches (>= 50 % brain, stride 48) of slices divided by their maximum magnitude, and
  ``ref_psnr_own50`` on 50 x 50 brain crops divided by their own maximum;
* ``dphi_std``: RMS of the wrapped phase difference between neighbouring brain pixels (rad), and
  ``dphi_gre20`` the same for the gradient-echo phase the volume's field map would give at
  TE = 20 ms (``-2 pi b0_hz TE``; the simulated sequences are spin echoes);
* ``phase_slope``: power-spectrum slope of the unit phasor exp(i phi) over the same squares;
* ``render_s``: CPU seconds per volume (``time.process_time``, head model already loaded).

Single-threaded. Rendered arrays go to a temporary folder and are deleted. A figure (old / new
magnitude and phase, twilight colormap) is written to ``benchmarks/results/texture.png``.

    .venv/bin/python benchmarks/texture.py [--volumes 2] [--sequences AXT1,AXT2,AXFLAIR] [--fields 3.0,1.5]
        [--baseline main]

Prints a table and writes ``benchmarks/results/texture.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "texture.json"
SQUARE = 64
PATCH = 96
MIN_BRAIN_FRACTION = 0.15  # slices whose brain covers less of the FOV are skipped
GRE_TE_MS = 20.0  # echo time of the gradient-echo phase computed from b0_hz for comparison
FIGURE = Path(__file__).resolve().parent / "results" / "texture.png"
#: Extra volume rendered for the figure only (low slab: sinuses, mastoids and ear canals in view).
FIGURE_SPEC = {"seed": 1000, "sequence": "AXT2", "field_strength_t": 3.0, "slab_offset_mm": -30.0}

#: Published reference points (see docs/simulated-data.md, "Texture and phase statistics").
PUBLISHED = {
    "mag_slope": "-2.0 (natural images: power ~ f^-2, amplitude slope -0.8 .. -1.5, mean -1.2; "
    "Tolhurst et al. 1992; van der Schaaf & van Hateren 1996)",
    "ref_psnr_own50": "31.3 (real 3 T GRE magnitude, 0.47 mm, 50 x 50 crops, own max; issue 24)",
}


def _render_worker(specs_path: Path, out_dir: Path) -> None:
    """Render each spec of a JSON list into out_dir/<i>.npz (runs in a child process)."""
    from magphase.simulate import anatomy
    from magphase.simulate.phantom import VolumeSpec, render_volume

    anatomy.load_head_anatomy()
    render_volume(VolumeSpec(seed=0, sequence="AXT2", matrix=(64, 64), n_slices=2))  # warm-up
    for i, spec in enumerate(json.loads(specs_path.read_text())):
        t0 = time.process_time()
        vol = render_volume(VolumeSpec(**spec))
        cpu = time.process_time() - t0
        labels = getattr(vol, "tissue_labels", np.zeros((0, 0, 0), np.uint8))
        np.savez(
            out_dir / f"{i}.npz",
            image=vol.image,
            brain_mask=vol.brain_mask,
            tissue_labels=labels,
            b0_hz=vol.b0_hz,
            pixel_mm=np.array(vol.voxel_size_mm[1:]),
            render_s=np.array(cpu),
        )


def _run_worker(src: Path, specs_path: Path, out_dir: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(src))
    subprocess.run([sys.executable, __file__, "--worker", str(specs_path), str(out_dir)], check=True, env=env)


def _export_baseline(ref: str, dest: Path) -> str:
    """`git archive` the src/ tree of `ref` into dest; returns the commit hash."""
    commit = subprocess.run(
        ["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    tar_path = dest / "src.tar"
    subprocess.run(["git", "archive", "-o", str(tar_path), commit, "src"], cwd=ROOT, check=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    tar_path.unlink()
    return commit


def _volume_stats(path: Path, labels: np.ndarray) -> dict[str, float]:
    from magphase.simulate import texture as tx

    data = np.load(path)
    image, brain = data["image"], data["brain_mask"]
    pixel_mm = float(data["pixel_mm"][0])
    spectra, phase_spectra, freq = [], [], None
    covs: dict[str, list[float]] = {"cov_wm": [], "cov_gm": [], "cov_deep": []}
    psnr_slice, psnr_own, dphi, dphi_gre = [], [], [], []
    gre = np.exp(-2j * np.pi * data["b0_hz"] * GRE_TE_MS * 1e-3)
    for s in range(image.shape[0]):
        mask = brain[s]
        if mask.mean() < MIN_BRAIN_FRACTION:
            continue
        z = image[s]
        mag = np.abs(z)
        for r, c in tx.brain_squares(mask, SQUARE, SQUARE // 2):
            freq, p = tx.radial_power_spectrum(mag[r : r + SQUARE, c : c + SQUARE], pixel_mm)
            spectra.append(p)
            phasor = z[r : r + SQUARE, c : c + SQUARE]
            phasor = phasor / np.maximum(np.abs(phasor), 1e-12)
            phase_spectra.append(tx.radial_power_spectrum(phasor, pixel_mm)[1])
        for key, code in (("cov_wm", 1), ("cov_gm", 2), ("cov_deep", 3)):
            value = tx.local_cov(mag, labels[s] == code, 5)
            if np.isfinite(value):
                covs[key].append(value)
        normalised = z / mag.max()
        h, w = mask.shape
        for r in range(0, h - PATCH + 1, PATCH // 2):
            for c in range(0, w - PATCH + 1, PATCH // 2):
                if mask[r : r + PATCH, c : c + PATCH].mean() >= 0.5:
                    patch = normalised[r : r + PATCH, c : c + PATCH]
                    psnr_slice.append(tx.psnr_db(tx.pool_bilinear_reference(patch), patch))
        for r, c in tx.brain_squares(mask, 50, 50):
            crop = z[r : r + 50, c : c + 50]
            crop = crop / np.abs(crop).max()
            psnr_own.append(tx.psnr_db(tx.pool_bilinear_reference(crop), crop))
        dphi.append(tx.neighbour_phase_difference_std(z, ndi_erode(mask)))
        dphi_gre.append(tx.neighbour_phase_difference_std(gre[s], ndi_erode(mask)))
    out = {
        "mag_slope": tx.spectrum_slope(freq, np.mean(spectra, axis=0)) if spectra else np.nan,
        "phase_slope": tx.spectrum_slope(freq, np.mean(phase_spectra, axis=0)) if spectra else np.nan,
        "ref_psnr": float(np.mean(psnr_slice)) if psnr_slice else np.nan,
        "ref_psnr_own50": float(np.mean(psnr_own)) if psnr_own else np.nan,
        "dphi_std": float(np.sqrt(np.mean(np.square(dphi)))) if dphi else np.nan,
        "dphi_gre20": float(np.sqrt(np.mean(np.square(dphi_gre)))) if dphi_gre else np.nan,
        "render_s": float(data["render_s"]),
    }
    out |= {k: float(np.median(v)) if v else np.nan for k, v in covs.items()}
    return out


def ndi_erode(mask: np.ndarray) -> np.ndarray:
    """The brain mask less a 2-pixel rim (the phase at the brain edge belongs to CSF and skull)."""
    import scipy.ndimage as ndi

    return ndi.binary_erosion(mask, iterations=2)


def _figure(tmp_path: Path, figure_index: int, first_spec: dict) -> None:
    """Old vs new: magnitude and phase of a mid slice and of a low (sinus) slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(0, "mid slab", 8), (figure_index, "low slab", 3)]
    fig, axes = plt.subplots(4, 4, figsize=(13, 13))
    for col, (index, title, s) in enumerate(panels):
        spec = first_spec if index == 0 else FIGURE_SPEC
        for k, name in enumerate(("old", "new")):
            z = np.flipud(np.load(tmp_path / name / f"{index}.npz")["image"][s])
            mag = np.abs(z)
            ax = axes[2 * k, 2 * col]
            ax.imshow(mag, cmap="gray", vmin=0, vmax=np.percentile(mag, 99.5), interpolation="nearest")
            ax.set_title(f"{name} {spec['sequence']} {title} |m|", fontsize=9)
            axes[2 * k, 2 * col + 1].imshow(
                np.angle(z), cmap="twilight", vmin=-np.pi, vmax=np.pi, interpolation="nearest"
            )
            axes[2 * k, 2 * col + 1].set_title(f"{name} phase", fontsize=9)
            zoom = mag[90:250, 80:240]
            axes[2 * k + 1, 2 * col].imshow(zoom, cmap="gray", vmin=0, vmax=np.percentile(mag, 99.5))
            axes[2 * k + 1, 2 * col].set_title("zoom", fontsize=9)
            axes[2 * k + 1, 2 * col + 1].imshow(
                np.angle(z)[90:250, 80:240], cmap="twilight", vmin=-np.pi, vmax=np.pi
            )
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=55)
    plt.close(fig)


COLUMNS = (
    "mag_slope",
    "cov_wm",
    "cov_gm",
    "cov_deep",
    "ref_psnr",
    "ref_psnr_own50",
    "dphi_std",
    "dphi_gre20",
    "phase_slope",
    "render_s",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=2, help="volumes (seeds) per sequence")
    parser.add_argument("--sequences", default="AXT1,AXT2,AXFLAIR")
    parser.add_argument("--fields", default="3.0,1.5", help="comma-separated field strengths (T)")
    parser.add_argument("--baseline", default="main", help="git revision of the old code")
    parser.add_argument("--worker", nargs=2, metavar=("SPECS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _render_worker(Path(args.worker[0]), Path(args.worker[1]))
        return

    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
    fields = [float(f) for f in args.fields.split(",") if f.strip()]
    specs = [
        {"seed": 1000 + k, "sequence": seq, "field_strength_t": b0}
        for b0 in fields
        for seq in sequences
        for k in range(args.volumes)
    ]
    rows = []
    scratch = ROOT / "runs" if (ROOT / "runs").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="magphase-bench-tex-", dir=scratch) as tmp:
        tmp_path = Path(tmp)
        specs_path = tmp_path / "specs.json"
        specs_path.write_text(json.dumps([*specs, FIGURE_SPEC]))
        baseline_commit = _export_baseline(args.baseline, tmp_path)
        for name, src in (("old", tmp_path / "src"), ("new", ROOT / "src")):
            (tmp_path / name).mkdir()
            _run_worker(src, specs_path, tmp_path / name)
        for i, spec in enumerate(specs):
            labels = np.load(tmp_path / "new" / f"{i}.npz")["tissue_labels"]
            for name in ("old", "new"):
                stats = _volume_stats(tmp_path / name / f"{i}.npz", labels)
                rows.append(
                    {
                        "code": name,
                        "field_t": spec["field_strength_t"],
                        "sequence": spec["sequence"],
                        "seed": spec["seed"],
                        **stats,
                    }
                )
        _figure(tmp_path, len(specs), specs[0])

    summary = []
    for b0 in fields:
        for seq in sequences:
            for name in ("old", "new"):
                sel = [r for r in rows if r["field_t"] == b0 and r["sequence"] == seq and r["code"] == name]
                means = {c: float(np.nanmean([r[c] for r in sel])) for c in COLUMNS}
                summary.append({"field_t": b0, "sequence": seq, "code": name, **means})
    print(
        f"texture and phase inside the brain, {len(specs)} noise-free volumes x (old, new), "
        f"one CPU core ({platform.machine()}); old = {args.baseline} ({baseline_commit[:10]})"
    )
    header = f"{'B0':<5}{'sequence':<9}{'code':<5}" + "".join(f"{c:>15}" for c in COLUMNS)
    print(header)
    for r in summary:
        print(
            f"{r['field_t']:<5}{r['sequence']:<9}{r['code']:<5}" + "".join(f"{r[c]:>15.3f}" for c in COLUMNS)
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from magphase.utils.atomic import atomic_write_text

    payload = {
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "load_average": list(os.getloadavg()),
        "field_strengths_t": fields,
        "baseline": {"ref": args.baseline, "commit": baseline_commit},
        "published": PUBLISHED,
        "summary": summary,
        "per_volume": rows,
    }
    atomic_write_text(json.dumps(payload, indent=2), RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
