"""The whole pipeline end to end at toy sizes (configs/micro.yaml): wiring, formats, report contents."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from magphase.cli import app
from magphase.config import load_config
from magphase.run import plan_run, stage_status
from magphase.rundir import STAGE_NAMES as STAGES
from magphase.rundir import RunLayout

MICRO = Path(__file__).resolve().parents[2] / "configs" / "micro.yaml"

REPORT_FIGURES = (
    "fig2_patches.png",
    "fig3_reconstructions.png",
    "fig4_stage1_samples.png",
    "fig5_stage2_samples.png",
    "fig6_substitution_test.png",
    "fig7_substitution_external.png",
    "fig8_additive.png",
)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("micro") / "run"
    result = CliRunner().invoke(app, ["run", str(MICRO), "--out", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.slow
def test_micro_run_produces_every_table_and_figure(micro_run: Path) -> None:
    report = (micro_run / "report" / "report.md").read_text()
    for heading in ("Table 1", "Table 3", "Table 4", "Substitution", "Additive", "Run time"):
        assert f"## {heading}" in report or heading in report, heading
    # Tables carry numbers, not placeholders.
    assert "_Not produced by this run" not in report
    assert "| AXT1POST |" in report
    for fig in REPORT_FIGURES:
        path = micro_run / "report" / fig
        assert path.is_file() and path.stat().st_size > 5_000, fig
        assert f"]({fig})" in report
    meta = json.loads((micro_run / "report" / "report.json").read_text())
    assert meta["missing"] == []
    # PhaseGen (pipeline.phasegen): phase statistics of the test split and its figure in the report.
    assert "## PhaseGen" in report and "](phasegen_phases.png)" in report
    assert (micro_run / "report" / "phasegen_phases.png").stat().st_size > 5_000
    pg = pd.read_csv(micro_run / "phasegen" / "evaluation" / "phasegen_phase.csv")
    assert pg["sequence"].iloc[-1] == "all" and pg["n"].iloc[-1] == 6
    # The stage-2 class probe ran on val and on as many train latents.
    assert "### Stage-2 class probe" in report
    probe = meta["class_probe"]
    assert probe["val"]["n"] > 0 and probe["train"]["n"] <= probe["val"]["n"]
    # The downstream store is the selected stage-2 candidate's, copied rather than sampled again.
    layout = RunLayout(micro_run)
    step = json.loads((micro_run / "flow" / "stage2" / "selected.json").read_text())["step"]
    chosen = layout.selection / "stage2" / f"step{step:07d}"
    copied = json.loads((layout.downstream_samples / "meta.json").read_text())
    assert copied["copied_from"] == str(chosen)
    assert copied["recipe"] == json.loads((chosen / "meta.json").read_text())["recipe"]
    # Every stage left a marker matching the config; a second run skips everything.
    cfg = load_config(MICRO)
    status = stage_status(RunLayout(micro_run), cfg)
    assert all(status[s] == "done" for s in STAGES), status
    assert all(p.action == "skip" for p in plan_run(cfg, micro_run))


@pytest.mark.slow
def test_changed_config_reruns_from_the_changed_stage(micro_run: Path) -> None:
    cfg = load_config(MICRO, ["evaluation.downstream.runs=2"])
    plan = {p.stage: p.action for p in plan_run(cfg, micro_run)}
    assert plan["autoencoder"] == "skip" and plan["flow1"] == "skip"
    assert plan["downstream"] == "run" and plan["report"] == "run"
    # A PhaseGen setting reruns only PhaseGen and the report.
    plan = {p.stage: p.action for p in plan_run(load_config(MICRO, ["phasegen.train.steps=4"]), micro_run)}
    assert [s for s, a in plan.items() if a == "run"] == ["phasegen", "report"]


def test_plan_range_and_dry_run(tmp_path: Path) -> None:
    cfg = load_config(MICRO)
    plan = plan_run(cfg, tmp_path / "r", start="prepare", until="encode")
    assert [p.stage for p in plan] == ["prepare", "prepare-external", "autoencoder", "encode"]
    result = CliRunner().invoke(app, ["run", str(MICRO), "--out", str(tmp_path / "r"), "--dry-run"])
    assert result.exit_code == 0 and "simulate" in result.output and "run" in result.output
    assert not (tmp_path / "r").exists()
    bad = CliRunner().invoke(
        app, ["run", str(MICRO), "--out", str(tmp_path / "r"), "--from", "nope", "--dry-run"]
    )
    assert bad.exit_code != 0
