"""`magphase train-flow` and `magphase sample` end to end on a tiny latent store."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from magphase.cli import app
from magphase.data.store import Store
from magphase.errors import ConfigError


def _config(tmp_path, latent_store):
    train = dict(
        steps=6,
        batch_size=8,
        lr=2e-3,
        warmup_steps=0,
        checkpoint_every=6,
        keep_every=3,
        log_every=3,
        device="cpu",
    )
    cfg = {
        "device": "cpu",
        "flow": {
            "unet": dict(
                base_channels=8,
                channel_mults=[1, 2],
                attention_resolutions=[4],
                num_heads=2,
                emb_dim=16,
                time_features=8,
                groups=4,
                patch_size=1,
            ),
            "latent_store": str(latent_store),
            "stage1": {"train": train},
            "stage2": {"phase1": dict(train, steps=2, keep_every=None), "phase2": train},
            "sampling": {"steps": 2, "batch_size": 4},
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_train_both_stages_and_sample(tmp_path, latent_store):
    cfg = _config(tmp_path, latent_store)
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(
        app, ["train-flow", "--stage", "1", "--config", str(cfg), "--out", str(run), "--dry-run"]
    )
    assert res.exit_code == 0, res.output
    assert "plan: stage 1" in res.output and not (run / "flow").exists()
    for stage in ("1", "2"):
        res = runner.invoke(app, ["train-flow", "--stage", stage, "--config", str(cfg), "--out", str(run)])
        assert res.exit_code == 0, res.output
    assert (run / "flow" / "stage2" / "phase2" / "ema.safetensors").is_file()
    out = run / "synthetic" / "s2"
    args = [
        "sample",
        "--stage",
        "2",
        "--sequence",
        "AXT1,AXFLAIR",
        "--label",
        "normal,abnormal",
        "--n",
        "3",
        "--guidance",
        "2",
        "--no-decode",
        "--run",
        str(run),
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--seed",
        "4",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    store = Store(out)
    assert len(store) == 12 and set(store.arrays) == {"z"}
    assert store.meta["guidance"] == 2.0 and store.meta["flow_stage"] == 2 and store.meta["steps"] == 2
    assert sorted(set(zip(store.manifest["sequence"], store.manifest["label"], strict=True))) == [
        ("AXFLAIR", "abnormal"),
        ("AXFLAIR", "normal"),
        ("AXT1", "abnormal"),
        ("AXT1", "normal"),
    ]
    # The stage-2 model saw AXT2 only as `unknown`: normal / abnormal AXT2 samples are refused.
    bad = [*args[:4], "AXT2", *args[5:]]
    bad[bad.index(str(out))] = str(tmp_path / "axt2")
    res = runner.invoke(app, bad)
    assert isinstance(res.exception, ConfigError) and "unknown" in str(res.exception)
    # The class probe reads the stage-2 model and the latents; a stage-1 model is refused.
    probe_json = tmp_path / "probe.json"
    res = runner.invoke(
        app,
        ["flow-probe", "-w", str(run / "flow/stage2/phase2/ema.safetensors"), "-l", str(latent_store)]
        + ["--split", "train", "--repeats", "1", "--json", str(probe_json)],
    )
    assert res.exit_code == 0, res.output
    assert "train:" in res.output and "AUROC" in res.output
    assert json.loads(probe_json.read_text())["n"] > 0
    res = runner.invoke(
        app, ["flow-probe", "-w", str(run / "flow/stage1/ema.safetensors"), "-l", str(latent_store)]
    )
    assert isinstance(res.exception, ConfigError)
    # Snapshots: list, select, and sample from one by step.
    res = runner.invoke(app, ["flow-snapshots", "--stage", "1", "--out", str(run), "--select", "3"])
    assert res.exit_code == 0, res.output
    assert "snapshots/ema-step00000003.safetensors" in res.output.splitlines()[-1]
    res = runner.invoke(
        app,
        [
            "sample",
            "--stage",
            "1",
            "--sequence",
            "AXT2",
            "--n",
            "2",
            "--no-decode",
            "--run",
            str(run),
            "--snapshot",
            "6",
            "--out",
            str(tmp_path / "s1"),
            "--config",
            str(cfg),
        ],
    )
    assert res.exit_code == 0, res.output
    assert Store(tmp_path / "s1").meta["flow_step"] == 6
    # A stage-1 model cannot serve a stage-2 request; stage 2 needs a label.
    res = runner.invoke(app, [*args[:2], "1", *args[3:]])
    assert isinstance(res.exception, ConfigError)
    res = runner.invoke(
        app,
        [
            "sample",
            "--stage",
            "2",
            "--sequence",
            "AXT1",
            "--n",
            "2",
            "--run",
            str(run),
            "--out",
            str(tmp_path / "x"),
            "--no-decode",
        ],
    )
    assert isinstance(res.exception, ConfigError)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "0"], "--n"),
        (["--n", "2", "--steps", "0"], "--steps"),
        (["--n", "2", "--batch-size", "0"], "--batch-size"),
        (["--n", "2", "--guidance", "nan"], "--guidance"),
        (["--n", "2", "--sequence", "AXT1,axt1"], "more than once"),
        (["--n", "2", "--out", "EXISTING"], "--overwrite"),
    ],
)
def test_sample_rejects_bad_arguments_before_loading_anything(tmp_path, extra, message):
    existing = tmp_path / "existing"
    existing.mkdir()
    extra = [str(existing) if a == "EXISTING" else a for a in extra]
    base = ["sample", "--stage", "1", "--sequence", "AXT1", "--run", str(tmp_path / "no-run")]
    base += ["--out", str(tmp_path / "s")]
    res = CliRunner().invoke(app, base + extra)
    assert isinstance(res.exception, ConfigError), res.output
    assert message in str(res.exception)
