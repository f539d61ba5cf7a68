"""Autoencoder evaluation: Table 3 writer, Fig. 3 patch choice, the whole evaluation and the CLI commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from magphase.cli import app
from magphase.conventions import SEQUENCES
from magphase.data.store import Store, StoreWriter
from magphase.evaluation.paper import PAPER_TABLE3
from magphase.evaluation.reconstruction import (
    evaluate_autoencoder,
    pick_figure_patches,
    table3,
    table3_markdown,
    write_table3,
)
from magphase.models.cvae import AutoencoderSpec, ConditionalVAE

TINY = AutoencoderSpec(latent_res_channels=8, latent_res_blocks=1, groups=4)


def smooth_patches(n: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:96, 0:96] / 96 - 0.5
    out = np.empty((n, 2, 96, 96), np.float32)
    for i in range(n):
        mag = 0.2 + 0.7 * np.exp(
            -((yy - rng.uniform(-0.3, 0.3)) ** 2 + (xx - rng.uniform(-0.3, 0.3)) ** 2) / 0.04
        )
        z = mag * np.exp(1j * (rng.uniform(-3, 3) + rng.uniform(-3, 3) * xx))
        z += 0.01 * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape))
        out[i, 0], out[i, 1] = z.real, z.imag
    return out


@pytest.fixture
def patch_store(tmp_path, rng):
    rows, pid = [], 0
    for split, n in (("train", 10), ("val", 5), ("test", 10)):
        for _ in range(n):
            rows.append(
                dict(
                    patch_id=pid,
                    volume=f"v{pid // 3}",
                    sequence=SEQUENCES[pid % 5],
                    label=("normal", "abnormal", "unlabeled")[pid % 3],
                    split=split,
                    slice=0,
                    row=0,
                    col=0,
                    box_overlap=0.0,
                )
            )
            pid += 1
    with StoreWriter(tmp_path / "run" / "prepare" / "patches", {"patches": (2, 96, 96)}) as w:
        w.append(rows, patches=smooth_patches(len(rows), rng))
    return tmp_path / "run" / "prepare" / "patches"


def _frame(values: dict[str, list[tuple[float, float, float]]]) -> pd.DataFrame:
    rows = []
    for seq, triples in values.items():
        for i, (g, s, p) in enumerate(triples):
            rows.append(
                dict(
                    patch_id=len(rows),
                    sequence=seq,
                    label="abnormal" if i == 0 else "normal",
                    phase_coherence=g,
                    ssim=s,
                    psnr=p,
                )
            )
    return pd.DataFrame(rows)


def test_table3_means_stds_paper_and_targets(tmp_path):
    per = _frame({"AXT1": [(0.999, 0.95, 36.0), (0.997, 0.93, 38.0)], "AXT2": [(0.990, 0.99, 40.0)]})
    table = table3(per)
    assert list(table["sequence"]) == ["AXT1", "AXT2", "all"]
    t1 = table.iloc[0]
    assert t1["n"] == 2 and t1["phase_coherence_mean"] == pytest.approx(0.998)
    assert t1["phase_coherence_std"] == pytest.approx(0.001) and t1["psnr_std"] == pytest.approx(1.0)
    assert t1["paper_ssim_mean"] == PAPER_TABLE3["AXT1"]["ssim"][0] and t1["meets_targets"]
    assert not table.iloc[1]["meets_targets"]  # gamma 0.990 < 0.997
    assert np.isnan(table.iloc[2]["paper_psnr_mean"]) and table.iloc[2]["n"] == 3
    md = table3_markdown(table)
    assert (
        "| AXT1 | 2 | 0.9980 ± 0.0010 | 0.9983 ± 0.0008 | 0.940 ± 0.010 | 0.944 ± 0.029 | 37.0 ± 1.0 |" in md
    )
    assert "| AXT2 | 1 |" in md and md.count("\n| ") == 3  # header first, then 3 rows
    csv_path, md_path = write_table3(table, tmp_path / "out")
    back = pd.read_csv(csv_path)
    assert list(back["sequence"]) == ["AXT1", "AXT2", "all"] and md_path.read_text() == md


def test_figure_picks_median_psnr_with_preferences():
    per = _frame(
        {"AXT1POST": [(1, 1, 30.0)], "AXT1PRE": [(1, 1, 10.0), (1, 1, 50.0), (1, 1, 20.0), (1, 1, 40.0)]}
    )
    per.loc[per["sequence"] == "AXT1PRE", "label"] = "unlabeled"
    picks = pick_figure_patches(per)
    assert [t.split(" ")[0] for t, _ in picks] == ["abnormal", "normal"]
    assert per.loc[picks[0][1], "sequence"] == "AXT1POST"
    # Normal: no labelled-normal AXT1PRE patch, so the unlabeled AXT1PRE ones; median PSNR of 10/20/40/50.
    assert per.loc[picks[1][1], "psnr"] in (20.0, 40.0) and per.loc[picks[1][1], "sequence"] == "AXT1PRE"
    only_normal = per[per["label"] != "abnormal"]
    assert [t.split(" ")[0] for t, _ in pick_figure_patches(only_normal)] == ["normal"]


def test_evaluate_autoencoder_writes_outputs(tmp_path, patch_store):
    model = ConditionalVAE(TINY).eval()
    result = evaluate_autoencoder(model, patch_store, tmp_path / "eval", extra={"note": "x"})
    assert len(result.per_patch) == 10 and set(result.per_patch["split"]) == {"test"}
    # The untrained shortcut network is 2x2 mean pooling + bilinear up-sampling: near-perfect on smooth data.
    assert result.per_patch["phase_coherence"].min() > 0.99
    np.testing.assert_allclose(result.per_patch["psnr"], result.per_patch["baseline_psnr"], rtol=1e-4)
    assert "Reference without training" in result.table_md.read_text()
    assert "baseline_ssim_mean" in result.table
    assert result.figure is not None and result.figure.stat().st_size > 10_000
    summary = json.loads(result.metrics_json.read_text())
    assert summary["note"] == "x" and len(summary["table3"]) == 6
    assert (tmp_path / "eval" / "per_patch.csv").is_file() and result.table_md.read_text().startswith(
        "Table 3"
    )


@pytest.mark.slow
def test_cli_train_evaluate_encode(tmp_path, patch_store):
    run = tmp_path / "run"
    runner = CliRunner()
    overrides = [
        "autoencoder.network.latent_res_channels=8",
        "autoencoder.network.latent_res_blocks=1",
        "autoencoder.network.groups=4",
        "autoencoder.train.batch_size=4",
        "autoencoder.train.warmup_steps=0",
        "autoencoder.train.checkpoint_every=3",
        "device=cpu",
    ]

    def sets(steps: int) -> list[str]:
        return [a for o in [*overrides, f"autoencoder.train.steps={steps}"] for a in ("--set", o)]

    res = runner.invoke(app, ["train-autoencoder", "--out", str(run), *sets(6)])
    assert res.exit_code == 0, res.output
    # The verb is the autoencoder stage: one completion marker, Table 3 and Fig. 3 written.
    done = json.loads((run / ".stages" / "autoencoder.json").read_text())["summary"]
    assert done["step"] == 6 and done["train_patches"] == 10
    assert len((run / "autoencoder" / "val.jsonl").read_text().splitlines()) == 2
    assert (run / "autoencoder" / "evaluation" / "table3.md").is_file()
    # Run again with more steps: the stage resumes from its checkpoint.
    res = runner.invoke(app, ["train-autoencoder", "--out", str(run), *sets(8)])
    assert res.exit_code == 0, res.output
    assert json.loads((run / ".stages" / "autoencoder.json").read_text())["summary"]["step"] == 8

    res = runner.invoke(app, ["evaluate", "autoencoder", "--out", str(run), "--set", "device=cpu"])
    assert res.exit_code == 0, res.output
    assert (
        "| AXFLAIR |" in res.output
        and (run / "autoencoder" / "evaluation" / "fig3_reconstructions.png").is_file()
    )

    res = runner.invoke(app, ["encode", "--out", str(run / "latents"), "--set", "device=cpu"])
    assert res.exit_code == 0, res.output
    latents = Store(run / "latents")
    assert latents.manifest.equals(Store(patch_store).manifest) and latents.arrays["mu"] == (2, 48, 48)

    res = runner.invoke(app, ["encode", "--out", str(run / "latents"), "--store", str(tmp_path / "missing")])
    assert res.exit_code != 0
