"""Benchmark PhaseGen: training steps/s and phase sampling patches/s (DDIM K = 10, 25, 50; DDPM extrapolated).

Model: the complex U-Net of a preset with random weights (timing does not depend on training) on
96 x 96 patches. Training step = the task's loss (noise, forward, L1) + backward + AdamW, float32 or under
autocast. Sampling = :func:`magphase.generative.phase_diffusion.sample_phase` (one network evaluation
per step; DDPM uses all T = 1000 steps, so its time is extrapolated from the per-evaluation cost, not
run). The overhead of the sampler over its network evaluations (noise generation, float64 updates,
magnitude projection) is reported too; times are minima over repeats (other processes only ever add time).

    .venv/bin/python benchmarks/phasegen.py [--preset cpu] [--batch 16] [--threads 2] [--amp none|bf16]

Prints a table and writes ``benchmarks/results/phasegen.json``. CPU always; CUDA too when present
(``--gpu-preset paper``, bf16).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from magphase.config.phasegen import PHASEGEN_PRESETS, DiffusionSettings
from magphase.generative.phase_diffusion import sample_phase
from magphase.models.unet import count_parameters
from magphase.stages.phasegen import PhaseGenTask
from magphase.utils.precision import resolve_amp

RESULTS = Path(__file__).resolve().parent / "results" / "phasegen.json"
STEPS = (10, 25, 50)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def bench(device: torch.device, preset: str, batch: int, repeats: int, amp: str) -> dict[str, Any]:
    torch.manual_seed(0)
    diffusion = DiffusionSettings()
    task = PhaseGenTask(PHASEGEN_PRESETS[preset]["network"], diffusion)
    model = task.build_model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp_dtype = resolve_amp(amp, device)
    x = {"x": torch.randn(batch, 2, 96, 96, device=device)}

    def train_step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss, _ = task.loss(model, x, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t_train = _time(train_step, device, repeats)
    model.eval()
    model.diffusion = diffusion
    mag = torch.rand(batch, 96, 96)
    z = torch.randn(batch, 1, 96, 96, dtype=torch.complex64, device=device)
    tt = torch.zeros(batch, dtype=torch.long, device=device)

    @torch.no_grad()
    def forward() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            model(z, z.abs(), tt)

    t_forward = _time(forward, device, 2 * repeats)
    rows = []
    for k in STEPS:
        t = _time(
            lambda k=k: sample_phase(model, mag, steps=k, batch_size=batch, amp=amp),
            device,
            max(1, repeats - 1),
        )
        rows.append(
            {
                "sampler": f"ddim K={k}",
                "evaluations": k,
                "seconds_per_batch": round(t, 4),
                "patches_per_s": round(batch / t, 3),
                "overhead_ratio": round(t / (k * t_forward), 4),
            }
        )
    t_ddpm = diffusion.timesteps * t_forward * rows[-1]["overhead_ratio"]
    rows.append(
        {
            "sampler": f"ddpm T={diffusion.timesteps} (extrapolated)",
            "evaluations": diffusion.timesteps,
            "seconds_per_batch": round(t_ddpm, 2),
            "patches_per_s": round(batch / t_ddpm, 4),
            "overhead_ratio": None,
        }
    )
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "preset": preset,
        "parameters": count_parameters(model),
        "batch": batch,
        "amp": amp,
        "train_step_s": round(t_train, 4),
        "train_samples_per_s": round(batch / t_train, 2),
        "forward_s": round(t_forward, 5),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(PHASEGEN_PRESETS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--gpu-preset", default="paper", choices=sorted(PHASEGEN_PRESETS))
    parser.add_argument("--gpu-batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [bench(torch.device("cpu"), args.preset, args.batch, args.repeats, args.amp)]
    if torch.cuda.is_available():
        results.append(bench(torch.device("cuda"), args.gpu_preset, args.gpu_batch, args.repeats, "bf16"))
    head = f"{'device':<7}{'preset':<7}{'amp':<6}{'B':>4}  {'sampler':<28}"
    print(head + f"{'s/batch':>9}{'patch/s':>9}{'overhead':>10}")
    for res in results:
        for r in res["rows"]:
            over = f"{r['overhead_ratio']:.3f}" if r["overhead_ratio"] is not None else "-"
            print(
                f"{res['device']:<7}{res['preset']:<7}{res['amp']:<6}{res['batch']:>4}  {r['sampler']:<28}"
                f"{r['seconds_per_batch']:>9.3f}{r['patches_per_s']:>9.3f}{over:>10}"
            )
        print(
            f"  {res['parameters'] / 1e6:.2f} M params; training step (batch {res['batch']}) "
            f"{res['train_step_s']:.3f} s = {res['train_samples_per_s']:.1f} samples/s; one forward "
            f"{res['forward_s'] * 1e3:.1f} ms"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
