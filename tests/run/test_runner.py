"""The runner: chained stage hashes, plans, and one stage run from a CLI verb behind the same marker."""

from __future__ import annotations

from magphase.config import load_config
from magphase.run import plan_run, run_stage, stage_hashes, stage_status
from magphase.rundir import STAGE_NAMES, RunLayout


def test_hashes_chain_so_an_upstream_change_reruns_everything_after_it():
    base = stage_hashes(load_config(None))
    changed = stage_hashes(load_config(None, ["autoencoder.loss.lambda_kl=0.5"]))
    i = STAGE_NAMES.index("autoencoder")
    assert all(base[s] == changed[s] for s in STAGE_NAMES[:i])
    assert all(base[s] != changed[s] for s in STAGE_NAMES[i:])
    # A section only one late stage hashes leaves the earlier ones alone.
    late = stage_hashes(load_config(None, ["evaluation.downstream.runs=2"]))
    assert late["encode"] == base["encode"] and late["downstream"] != base["downstream"]


def test_run_stage_marks_the_stage_so_a_later_run_skips_it(tmp_path):
    cfg = load_config(None)
    run = tmp_path / "run"
    record = run_stage(cfg, run, "report")  # the report stage: reads what exists, needs no inputs
    layout = RunLayout(run)
    assert (run / "report" / "report.md").is_file() and layout.config_file.is_file()
    assert layout.read_marker("report")["config_hash"] == record["config_hash"] == stage_hashes(cfg)["report"]
    assert stage_status(layout, cfg)["report"] == "done"
    # The upstream stages are not finished, so a whole run still plans them (and then the report again).
    plan = {p.stage: p.action for p in plan_run(cfg, run)}
    assert plan["simulate"] == "run" and plan["report"] == "run"
    assert {p.stage: p.action for p in plan_run(cfg, run, start="report")} == {"report": "run"}
