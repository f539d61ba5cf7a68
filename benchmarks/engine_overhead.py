"""Benchmark the training engine's per-step overhead: ``fit()`` versus a bare PyTorch loop.

Same model (a small residual conv net on 2 x 48 x 48 latent-sized inputs), same optimiser (AdamW), same
in-memory batches. The bare loop does forward, backward, step. ``fit`` adds the DataLoader/sampler,
device transfer, the finite-loss guard (one host sync per step), gradient clipping, the LR scheduler, EMA
and metric accumulation. Both are timed over the same window of steps after a warm-up (checkpoint I/O at
the end of ``fit`` is outside the window). CPU always; CUDA too when present.

    .venv/bin/python benchmarks/engine_overhead.py [--steps 40] [--batch 16] [--threads 2]

Prints a table and writes ``benchmarks/results/engine_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from magphase.training import ProgressEvent, TrainSettings, TrainTaskBase, fit
from magphase.utils.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "engine_overhead.json"


class ResidualConvNet(nn.Module):
    def __init__(self, width: int = 32, blocks: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(2, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(blocks)
        )
        self.head = nn.Conv2d(width, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


class DenoiseTask(TrainTaskBase):
    def build_model(self) -> nn.Module:
        return ResidualConvNet()

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        (x,) = batch
        noisy = x + 0.1 * torch.randn_like(x)
        mse = (model(noisy).float() - x).pow(2).mean()
        return mse, {"mse": mse.detach()}


def bare_loop(data: torch.Tensor, steps: int, batch: int, warmup: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = ResidualConvNet().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    task = DenoiseTask()
    data = data.to(device)
    t0 = 0.0
    for step in range(steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        idx = torch.randint(0, data.shape[0], (batch,), device=device)
        loss, _ = task.loss(model, (data[idx],), step)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return (time.perf_counter() - t0) / (steps - warmup)


def engine(data: torch.Tensor, steps: int, batch: int, warmup: int, device: torch.device) -> float:
    stamps: dict[int, float] = {}

    def record(event: ProgressEvent) -> None:
        if event.step in (warmup, steps):
            _sync(device)
            stamps[event.step] = time.perf_counter()

    settings = TrainSettings(
        steps=steps,
        batch_size=batch,
        lr=1e-3,
        checkpoint_every=10**9,
        log_every=10,
        seed=0,
        device=str(device),
        amp="none",
        ema_decay=0.999,
    )
    with tempfile.TemporaryDirectory() as tmp:
        fit(DenoiseTask(), TensorDataset(data), settings, tmp, progress=record)
    return (stamps[steps] - stamps[warmup]) / (steps - warmup)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warmup = min(5, args.steps // 4)
    data = torch.randn(256, 2, 48, 48)
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        bare = bare_loop(data, args.steps, args.batch, warmup, device)
        eng = engine(data, args.steps, args.batch, warmup, device)
        rows.append(
            {
                "device": str(device),
                "batch": args.batch,
                "bare_ms_per_step": 1e3 * bare,
                "fit_ms_per_step": 1e3 * eng,
                "overhead_ratio": eng / bare,
            }
        )
    print(f"{'device':<8} {'batch':>5} {'bare ms/step':>13} {'fit ms/step':>12} {'fit/bare':>9}")
    for r in rows:
        print(
            f"{r['device']:<8} {r['batch']:>5} {r['bare_ms_per_step']:>13.2f} {r['fit_ms_per_step']:>12.2f} "
            f"{r['overhead_ratio']:>9.3f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": str(torch.__version__),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "steps": args.steps,
        "warmup": warmup,
    }
    atomic_write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
