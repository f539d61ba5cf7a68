"""Exact resume on CPU: a killed and resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_training_task import TinyRegression, tiny_dataset

from magphase.training import ProgressEvent, TrainResult, TrainSettings, fit, load_checkpoint
from magphase.training.metrics import read_metrics


class _Killed(Exception):
    """Stands in for SIGKILL: the run stops between two checkpoints."""


def _settings(**kw: Any) -> TrainSettings:
    base = dict(
        steps=10,
        batch_size=8,
        lr=1e-2,
        warmup_steps=2,
        min_lr_ratio=0.1,
        checkpoint_every=3,
        log_every=1,
        seed=5,
        deterministic=True,
        device="cpu",
        ema_decay=0.8,
        ema_start_step=2,
    )
    return TrainSettings(**(base | kw))


def _assert_same_state(a: TrainResult, b: TrainResult) -> None:
    for x, y in ((a.model, b.model), (a.ema_model, b.ema_model)):
        for (k, v), w in zip(x.state_dict().items(), y.state_dict().values(), strict=True):
            assert torch.equal(v, w), k
    opt_a = load_checkpoint(a.checkpoint_path)["optimizer"]["state"]
    opt_b = load_checkpoint(b.checkpoint_path)["optimizer"]["state"]
    for idx in opt_a:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_a[idx][key], opt_b[idx][key])


@pytest.mark.parametrize("weighted", [False, True])
def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path, weighted: bool) -> None:
    task = TinyRegression(input_noise=0.2)  # draws torch noise in every step: the RNG state must resume
    data = tiny_dataset()
    weights = np.linspace(0.5, 2.0, len(data)) if weighted else None
    reference = fit(task, data, _settings(), tmp_path / "ref", sample_weights=weights)

    def kill_at_8(event: ProgressEvent) -> None:
        if event.step == 8:
            raise _Killed

    with pytest.raises(_Killed):
        fit(task, data, _settings(), tmp_path / "run", sample_weights=weights, progress=kill_at_8)
    assert load_checkpoint(tmp_path / "run")["step"] == 6  # steps 7, 8 are lost and must be redone
    resumed = fit(task, data, _settings(), tmp_path / "run", resume=True, sample_weights=weights)
    assert resumed.resumed_from == 6 and resumed.step == 10
    _assert_same_state(reference, resumed)

    ref_rows, run_rows = read_metrics(reference.metrics_path), read_metrics(resumed.metrics_path)
    assert [r["step"] for r in run_rows] == list(range(1, 11))  # rows past the checkpoint were dropped
    assert [r["loss"] for r in run_rows] == [r["loss"] for r in ref_rows]


def test_extending_a_finished_constant_schedule_run(tmp_path: Path) -> None:
    task, data = TinyRegression(input_noise=0.2), tiny_dataset()
    settings = _settings(schedule="constant", checkpoint_every=100)
    reference = fit(task, data, settings, tmp_path / "ref")
    fit(task, data, settings.model_copy(update={"steps": 4}), tmp_path / "run")  # ends with a checkpoint
    extended = fit(task, data, settings, tmp_path / "run", resume=True)
    assert extended.resumed_from == 4
    _assert_same_state(reference, extended)


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_a_no_op(tmp_path: Path) -> None:
    task, data = TinyRegression(), tiny_dataset()
    first = fit(task, data, _settings(steps=3), tmp_path, resume=True)
    assert first.resumed_from == 0 and first.step == 3
    again = fit(task, data, _settings(steps=3), tmp_path, resume=True)
    assert again.resumed_from == 3 and again.step == 3
    for v, w in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(v, w)
    assert len(read_metrics(again.metrics_path)) == 3
