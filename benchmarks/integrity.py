"""What the content checksums cost: writing and opening a patch store, saving and loading weights.

A store of ``--patches`` 2 x 96 x 96 float32 patches (73.7 KB each; the reproduce preset holds about
4,400, the paper's set 70,794) is written with :class:`magphase.data.store.StoreWriter` (which hashes
``arrays.h5`` and ``manifest.csv`` on close) and opened three ways: first open in a process (hashes
both files), a second open of the unchanged store (cached: no hashing), and ``verify=False``. Weights
of ``--params`` float32 parameters are saved (tensor checksum added) and loaded (checksum verified),
against plain safetensors ``save_file`` / ``load_file``.

    .venv/bin/python benchmarks/integrity.py [--patches 2000] [--params 20000000]

Prints a table and writes ``benchmarks/results/integrity.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from magphase.data.store import Store, StoreWriter
from magphase.models.weights import load_ema_weights, save_weights
from magphase.utils import integrity
from magphase.utils.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=2000)
    ap.add_argument("--params", type=int, default=20_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chunk = rng.standard_normal((100, 2, 96, 96)).astype(np.float32)
        t0 = time.perf_counter()
        with StoreWriter(tmp / "store", {"patches": (2, 96, 96)}) as w:
            for start in range(0, args.patches, 100):
                n = min(100, args.patches - start)
                w.append([dict(patch_id=start + i, split="train") for i in range(n)], patches=chunk[:n])
        write_s = time.perf_counter() - t0
        size_mb = (tmp / "store" / "arrays.h5").stat().st_size / 1e6
        hash_s = _time(lambda: integrity.file_sha256(tmp / "store" / "arrays.h5"))

        def first_open() -> None:
            integrity._VERIFIED.clear()
            Store(tmp / "store")

        first = _time(first_open)
        Store(tmp / "store")
        cached = _time(lambda: Store(tmp / "store"))
        unverified = _time(lambda: Store(tmp / "store", verify=False))
        rows += [
            ("store write (incl. hashing)", write_s, f"{args.patches} patches, {size_mb:.0f} MB"),
            ("sha256 of arrays.h5 alone", hash_s, f"{size_mb / hash_s:.0f} MB/s"),
            ("store open, first in process (verifies)", first, ""),
            ("store open, again (cached)", cached, ""),
            ("store open, verify=False", unverified, ""),
        ]

        state = {"w": torch.randn(args.params)}
        size = f"{args.params * 4 / 1e6:.0f} MB"
        rows += [
            (
                "weights save, plain safetensors",
                _time(lambda: save_file(state, str(tmp / "a.st"))),
                size,
            ),
            ("weights save, with checksum", _time(lambda: save_weights(state, tmp / "b.st")), ""),
            ("weights load, plain safetensors", _time(lambda: load_file(str(tmp / "a.st"))), ""),
            ("weights load, checksum verified", _time(lambda: load_ema_weights(tmp / "b.st")), ""),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'seconds':>8}  note")
    for name, sec, note in rows:
        print(f"{name:<{width}}  {sec:8.3f}  {note}")
    out = ROOT / "benchmarks" / "results" / "integrity.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "patches": args.patches,
        "params": args.params,
        "rows": [dict(op=n, seconds=s, note=t) for n, s, t in rows],
    }
    atomic_write_text(json.dumps(payload, indent=2) + "\n", out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
