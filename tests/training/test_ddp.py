"""Two gloo ranks under torchrun end with identical weights equal to one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training_task import TinyRegression, ddp_parity_settings, tiny_dataset

from magphase.training import fit

WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS, BATCH = 7, 8


def _single_process(out: Path, weighted: bool) -> dict[str, torch.Tensor]:
    dataset = tiny_dataset()
    settings = ddp_parity_settings(STEPS, BATCH)
    weights = np.linspace(1.0, 3.0, len(dataset)) if weighted else None
    result = fit(TinyRegression(), dataset, settings, out, sample_weights=weights)
    state = {f"model.{k}": v for k, v in result.model.state_dict().items()}
    return state | {f"ema.{k}": v for k, v in result.ema_model.state_dict().items()}


@pytest.mark.slow
def test_two_gloo_ranks_match_single_process(tmp_path: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        # --standalone: torchrun picks a free rendezvous port itself (no probe-then-bind race).
        "--standalone",
        str(WORKER),
        str(tmp_path),
        str(STEPS),
        str(BATCH),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for variant, weighted in (("uniform", False), ("weighted", True)):
        rank0 = torch.load(tmp_path / f"{variant}_rank0.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"{variant}_rank1.pt", weights_only=True)
        single = _single_process(tmp_path / f"single_{variant}", weighted)
        for key, value in rank0.items():
            assert torch.equal(value, rank1[key]), f"{variant}: ranks differ in {key}"
            torch.testing.assert_close(value, single[key], rtol=0, atol=1e-6, msg=f"{variant}: {key}")
        # only rank 0 writes the run folder; its metrics cover every logged step once
        lines = (tmp_path / variant / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 4
