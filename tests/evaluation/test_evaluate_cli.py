"""``magphase evaluate ...`` on tiny stores: dry runs print the plan, runs print the tables, selection marks
the winner, bad candidates are a ConfigError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import (
    tiny_eval_config,
    write_latent_store,
    write_patch_store,
)
from typer.testing import CliRunner

from magphase.cli import app
from magphase.config import MagphaseConfig, dump_config
from magphase.errors import ConfigError


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("evaluate_cli")
    rng = np.random.default_rng(11)
    counts = {"AXT1": {"train": 48, "val": 16, "test": 16}}
    ev = tiny_eval_config()
    ev.realfake = ev.realfake.model_copy(update={"runs": 1, "n_test_sets": 1, "selection_runs": 1})
    ev.downstream = ev.downstream.model_copy(update={"selection_runs": 1})
    config = tmp / "config.yaml"
    config.write_text(dump_config(MagphaseConfig(evaluation=ev, seed=4)))
    return {
        "config": config,
        "real_latents": write_latent_store(tmp / "real_latents", rng, counts),
        "far": write_latent_store(tmp / "far", rng, {"AXT1": {"x": 80}}, offset=1.5, synthetic=True),
        "same": write_latent_store(tmp / "same", rng, {"AXT1": {"x": 80}}, synthetic=True),
        "real_patches": write_patch_store(tmp / "real_patches", rng, sequences=("AXT1",)),
        "syn_patches": write_patch_store(tmp / "syn_patches", rng, sequences=("AXT1",), synthetic=True),
    }


def _invoke(*args: str | Path):
    return CliRunner().invoke(app, ["evaluate", *(str(a) for a in args)])


def test_realfake_dry_run_prints_config_counts_and_plan(setup, tmp_path):
    res = _invoke(
        "realfake", "--real", setup["real_latents"], "--synthetic", setup["far"], "--out", tmp_path / "o",
        "--config", setup["config"], "--device", "cpu", "--dry-run",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "n_test_sets: 1" in res.output and "AXT1" in res.output
    assert "plan: 1 sequences x 1 runs, 1 synthetic test sets each; 30 steps per classifier" in res.output
    assert "real latents posterior; device cpu" in res.output
    assert not (tmp_path / "o").exists()


def test_realfake_run_prints_table4(setup, tmp_path):
    res = _invoke(
        "realfake", "--real", setup["real_latents"], "--synthetic", setup["far"], "--out", tmp_path / "o",
        "--config", setup["config"], "--device", "cpu", "--real-latents", "mean",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "| AXT1 |" in res.output and "1 run x 1 test set" in res.output
    assert f"table: {tmp_path / 'o' / 'table4.csv'}" in res.output
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["real_latents"] == "mean"


def test_downstream_dry_run_lists_configurations(setup, tmp_path):
    res = _invoke(
        "downstream", "--real", setup["real_patches"], "--out", tmp_path / "o", "--config", setup["config"],
        "--set", "evaluation.downstream.runs=2", "--dry-run",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "configurations: real100, real090, subst090, " in res.output and ", subst000-mag\n" in res.output
    assert "configurations x 2 runs of 30 steps; external no; device cpu" in res.output


def test_select_stage1_marks_the_least_distinguishable_candidate(setup, tmp_path):
    res = _invoke(
        "select-stage1", "--real", setup["real_latents"], "--candidate", f"a={setup['far']}",
        "--candidate", f"b={setup['same']}", "--out", tmp_path / "sel", "--config", setup["config"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["a", "b"]
    assert lines[1].endswith("<- selected") and not lines[0].endswith("<- selected")
    assert json.loads((tmp_path / "sel" / "selection.json").read_text())["best"] == "b"


def test_select_stage2_prints_every_candidate(setup, tmp_path):
    res = _invoke(
        "select-stage2", "--real", setup["real_patches"], "--candidate", f"only={setup['syn_patches']}",
        "--out", tmp_path / "sel", "--config", setup["config"], "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.output.startswith("only: validation AUROC ") and "<- selected" in res.output


@pytest.mark.parametrize("candidates", [[], ["no-equals-sign"]])
def test_selection_needs_name_equals_store(setup, tmp_path, candidates):
    args = [a for c in candidates for a in ("--candidate", c)]
    res = _invoke("select-stage1", "--real", setup["real_latents"], *args, "--out", tmp_path / "sel")
    assert isinstance(res.exception, ConfigError)
