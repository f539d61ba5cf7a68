"""Weights, checkpoints and stores that are damaged, forged or from another model are refused by name.

Every case asserts one :class:`~magphase.errors.DataError` naming the file (and the field where there
is one) from the library, and for the ones a user meets on the command line one ``error:`` line and
no traceback from the CLI verb that reads that kind of file. A pickle where weights are expected must
never run: its payload would write a marker file, which must not appear.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cli_helpers import Marker, assert_one_clear_error, flip_byte, partial_outputs, run_main, truncate
from magphase.data.store import ARRAYS_FILE, MANIFEST_FILE, META_FILE, Store, StoreWriter
from magphase.errors import DataError
from magphase.models.weights import load_ema_into, load_ema_weights, save_weights, weights_metadata
from magphase.training import TrainSettings, TrainTaskBase, fit, load_checkpoint
from magphase.training.checkpoint import save_checkpoint_file

MICRO = Path(__file__).resolve().parents[2] / "configs" / "micro.yaml"


def _write_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"model": Marker(marker)}))
    return path


def _weights(tmp_path: Path) -> Path:
    state = {"a.weight": torch.randn(8, 8), "a.bias": torch.randn(8)}
    return save_weights(state, tmp_path / "ema.safetensors", {"format": "test"})


def _store(tmp_path: Path, n: int = 6, name: str = "store") -> Path:
    rows = [
        dict(patch_id=i, volume=f"v{i // 2}", sequence="AXT2", label="normal", split="train")
        for i in range(n)
    ]
    with StoreWriter(tmp_path / name, {"x": (2, 4, 4)}, kind="test") as w:
        w.append(rows, x=np.arange(n * 32, dtype=np.float32).reshape(n, 2, 4, 4))
    return tmp_path / name


# -------------------------------------------------------------------------------------- weights files
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_safetensors_is_refused(tmp_path: Path, fraction: float) -> None:
    path = _weights(tmp_path)
    truncate(path, fraction)
    with pytest.raises(DataError, match="not a safetensors file") as err:
        load_ema_weights(path)
    assert err.value.path == str(path)


def test_flipped_tensor_byte_in_safetensors_is_detected(tmp_path: Path) -> None:
    path = _weights(tmp_path)
    flip_byte(path, 0.9)  # inside the tensor data (the JSON header is at the start)
    with pytest.raises(DataError, match="checksum") as err:
        load_ema_weights(path)
    assert err.value.path == str(path) and err.value.field == "content_sha256"


def test_weights_without_checksum_still_load(tmp_path: Path) -> None:
    """Files written before checksums existed (plain safetensors) load unchanged."""
    from safetensors.torch import save_file

    save_file({"w": torch.ones(3)}, str(tmp_path / "old.safetensors"))
    assert torch.equal(load_ema_weights(tmp_path / "old.safetensors")["w"], torch.ones(3))


def test_pickle_where_weights_are_expected_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = _write_pickle(tmp_path / "ema.safetensors", marker)
    with pytest.raises(DataError, match="not a safetensors file"):
        load_ema_weights(path)
    assert not marker.exists()


def test_pickle_where_a_checkpoint_is_expected_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = _write_pickle(tmp_path / "checkpoint.pt", marker)
    torch.save({"model": Marker(marker)}, path)  # the torch zip container around the same payload
    with pytest.raises(DataError, match="not a loadable checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickle_weights_given_to_the_cli_never_run(tmp_path: Path, monkeypatch, capsys) -> None:
    marker = tmp_path / "MARKER"
    weights = _write_pickle(tmp_path / "flow.safetensors", marker)
    latents = _store(tmp_path, name="latents")
    code, out, err = run_main(monkeypatch, capsys, "flow-probe", "--weights", weights, "--latents", latents)
    assert_one_clear_error(code, out, err, str(weights))
    assert not marker.exists()


def test_weights_of_another_model_are_refused_by_name(tmp_path: Path) -> None:
    path = save_weights(nn.Linear(4, 3).state_dict(), tmp_path / "ema.safetensors")
    with pytest.raises(DataError, match="another model or preset") as err:
        load_ema_into(nn.Linear(4, 5), path)
    assert err.value.path == str(path)


# ---------------------------------------------------------------------------------------- checkpoints
class _Tiny(TrainTaskBase):
    def __init__(self, hidden: int) -> None:
        self.hidden = hidden

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1))

    def loss(self, model, batch, step):
        x, y = batch
        mse = ((model(x) - y) ** 2).mean()
        return mse, {"mse": mse.detach()}

    def model_config(self) -> dict:
        return {"hidden": self.hidden}


def _fit(out: Path, hidden: int, steps: int = 4):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g))
    settings = TrainSettings(
        steps=steps,
        batch_size=8,
        lr=1e-2,
        warmup_steps=0,
        checkpoint_every=2,
        log_every=2,
        seed=1,
        device="cpu",
    )
    return fit(_Tiny(hidden), data, settings, out, resume=True)


def test_checkpoint_of_another_model_is_refused_on_resume(tmp_path: Path) -> None:
    _fit(tmp_path / "run", hidden=8, steps=2)
    with pytest.raises(DataError, match="checkpoint of another model") as err:
        _fit(tmp_path / "run", hidden=16, steps=4)
    assert err.value.field == "model_config" and err.value.path.endswith("checkpoint.pt")


def test_damaged_checkpoint_is_detected(tmp_path: Path) -> None:
    state = {
        "format": "magphase.train.checkpoint/1",
        "step": 3,
        "model": {"w": torch.randn(256, 256)},
        **{k: {} for k in ("optimizer", "scheduler", "ema", "scaler", "rng", "settings")},
    }
    path = save_checkpoint_file(state, tmp_path / "checkpoint.pt")
    assert load_checkpoint(path)["step"] == 3
    flip_byte(path, 0.5)  # tensor bytes: torch.load itself would not notice
    with pytest.raises(DataError) as err:
        load_checkpoint(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_checkpoint_is_refused(tmp_path: Path, fraction: float) -> None:
    path = save_checkpoint_file(
        {"format": "x", "model": {"w": torch.randn(64, 64)}}, tmp_path / "checkpoint.pt"
    )
    truncate(path, fraction)
    with pytest.raises(DataError, match="not a loadable checkpoint"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------- stores
def test_store_records_checksums_and_opens(tmp_path: Path) -> None:
    store = _store(tmp_path)
    meta = json.loads((store / META_FILE).read_text())
    assert set(meta["sha256"]) == {ARRAYS_FILE, MANIFEST_FILE}
    assert len(Store(store)) == 6


def test_flipped_byte_in_store_arrays_is_detected(tmp_path: Path) -> None:
    store = _store(tmp_path)
    flip_byte(store / ARRAYS_FILE, 0.95)
    with pytest.raises(DataError, match="checksum") as err:
        Store(store)
    assert err.value.path == str(store / ARRAYS_FILE)


def test_edited_manifest_is_detected(tmp_path: Path) -> None:
    store = _store(tmp_path)
    text = (store / MANIFEST_FILE).read_text().replace("normal", "abnormal", 1)
    (store / MANIFEST_FILE).write_text(text)
    with pytest.raises(DataError, match="checksum") as err:
        Store(store)
    assert err.value.path == str(store / MANIFEST_FILE)


def _drop_checksums(store: Path) -> None:
    meta = json.loads((store / META_FILE).read_text())
    del meta["sha256"]
    (store / META_FILE).write_text(json.dumps(meta))


def test_manifest_disagreeing_with_arrays_is_refused(tmp_path: Path) -> None:
    """An older store (no checksums) whose manifest lost rows: counts are still compared."""
    store = _store(tmp_path)
    _drop_checksums(store)
    lines = (store / MANIFEST_FILE).read_text().splitlines()
    (store / MANIFEST_FILE).write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(DataError, match="rows but meta says"):
        Store(store)


def test_arrays_disagreeing_with_meta_are_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _drop_checksums(store)
    with h5py.File(store / ARRAYS_FILE, "a") as h5:
        h5["x"].resize(4, axis=0)
    with pytest.raises(DataError, match="disagrees with meta.json") as err:
        Store(store)
    assert err.value.field == "x"


@pytest.mark.parametrize("damage", ["meta-not-json", "meta-no-arrays", "no-arrays-file", "arrays-not-hdf5"])
def test_broken_store_files_are_named(tmp_path: Path, damage: str) -> None:
    store = _store(tmp_path)
    if damage == "meta-not-json":
        (store / META_FILE).write_text("{not json")
    elif damage == "meta-no-arrays":
        (store / META_FILE).write_text(json.dumps({"count": 6}))
    elif damage == "no-arrays-file":
        (store / ARRAYS_FILE).unlink()
    else:
        _drop_checksums(store)
        (store / ARRAYS_FILE).write_text("not hdf5")
    with pytest.raises(DataError) as err:
        Store(store)
    assert str(store) in str(err.value)


def test_damaged_store_given_to_the_cli_is_one_error_line(tmp_path: Path, monkeypatch, capsys) -> None:
    store = _store(tmp_path)
    flip_byte(store / ARRAYS_FILE, 0.95)
    code, out, err = run_main(
        monkeypatch, capsys, "phasegen", "eval", "--synthetic", store, "--out", tmp_path / "e"
    )
    assert_one_clear_error(code, out, err, str(store / ARRAYS_FILE))
    assert not (tmp_path / "e").exists()


# ---------------------------------------------------------------------------------------- environment
def test_disk_full_during_a_store_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC on the 3rd chunk: an OSError naming the store, no store, no partial folder."""
    calls = {"n": 0}
    real = h5py.Dataset.__setitem__

    def full(self, key, value):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError("Can't write data (file write failed: errno = 28, error message = 'No space left')")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    rows = [dict(patch_id=i, split="train") for i in range(2)]
    with pytest.raises(OSError) as err, StoreWriter(tmp_path / "store", {"x": (3,)}) as w:
        for _ in range(5):
            w.append(rows, x=np.zeros((2, 3), np.float32))
    assert err.value.errno == 28 and err.value.filename == str(tmp_path / "store")
    assert not (tmp_path / "store").exists()
    assert partial_outputs(tmp_path) == [] and os.listdir(tmp_path) == []


def test_disk_full_on_the_command_line_is_one_error_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """``magphase simulate`` when the disk fills while writing a volume."""

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "kspace")

    out = tmp_path / "raw data ü"
    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    code, stdout, stderr = run_main(
        monkeypatch, capsys, "simulate", "--out", out, "--volumes", "1", "--config", MICRO
    )
    line = assert_one_clear_error(code, stdout, stderr, "No space left on device")
    assert "free space" in line
    assert partial_outputs(out) == []
    assert not list(out.rglob("*.h5"))


def test_unwritable_output_folder_is_one_error_line(tmp_path: Path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    code, out, err = run_main(monkeypatch, capsys, "simulate", "--out", blocker / "run", "--volumes", "1")
    assert_one_clear_error(code, out, err, str(blocker))
    if os.geteuid() != 0:  # root writes anywhere: the permission case needs an ordinary user
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, out, err = run_main(monkeypatch, capsys, "simulate", "--out", locked / "run", "--volumes", "1")
        assert_one_clear_error(code, out, err, "Permission denied")


# ------------------------------------------------- every verb that reads weights / a store, on the CLI
def _damage_weights(path: Path, how: str, marker: Path) -> None:
    if how == "truncated":
        truncate(path, 0.5)
    elif how == "flipped":
        flip_byte(path, 0.9)
    else:
        _write_pickle(path, marker)


def _damage_store(store: Path, how: str) -> Path:
    """Damage ``store``; returns the file the error must name."""
    if how == "flipped-arrays":
        flip_byte(store / ARRAYS_FILE, 0.95)
        return store / ARRAYS_FILE
    if how == "edited-manifest":
        (store / MANIFEST_FILE).write_text((store / MANIFEST_FILE).read_text().replace("train", "test", 1))
        return store / MANIFEST_FILE
    if how == "meta-not-json":
        (store / META_FILE).write_text("{")
        return store / META_FILE
    (store / ARRAYS_FILE).unlink()
    return store


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Valid weights and stores of every kind the verbs read (tiny networks, tiny stores)."""
    from flow_fixtures import TINY_UNET, tiny_unet, write_latent_store
    from phasegen_fixtures import write_patch_store

    unet = tiny_unet(class_conditioning=True)
    config = {
        "kind": "flow_unet",
        "stage": 2,
        "unet": {k: v for k, v in TINY_UNET.items() if k != "input_size"},
        "latent_shape": [2, 8, 8],
        "class_conditioning": True,
    }
    flow = save_weights(unet.state_dict(), tmp_path / "flow.safetensors", weights_metadata(1, config))
    from magphase.models.complex_unet import ComplexUNet, complex_unet_config
    from magphase.models.cvae import AutoencoderSpec, ConditionalVAE
    from phasegen_fixtures import TINY_COMPLEX_UNET

    ae = ConditionalVAE(
        AutoencoderSpec(full_res_channels=8, full_res_blocks=0, latent_res_channels=8, groups=4)
    )
    autoencoder = save_weights(
        ae.state_dict(), tmp_path / "ae.safetensors", weights_metadata(1, ae.model_config())
    )
    pg = ComplexUNet(**TINY_COMPLEX_UNET)
    phasegen = save_weights(
        pg.state_dict(),
        tmp_path / "pg.safetensors",
        weights_metadata(1, complex_unet_config(**TINY_COMPLEX_UNET)),
    )
    return {
        "flow": flow,
        "autoencoder": autoencoder,
        "phasegen": phasegen,
        "latents": write_latent_store(tmp_path / "latents", splits=("train", "val")),
        "patches": write_patch_store(tmp_path / "patches"),
        "out": tmp_path / "out ü",
    }


WEIGHT_KIND = {
    "encode": "autoencoder",
    "evaluate autoencoder": "autoencoder",
    "sample": "flow",
    "flow-probe": "flow",
    "phasegen sample": "phasegen",
}
WEIGHT_VERBS = {
    "encode": ("encode", "--autoencoder", "{w}", "--store", "{patches}", "--out", "{out}"),
    "evaluate autoencoder": (
        "evaluate",
        "autoencoder",
        "--autoencoder",
        "{w}",
        "--store",
        "{patches}",
        "--out",
        "{out}",
    ),
    "sample": (
        "sample",
        "--stage",
        "2",
        "--checkpoint",
        "{w}",
        "--sequence",
        "AXT1",
        "--label",
        "normal",
        "--n",
        "2",
        "--no-decode",
        "--out",
        "{out}",
    ),
    "flow-probe": ("flow-probe", "--weights", "{w}", "--latents", "{latents}"),
    "phasegen sample": ("phasegen", "sample", "--weights", "{w}", "--source", "{patches}", "--out", "{out}"),
}
STORE_VERBS = {
    "flow-probe": ("flow-probe", "--weights", "{flow}", "--latents", "{s}"),
    "train-flow": ("train-flow", "--stage", "1", "--latents", "{s}", "--out", "{out}"),
    "train-autoencoder": ("train-autoencoder", "--store", "{s}", "--out", "{out}"),
    "encode": ("encode", "--store", "{s}", "--autoencoder", "{autoencoder}", "--out", "{out}"),
    "phasegen eval": ("phasegen", "eval", "--synthetic", "{s}", "--out", "{out}"),
    "phasegen figure": (
        "phasegen",
        "figure",
        "--source",
        "{s}",
        "--weights",
        "{phasegen}",
        "--out",
        "{out}/fig.png",
    ),
    "evaluate downstream": ("evaluate", "downstream", "--real", "{s}", "--out", "{out}"),
}


def _argv(template: tuple[str, ...], **paths: Path) -> list[str]:
    return [part.format(**{k: str(v) for k, v in paths.items()}) for part in template]


@pytest.mark.parametrize("how", ["truncated", "flipped", "pickle"])
@pytest.mark.parametrize("verb", list(WEIGHT_VERBS))
def test_damaged_weights_on_every_verb_that_reads_weights(verb, how, inputs, tmp_path, monkeypatch, capsys):
    weights = inputs[WEIGHT_KIND[verb]]
    marker = tmp_path / "MARKER"
    _damage_weights(weights, how, marker)
    argv = _argv(WEIGHT_VERBS[verb], w=weights, **inputs)
    code, out, err = run_main(monkeypatch, capsys, *argv)
    assert_one_clear_error(code, out, err, str(weights))
    assert not marker.exists()
    assert partial_outputs(tmp_path) == [] and not inputs["out"].exists()


@pytest.mark.parametrize("how", ["flipped-arrays", "edited-manifest", "meta-not-json", "missing-arrays"])
@pytest.mark.parametrize("verb", list(STORE_VERBS))
def test_damaged_store_on_every_verb_that_reads_a_store(verb, how, inputs, tmp_path, monkeypatch, capsys):
    store = inputs["latents"] if verb in ("flow-probe", "train-flow") else inputs["patches"]
    named = _damage_store(store, how)
    argv = _argv(STORE_VERBS[verb], s=store, **inputs)
    code, out, err = run_main(monkeypatch, capsys, *argv)
    assert_one_clear_error(code, out, err, str(named))
    assert partial_outputs(tmp_path) == []
    if verb.startswith("train-"):  # --out is a run folder: it may be made, but no stage may be marked done
        assert not list((inputs["out"] / ".stages").glob("*.json"))
    else:
        assert not inputs["out"].exists()
