"""Benchmark autoencoder training throughput and the cost of the input pipeline.

For each network preset (``cpu``, ``paper``) and device (CPU; CUDA when present) it times training steps
(forward, float32 loss of paper Eq. 1, backward, AdamW; bf16 autocast on CUDA as the engine's ``amp=auto``)
two ways, interleaved in rounds so that load from other processes hits both alike:

* in memory: batches indexed from a tensor already on the device;
* real loader: the engine's input path -- :class:`~magphase.data.datasets.PatchDataset` over an
  HDF5 patch store on disk, the engine's :class:`~magphase.training.GlobalBatchSampler`, a torch DataLoader
  (on CUDA with the preset's ``num_workers`` and pinned memory; on CPU in-process, as worker processes
  would compete with the compute) and the host-to-device copy.

Steps alternate (memory, loader, memory, ...) and medians are compared, so bursts of load from other
processes do not land on one side. ``loader_ratio`` = median real-loader step / median in-memory step
(target <= 1.05: the input pipeline is never the bottleneck); ``fetch_fraction`` = median time waiting for
the loader's batch (including the device copy) / median in-memory step, the part of the ratio that is
the input pipeline itself. ``samples_per_s`` is the in-memory throughput.

    .venv/bin/python benchmarks/train_throughput.py [--rounds 4] [--steps-per-round 3] [--threads 1]
        [--paper-cpu-batch 8]

Prints a table and writes ``benchmarks/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from magphase.config.autoencoder import AUTOENCODER_PRESETS
from magphase.conventions import SEQUENCES
from magphase.data.datasets import PatchDataset
from magphase.data.store import StoreWriter
from magphase.models.cvae import AutoencoderSpec
from magphase.stages.autoencoder import AutoencoderTask
from magphase.training import GlobalBatchSampler, move_to_device
from magphase.utils.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def write_store(path: Path, n: int, seed: int = 0) -> Path:
    """A patch store of ``n`` smooth random complex patches (content does not matter for timing)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96] / 96 - 0.5
    rows = [
        dict(
            patch_id=i,
            volume=f"v{i // 10}",
            sequence=SEQUENCES[i % 5],
            label="normal",
            split="train",
            slice=0,
            row=0,
            col=0,
            box_overlap=0.0,
        )
        for i in range(n)
    ]
    with StoreWriter(path, {"patches": (2, 96, 96)}) as w:
        for start in range(0, n, 64):
            k = min(64, n - start)
            mag = rng.uniform(0.2, 1.0, (k, 1, 1)) * np.exp(-(yy**2 + xx**2) / 0.1)
            z = mag * np.exp(1j * rng.uniform(-3, 3, (k, 1, 1)) * xx) + 0.02 * rng.standard_normal(
                (k, 96, 96)
            )
            w.append(rows[start : start + k], patches=np.stack([z.real, z.imag], axis=1))
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    preset: str,
    device: torch.device,
    store: Path,
    batch: int,
    rounds: int,
    steps_per_round: int,
    workers: int,
) -> dict[str, Any]:
    spec = AutoencoderSpec(**AUTOENCODER_PRESETS[preset]["network"])
    task = AutoencoderTask(spec, lambda_grad=0.5, lambda_kl=1e-4, augmentation="flips")
    torch.manual_seed(0)
    model = task.build_model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = torch.bfloat16 if device.type == "cuda" else None

    dataset = PatchDataset(store, split="train")
    total = rounds * steps_per_round + 2
    sampler = GlobalBatchSampler(len(dataset), batch, seed=0, total_steps=total)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    loader_iter = iter(loader)
    memory = {
        "x": torch.from_numpy(dataset.store.read("patches", slice(0, min(len(dataset), 4 * batch)))).to(
            device
        ),
        "sequence": torch.from_numpy(dataset.sequences[: min(len(dataset), 4 * batch)]).to(device),
    }

    def step(batch_data: dict[str, torch.Tensor], i: int) -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = task.loss(model, batch_data, i)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def memory_batch(i: int) -> dict[str, torch.Tensor]:
        idx = (torch.arange(batch, device=device) + i * batch) % memory["x"].shape[0]
        return {"x": memory["x"][idx], "sequence": memory["sequence"][idx]}

    # Warm-up (allocator, kernels, worker start-up) on both paths.
    step(memory_batch(0), 0)
    step(move_to_device(next(loader_iter), device), 0)
    memory_times, loader_times, fetch_times = [], [], []
    for i in range(rounds * steps_per_round):
        # Alternate single steps (ABAB...) and compare medians: load from other processes on a shared
        # machine comes in bursts that a sum over blocks would attribute to one path.
        _sync(device)
        t0 = time.perf_counter()
        step(memory_batch(i), i)
        _sync(device)
        t1 = time.perf_counter()
        data = move_to_device(next(loader_iter), device)
        _sync(device)
        t2 = time.perf_counter()
        step(data, i)
        _sync(device)
        t3 = time.perf_counter()
        memory_times.append(t1 - t0)
        loader_times.append(t3 - t1)
        fetch_times.append(t2 - t1)
    n_steps = len(memory_times)
    t_memory, t_loader = float(np.median(memory_times)), float(np.median(loader_times))
    t_fetch = float(np.median(fetch_times))
    del loader_iter
    return {
        "preset": preset,
        "device": str(device),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "batch": batch,
        "num_workers": workers,
        "amp": "bf16" if amp is not None else "none",
        "steps_timed": n_steps,
        "memory_s_per_step": t_memory,
        "loader_s_per_step": t_loader,
        "fetch_s_per_step": t_fetch,
        "samples_per_s": batch / t_memory,
        "loader_samples_per_s": batch / t_loader,
        "loader_ratio": t_loader / t_memory,
        "fetch_fraction": t_fetch / t_memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--steps-per-round", type=int, default=3, help="timed steps = rounds x this, per path"
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    parser.add_argument("--paper-cpu-batch", type=int, default=8, help="batch of the paper preset on CPU")
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"], choices=sorted(AUTOENCODER_PRESETS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "patches", n=512)
        for device in devices:
            for preset in args.presets:
                batch = AUTOENCODER_PRESETS[preset]["train"]["batch_size"]
                if device.type == "cpu" and preset == "paper":
                    batch = min(batch, args.paper_cpu_batch)
                # Loader workers only where compute runs elsewhere (GPU); on a CPU they would compete with it.
                train = AUTOENCODER_PRESETS[preset]["train"]
                workers = train.get("num_workers", 0) if device.type == "cuda" else 0
                rows.append(
                    benchmark(preset, device, store, batch, args.rounds, args.steps_per_round, workers)
                )
                r = rows[-1]
                print(f"... {r['preset']} on {r['device']}: {r['samples_per_s']:.1f} samples/s", flush=True)
    header = (
        f"{'preset':<6} {'device':<7} {'params M':>8} {'batch':>5} {'workers':>7} {'amp':>5} "
        f"{'samples/s':>10} {'ms/step mem':>12} {'ms/step loader':>15} {'loader/mem':>10} {'fetch/mem':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['preset']:<6} {r['device']:<7} {r['params_M']:>8.3f} {r['batch']:>5} {r['num_workers']:>7} "
            f"{r['amp']:>5} {r['samples_per_s']:>10.1f} {1e3 * r['memory_s_per_step']:>12.1f} "
            f"{1e3 * r['loader_s_per_step']:>15.1f} {r['loader_ratio']:>10.3f} {r['fetch_fraction']:>9.4f}"
        )
    meta = {
        "torch": str(torch.__version__),
        "machine": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": args.threads,
        "rounds": args.rounds,
        "steps_per_round": args.steps_per_round,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
