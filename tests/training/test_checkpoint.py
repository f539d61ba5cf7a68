"""RNG capture/restore, atomic writes, weights export helpers."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from magphase.models.weights import read_weights_metadata
from magphase.training.checkpoint import (
    atomic_torch_save,
    capture_rng_state,
    list_snapshots,
    restore_rng_state,
    save_snapshot,
)
from magphase.utils.seeds import derive_seed


def _draw() -> tuple[float, float, float, float]:
    return random.random(), random.gauss(0, 1), float(np.random.standard_normal())  # noqa: NPY002, float(torch.randn(()))


def test_rng_round_trip_through_weights_only_file() -> None:
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)  # noqa: NPY002 (the engine captures the legacy global RNG that user code draws from)
    _draw()
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    buf = io.BytesIO()
    torch.save(capture_rng_state(), buf)
    expected = [_draw() for _ in range(3)]
    _draw()
    buf.seek(0)
    restore_rng_state(torch.load(buf, weights_only=True))
    assert [_draw() for _ in range(3)] == expected


def test_atomic_save_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "ck.pt"
    atomic_torch_save({"a": torch.ones(2)}, target)
    atomic_torch_save({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.zeros(2))
    assert [p.name for p in target.parent.iterdir()] == ["ck.pt"]
    assert target.stat().st_mode & 0o044  # readable by others like a plain open() file (umask permitting)


def test_snapshots_listed_by_step_with_metadata(tmp_path: Path) -> None:
    lin = torch.nn.Linear(2, 2)
    for step in (30, 10, 20):
        save_snapshot(lin.state_dict(), tmp_path, step=step, model_config={"width": 2})
    snaps = list_snapshots(tmp_path)
    assert list(snaps) == [10, 20, 30]
    meta = read_weights_metadata(snaps[20])
    assert meta["step"] == 20 and meta["model_config"] == {"width": 2}


def test_derive_seed_is_stable_and_distinct() -> None:
    assert derive_seed(1, 0) == derive_seed(1, 0)
    assert len({derive_seed(1, r) for r in range(8)} | {derive_seed(2, 0)}) == 9
    assert 0 <= derive_seed(123, 4, 5) < 2**63
