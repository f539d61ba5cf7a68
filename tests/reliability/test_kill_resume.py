"""Kill -9 inside every stage of ``magphase run`` (micro preset), rerun, and get the uninterrupted result.

One run folder is driven through a chain of invocations. Each one sets ``MAGPHASE_FAULT`` (see
:mod:`magphase.utils.faults`) so that the process group is SIGKILLed at a point inside the next stage:
mid-write of a volume, mid-step and mid-checkpoint-write of a training loop, just before a store is
published, mid-write of a figure. Two more invocations stop with SIGTERM and SIGINT (Ctrl-C) instead.
The next invocation must skip the stages finished before (their markers untouched), resume the
interrupted one, and at the end every table and store equals that of an uninterrupted run of the same
config, bit for bit (CPU, same seed, same thread count). Only wall-clock columns, input fingerprints
and the run folder's own path (which has a space and a non-ASCII letter) differ; they are dropped
before comparing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_helpers import partial_outputs
from magphase.data.store import Store
from magphase.rundir import STAGE_NAMES, RunLayout

REPO = Path(__file__).resolve().parents[2]
MICRO = REPO / "configs" / "micro.yaml"

# (stage the fault fires in, MAGPHASE_FAULT spec, expected return code)
KILLED = -signal.SIGKILL
CHAIN: tuple[tuple[str, str, int], ...] = (
    ("simulate", "simulate/write:*.h5@4", KILLED),  # the 4th volume written, not yet renamed
    ("prepare", "prepare/write:*.h5@3", KILLED),  # a per-volume result mid-write
    ("prepare-external", "prepare-external/store.publish", KILLED),  # the external store before its rename
    ("autoencoder", "autoencoder/train.step@3", KILLED),  # mid-training, before the first checkpoint
    ("encode", "encode/store.publish", KILLED),  # the latent store before its rename
    ("flow1", "flow1/write:checkpoint.pt@2", KILLED),  # mid-write of the step-6 checkpoint (step 3 kept)
    ("flow2", "flow2/train.step@2!term", 143),  # SIGTERM, as a scheduler sends before killing
    ("flow2", "flow2/train.step@5", KILLED),  # mid phase 2, after its first checkpoint
    ("sample", "sample/store.publish@2", KILLED),  # the second synthetic store before its rename
    ("realfake", "realfake/train.step@3", KILLED),  # inside a classifier's training
    ("downstream", "downstream/write:ema.safetensors@2", KILLED),  # a classifier's weights mid-write
    ("phasegen", "phasegen/train.step@2!int", 130),  # Ctrl-C
    ("phasegen", "phasegen/train.step@2", KILLED),
    ("report", "report/write:*.png@3", KILLED),  # a report figure mid-write
)

# Wall-clock columns, and ``settings_hash``: the fingerprint of a row's inputs, which includes their
# file paths and modification times (it decides whether a finished row is reused, not what it holds).
TIME_COLUMNS = ("train_time_s", "seconds", "elapsed_s", "settings_hash")
TABLES = (
    "prepare/table1.csv",
    "prepare/rejects.csv",
    "prepare-external/volumes.csv",
    "prepare-external/table_external.csv",
    "autoencoder/evaluation/table3.csv",
    "autoencoder/evaluation/per_patch.csv",
    "evaluation/selection/stage1/selection.csv",
    "evaluation/selection/stage2/selection.csv",
    "evaluation/realfake/results.csv",
    "evaluation/realfake/table4.csv",
    "evaluation/downstream/results.csv",
    "evaluation/downstream/summary.csv",
    "phasegen/evaluation/phasegen_phase.csv",
)
STORES = (
    "prepare/patches",
    "prepare-external/patches",
    "latents",
    "latents-external",
    "samples/realfake",
    "samples/downstream",
    "phasegen/test-samples",
)


def _magphase_run(run: Path, fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAGPHASE_FAULT"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    if fault:
        env["MAGPHASE_FAULT"] = fault
    # a session of its own: the SIGKILL of the process group must not reach pytest
    return subprocess.run(
        [sys.executable, "-m", "magphase", "run", str(MICRO), "--out", str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,
        cwd=REPO,
    )


def _ran(stdout: str) -> list[str]:
    return [line.split()[2] for line in stdout.splitlines() if line.startswith("[run ]")]


def _skipped(stdout: str) -> list[str]:
    return [line.split()[1] for line in stdout.splitlines() if line.startswith("[skip]")]


def _table(path: Path, run: Path) -> pd.DataFrame:
    text = path.read_text().replace(str(run), "RUN")
    frame = pd.read_csv(pd.io.common.StringIO(text), keep_default_na=False)
    return frame.drop(columns=[c for c in TIME_COLUMNS if c in frame.columns])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = _magphase_run(run, None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run


@pytest.fixture(scope="module")
def chained(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    run = tmp_path_factory.mktemp("chained") / "run folder ü"  # spaces and non-ASCII on every path
    procs = []
    for _stage, fault, _code in CHAIN:
        procs.append(_magphase_run(run, fault))
    procs.append(_magphase_run(run, None))
    return run, procs


@pytest.mark.slow
def test_every_fault_stops_the_run_inside_its_stage(chained) -> None:
    run, procs = chained
    for (stage, fault, code), proc in zip(CHAIN, procs, strict=False):
        text = f"{fault}\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == code, text
        assert _ran(proc.stdout)[-1] == stage, text  # it died in the stage it was meant to
        assert "Traceback" not in proc.stderr, text
        if code != KILLED:
            assert "interrupted" in proc.stderr and "rerun the same command to resume" in proc.stderr, text
            assert not RunLayout(run).lock_file.exists(), "a stopped run must release its lock"
    final = procs[-1]
    assert final.returncode == 0, final.stdout + final.stderr


@pytest.mark.slow
def test_finished_stages_are_not_redone(chained) -> None:
    _run, procs = chained
    for i in range(1, len(CHAIN) + 1):
        previous_stage = CHAIN[i - 1][0]
        done_before = STAGE_NAMES[: STAGE_NAMES.index(previous_stage)]
        proc = procs[i]
        assert _skipped(proc.stdout)[: len(done_before)] == list(done_before), proc.stdout
        assert _ran(proc.stdout)[0] == previous_stage, proc.stdout  # the interrupted stage resumes first


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one(reference: Path, chained) -> None:
    run, _procs = chained
    for rel in TABLES:
        want, got = reference / rel, run / rel
        assert got.is_file(), rel
        pd.testing.assert_frame_equal(_table(got, run), _table(want, reference), check_exact=True, obj=rel)
    for rel in STORES:
        want, got = Store(reference / rel), Store(run / rel)
        assert want.arrays == got.arrays, rel
        pd.testing.assert_frame_equal(got.manifest, want.manifest, check_exact=True, obj=f"{rel}/manifest")
        for name in want.arrays:
            a, b = want.read(name, slice(None)), got.read(name, slice(None))
            assert np.array_equal(a, b), f"{rel}:{name} differs (max {np.abs(a - b).max()})"
    probe = [json.loads((r / "flow" / "stage2" / "class_probe.json").read_text()) for r in (reference, run)]
    assert probe[0] == json.loads(json.dumps(probe[1], ensure_ascii=False).replace(str(run), str(reference)))


@pytest.mark.slow
def test_nothing_half_written_is_left(chained) -> None:
    run, _procs = chained
    assert partial_outputs(run) == []
    assert not RunLayout(run).lock_file.exists()
