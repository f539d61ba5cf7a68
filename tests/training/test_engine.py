"""fit(): outputs, checkpoint format, finite-loss guard, AMP on CPU, parameter groups, EMA export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_training_task import TinyRegression, tiny_dataset
from torch import nn

from magphase.errors import DataError, NonFiniteLossError
from magphase.models.weights import load_ema_into, load_ema_weights, read_weights_metadata
from magphase.training import ProgressEvent, TrainSettings, fit, load_checkpoint, move_to_device
from magphase.training.metrics import read_metrics
from magphase.utils.precision import resolve_amp


def _settings(**kw: Any) -> TrainSettings:
    base = dict(
        steps=6,
        batch_size=8,
        lr=1e-2,
        warmup_steps=2,
        checkpoint_every=4,
        log_every=2,
        seed=0,
        deterministic=True,
        device="cpu",
        ema_decay=0.9,
    )
    return TrainSettings(**(base | kw))


def test_fit_writes_run_files_and_ema_export(tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    result = fit(TinyRegression(), tiny_dataset(), _settings(keep_every=3), tmp_path, progress=events.append)
    assert result.step == 6 and result.resumed_from == 0
    assert [e.step for e in events] == [0, 1, 2, 3, 4, 5, 6] and events[0].metrics == {}
    assert [e.step for e in events if e.logged] == [2, 4, 6]
    assert events[3].metrics["step"] == 2  # between logs the latest row is carried
    rows = read_metrics(result.metrics_path)
    assert [r["step"] for r in rows] == [2, 4, 6]
    for key in ("loss", "mse", "mae", "lr", "samples_per_s", "time_s", "epoch", "grad_norm"):
        assert key in rows[-1]
    assert rows[0]["epoch"] == pytest.approx(2 * 8 / 64)
    assert result.loss_plot_path.stat().st_size > 1000
    assert sorted(result.snapshots) == [3, 6]

    ema = load_ema_weights(result.ema_path)
    for k, v in result.ema_model.state_dict().items():
        assert torch.equal(ema[k], v)
    info = json.loads(result.ema_info_path.read_text())
    assert info["step"] == 6 and info["model_config"]["hidden"] == 16
    assert read_weights_metadata(result.ema_path)["model_config"] == info["model_config"]
    fresh = load_ema_into(TinyRegression().build_model(), tmp_path)
    x = torch.randn(5, 4)
    assert torch.equal(fresh(x), result.ema_model(x))
    # EMA differs from the raw weights (decay 0.9 over 6 updates)
    assert not torch.equal(result.ema_model[0].weight, result.model[0].weight)


def test_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    fit(TinyRegression(input_noise=0.1), tiny_dataset(), _settings(), tmp_path)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert raw["step"] == 6
    for key in ("model", "optimizer", "scheduler", "ema", "rng", "settings", "sampler"):
        assert key in raw
    rng = raw["rng"]["per_rank"][0]
    assert isinstance(rng["torch"], torch.Tensor) and isinstance(rng["numpy"], torch.Tensor)
    state = load_checkpoint(tmp_path)  # folder or file
    assert state["settings"]["batch_size"] == 8
    with pytest.raises(DataError):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError):
        load_checkpoint(tmp_path / "junk.pt")


def test_nan_loss_raises_with_step_and_keeps_checkpoint(tmp_path: Path) -> None:
    task = TinyRegression(nan_at_step=5)  # update index 5 -> step 6
    with pytest.raises(NonFiniteLossError, match="step 6") as info:
        fit(task, tiny_dataset(), _settings(steps=8), tmp_path)
    assert info.value.step == 6
    assert "mse" in str(info.value)
    assert load_checkpoint(tmp_path)["step"] == 4  # the checkpoint before the failure is intact


def test_loss_must_be_float32_scalar(tmp_path: Path) -> None:
    class Float64Loss(TinyRegression):
        def loss(self, model: nn.Module, batch: Any, step: int) -> Any:
            loss, terms = super().loss(model, batch, step)
            return loss.double(), terms

    with pytest.raises(TypeError, match="float32 0-d"):
        fit(Float64Loss(), tiny_dataset(), _settings(steps=1, warmup_steps=0), tmp_path)


@pytest.mark.parametrize(("amp", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_on_cpu(tmp_path: Path, amp: str, dtype: torch.dtype) -> None:
    seen: list[torch.dtype] = []

    class Recording(TinyRegression):
        def loss(self, model: nn.Module, batch: Any, step: int) -> Any:
            seen.append(model[0](batch[0]).dtype)  # a Linear under autocast computes in bf16
            return super().loss(model, batch, step)

    result = fit(Recording(), tiny_dataset(), _settings(amp=amp, steps=3), tmp_path)
    assert seen[0] == dtype
    assert bool(load_checkpoint(tmp_path)["scaler"]) == (amp == "fp16")  # GradScaler state for fp16 only
    assert result.model[0].weight.dtype == torch.float32  # master weights stay float32
    assert torch.isfinite(torch.tensor(result.last_metrics["loss"]))
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("fp16", torch.device("cpu")) == torch.float16


def test_param_groups_freeze_and_scale_lr(tmp_path: Path) -> None:
    class Stage2(TinyRegression):
        def build_model(self) -> nn.Module:
            model = super().build_model()
            model[0].requires_grad_(False)  # frozen "pretrained" layer
            return model

        def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
            return [
                {"params": list(model[0].parameters())},
                {"params": list(model[2].parameters()), "lr_scale": 0.1},
            ]

    torch.manual_seed(0)
    before = Stage2().build_model()  # fit seeds with settings.seed=0 before build_model: same init
    result = fit(Stage2(), tiny_dataset(), _settings(schedule="constant", warmup_steps=0), tmp_path)
    assert torch.equal(result.model[0].weight, before[0].weight)
    assert not torch.equal(result.model[2].weight, before[2].weight)
    groups = load_checkpoint(tmp_path)["optimizer"]["param_groups"]
    assert len(groups) == 1 and groups[0]["lr"] == pytest.approx(1e-3)


def test_weighted_sampling_and_dict_batches(tmp_path: Path) -> None:
    base = tiny_dataset()

    class DictDataset(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(base)

        def __getitem__(self, i: int) -> dict[str, Any]:
            x, y = base[i]
            return {"x": x, "y": y, "index": i}

    class DictTask(TinyRegression):
        indices: list[int] = []

        def loss(self, model: nn.Module, batch: Any, step: int) -> Any:
            self.indices.extend(batch["index"].tolist())
            return super().loss(model, (batch["x"], batch["y"]), step)

    weights = torch.zeros(len(base))
    weights[:4] = 1.0  # only the first four items may be drawn
    task = DictTask()
    fit(task, DictDataset(), _settings(steps=5), tmp_path, sample_weights=weights)
    assert len(task.indices) == 40 and set(task.indices) <= {0, 1, 2, 3}


def test_fresh_start_replaces_previous_run(tmp_path: Path) -> None:
    fit(TinyRegression(), tiny_dataset(), _settings(steps=6, keep_every=2), tmp_path)
    result = fit(TinyRegression(), tiny_dataset(), _settings(steps=2, keep_every=0), tmp_path)
    assert [r["step"] for r in read_metrics(result.metrics_path)] == [2]
    assert result.snapshots == {}


def test_move_to_device_handles_nested_batches() -> None:
    batch = {"a": torch.ones(2), "b": [torch.zeros(1), "text"], "c": (torch.ones(1), 3)}
    moved = move_to_device(batch, torch.device("cpu"))
    assert torch.equal(moved["a"], batch["a"]) and moved["b"][1] == "text" and moved["c"][1] == 3


def test_worker_processes_give_the_same_training(tmp_path: Path) -> None:
    data, task = tiny_dataset(), TinyRegression(input_noise=0.1)
    inline = fit(task, data, _settings(steps=4), tmp_path / "w0")
    workers = fit(task, data, _settings(steps=4, num_workers=1), tmp_path / "w1")
    for v, w in zip(inline.model.state_dict().values(), workers.model.state_dict().values(), strict=True):
        assert torch.equal(v, w)
