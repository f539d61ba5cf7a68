"""Smoke test of every ``magphase`` verb, through the public CLI only.

Per verb: ``--help`` exits 0 and names the verb's main options; a cheap real invocation on tiny
inputs exits 0 and writes its output (one module-scoped chain, simulate -> prepare -> ... -> report,
built with the CLI itself from ``configs/micro.yaml`` shrunk further); a user error (missing file,
bad value) exits non-zero with one ``error:`` line and no traceback, as the console script prints it.

The chain is marked ``slow`` (about a minute on 2 CPU cores); ``--help`` and the user-error tests
are fast and need no chain.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cli_helpers import assert_one_clear_error as _assert_one_clear_error
from cli_helpers import run_main as _run_main
from magphase.cli import app

REPO = Path(__file__).resolve().parents[2]
MICRO = REPO / "configs" / "micro.yaml"

# Every verb (as its argv prefix) and the options its --help must mention.
VERBS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("info",): ("--json", "--full"),
    ("labels",): ("--annotations", "--file-list", "--rules", "--out", "--json"),
    ("simulate",): (
        "--out",
        "--volumes",
        "--preset",
        "--external",
        "--seed",
        "--shard",
        "--workers",
        "--preview",
        "--config",
        "--dry-run",
    ),
    ("prepare",): (
        "--raw",
        "--annotations",
        "--out",
        "--workers",
        "--shard",
        "--merge",
        "--config",
        "--set",
        "--dry-run",
    ),
    ("prepare-external",): ("--raw", "--labels", "--facial", "--out", "--config"),
    ("train-autoencoder",): ("--out", "--config", "--store", "--set", "--dry-run"),
    ("encode",): ("--out", "--autoencoder", "--store", "--external-store", "--config", "--overwrite"),
    ("train-flow",): ("--stage", "--out", "--latents", "--config", "--set", "--dry-run"),
    ("sample",): (
        "--stage",
        "--out",
        "--sequence",
        "--label",
        "--n",
        "--guidance",
        "--steps",
        "--amp",
        "--checkpoint",
        "--snapshot",
        "--run",
        "--decode",
        "--config",
    ),
    ("flow-snapshots",): ("--stage", "--out", "--select", "--criterion"),
    ("flow-probe",): ("--weights", "--latents", "--split", "--repeats", "--max-items", "--json"),
    ("phasegen", "train"): ("--out", "--store", "--resume", "--config", "--set", "--dry-run"),
    ("phasegen", "sample"): (
        "--source",
        "--out",
        "--run",
        "--weights",
        "--sampler",
        "--steps",
        "--split",
        "--limit",
    ),
    ("phasegen", "figure"): ("--source", "--out", "--run", "--weights", "--k", "--draws"),
    ("phasegen", "eval"): ("--synthetic", "--out", "--real"),
    ("run",): ("--out", "--config", "--from", "--until", "--force", "--dry-run", "--set"),
    ("report",): ("--config",),
    ("evaluate", "autoencoder"): ("--out", "--config", "--store", "--autoencoder", "--dry-run"),
    ("evaluate", "realfake"): ("--real", "--synthetic", "--test", "--out", "--config", "--dry-run"),
    ("evaluate", "downstream"): ("--real", "--synthetic", "--external", "--out", "--config", "--dry-run"),
    ("evaluate", "learning-curve"): ("--real", "--external", "--out", "--config", "--set", "--dry-run"),
    ("evaluate", "select-stage1"): ("--real", "--candidate", "--out", "--config"),
    ("evaluate", "select-stage2"): ("--real", "--candidate", "--out", "--config"),
}


def _ids(verbs) -> list[str]:
    return [" ".join(v) for v in verbs]


def _invoke(*args: Any):
    return CliRunner().invoke(app, [str(a) for a in args])


def _explain(result) -> str:
    """Output plus the traceback of an escaped exception, for assertion messages."""
    text = result.output
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        import traceback

        text += "\n" + "".join(traceback.format_exception(*result.exc_info))
    return text


# ---------------------------------------------------------------------------------------------- --help


def test_every_verb_is_covered() -> None:
    """The table above lists exactly the verbs the CLI has (a new verb needs its smoke test)."""
    root = typer.main.get_command(app)
    verbs: set[tuple[str, ...]] = set()
    for name, cmd in root.commands.items():
        sub = getattr(cmd, "commands", None)
        if sub:
            verbs |= {(name, s) for s in sub}
        else:
            verbs.add((name,))
    assert verbs == set(VERBS)


def test_root_help_and_version() -> None:
    res = _invoke("--help")
    assert res.exit_code == 0, res.output
    for verb in {v[0] for v in VERBS}:
        assert verb in res.output, verb
    res = _invoke("--version")
    assert res.exit_code == 0 and res.output.startswith("magphase "), res.output


@pytest.mark.parametrize("verb", list(VERBS), ids=_ids(VERBS))
def test_help(verb: tuple[str, ...]) -> None:
    res = CliRunner().invoke(app, [*verb, "--help"], terminal_width=200)
    assert res.exit_code == 0, _explain(res)
    assert "Usage:" in res.output
    missing = [opt for opt in VERBS[verb] if opt not in res.output]
    assert not missing, f"{' '.join(verb)} --help lacks {missing}:\n{res.output}"


# ------------------------------------------------------------------------------------ user errors (fast)

# (argv with {tmp} for a fresh empty folder, words the one error line must contain)
USER_ERRORS: dict[tuple[str, ...], tuple[list[str], tuple[str, ...]]] = {
    ("info",): (["info", "{tmp}/missing.h5"], ("missing.h5", "does not exist")),
    ("labels",): (["labels", "--annotations", "{tmp}/brain.csv"], ("brain.csv", "not found")),
    ("simulate",): (["simulate", "--out", "{tmp}/sim", "--shard", "5/2"], ("--shard",)),
    ("prepare",): (["prepare", "--raw", "{tmp}/no-raw", "--out", "{tmp}/prep"], ("no-raw", "does not exist")),
    ("prepare-external",): (["prepare-external", "--out", "{tmp}/ext"], ("--raw", "--labels")),
    ("train-autoencoder",): (
        ["train-autoencoder", "--out", "{tmp}/run", "--set", "autoencoder.nope=1"],
        ("autoencoder.nope",),
    ),
    ("encode",): (["encode", "--out", "{tmp}/run/latents"], ("autoencoder weights not found",)),
    ("train-flow",): (["train-flow", "--stage", "3", "--out", "{tmp}/run"], ("--stage must be 1 or 2",)),
    ("sample",): (
        ["sample", "--stage", "1", "--sequence", "AXT1", "--n", "0", "--out", "{tmp}/run/s"],
        ("--n must be >= 1",),
    ),
    ("flow-snapshots",): (["flow-snapshots", "--stage", "1", "--out", "{tmp}/run"], ("stage 1",)),
    ("flow-probe",): (
        ["flow-probe", "--weights", "{tmp}/w.safetensors", "--latents", "{tmp}/latents"],
        ("w.safetensors",),
    ),
    ("phasegen", "train"): (["phasegen", "train", "--out", "{tmp}/run"], ("not a magphase store",)),
    ("phasegen", "sample"): (
        ["phasegen", "sample", "--source", "{tmp}/p", "--out", "{tmp}/o", "--sampler", "bogus"],
        ("--sampler", "bogus"),
    ),
    ("phasegen", "figure"): (
        ["phasegen", "figure", "--source", "{tmp}/p", "--out", "{tmp}/f.png"],
        ("--weights",),
    ),
    ("phasegen", "eval"): (
        ["phasegen", "eval", "--synthetic", "{tmp}/s", "--out", "{tmp}/e"],
        ("not a magphase store",),
    ),
    ("run",): (
        ["run", str(MICRO), "--out", "{tmp}/run", "--from", "nope", "--dry-run"],
        ("unknown stage 'nope'",),
    ),
    ("report",): (["report", "{tmp}/no-such-run"], ("no-such-run", "no such run folder")),
    ("evaluate", "autoencoder"): (
        ["evaluate", "autoencoder", "--out", "{tmp}/run"],
        ("autoencoder weights",),
    ),
    ("evaluate", "realfake"): (
        ["evaluate", "realfake", "--real", "{tmp}/r", "--synthetic", "{tmp}/s", "--out", "{tmp}/o"],
        ("not a magphase store",),
    ),
    ("evaluate", "downstream"): (
        ["evaluate", "downstream", "--real", "{tmp}/r", "--out", "{tmp}/o"],
        ("not a magphase store",),
    ),
    ("evaluate", "learning-curve"): (
        ["evaluate", "learning-curve", "--real", "{tmp}/r", "--out", "{tmp}/o"],
        ("not a magphase store",),
    ),
    ("evaluate", "select-stage1"): (
        ["evaluate", "select-stage1", "--real", "{tmp}/r", "--candidate", "bad", "--out", "{tmp}/o"],
        ("NAME=STORE",),
    ),
    ("evaluate", "select-stage2"): (
        ["evaluate", "select-stage2", "--real", "{tmp}/r", "--out", "{tmp}/o"],
        ("--candidate",),
    ),
}


def test_every_verb_has_a_user_error_case() -> None:
    assert set(USER_ERRORS) == set(VERBS)


@pytest.mark.parametrize("verb", list(USER_ERRORS), ids=_ids(USER_ERRORS))
def test_user_error_is_one_line_without_traceback(verb, tmp_path, monkeypatch, capsys) -> None:
    argv, needles = USER_ERRORS[verb]
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = _run_main(monkeypatch, capsys, *args)
    assert code == 2, out + err
    _assert_one_clear_error(code, out, err, *needles)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["simulate", "--out", "{tmp}/sim", "--volumes", "abc"], "--volumes"),
        (["prepare", "--raw", "{tmp}", "--out", "{tmp}/p", "--workers", "0"], "--workers"),
        (["train-flow", "--out", "{tmp}/run"], "--stage"),
        (["nonsense-verb"], "nonsense-verb"),
    ],
    ids=["bad-int", "out-of-range", "missing-required", "unknown-verb"],
)
def test_usage_errors_exit_2_without_traceback(argv, needle, tmp_path, monkeypatch, capsys) -> None:
    code, out, err = _run_main(monkeypatch, capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2 and "Traceback" not in out + err, out + err
    assert needle in err, err


def test_console_script_prints_one_error_line(tmp_path) -> None:
    """The installed ``magphase`` script is wired to ``main`` (one line, exit 2, no traceback)."""
    script = Path(sys.executable).with_name("magphase")
    if not script.is_file():
        pytest.skip(f"console script not installed beside {sys.executable}")
    proc = subprocess.run(
        [str(script), "info", str(tmp_path / "missing.h5")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error:"), proc.stderr


# ---------------------------------------------------------------------------------------- the chain

# configs/micro.yaml, shrunk: 6 one-sequence volumes of 3 slices and 2 coils (+ 1 external), ~19
# patches, 1-2 training steps everywhere. Keys in _LEAVES replace micro's value instead of merging.
SMOKE = {
    "name": "cli-smoke",
    "simulate": {
        "volumes": 6,
        "sequence_mix": {"AXT1POST": 1.0},
        "class_fractions": {"normal": 0.5, "abnormal": 0.5},
        "external_volumes": 1,
        "n_slices": 3,
        "coils": {2: 1.0},
        "external": {"coils": {2: 1.0}, "matrices": [[160, 160]]},
    },
    "prepare": {
        "normal_patches": [2, 3],
        "abnormal_box_patches": [2, 3],
        "unlabeled_patches": [2, 2],
        "abnormal_volume_normal_patches": [1, 1],
    },
    "autoencoder": {"train": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 1}},
    "flow": {
        "stage1": {
            "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 1, "keep_every": 1, "log_every": 1}
        },
        "stage2": {
            "phase1": {"steps": 1, "batch_size": 4, "checkpoint_every": 1, "log_every": 1},
            "phase2": {"steps": 2, "batch_size": 4, "checkpoint_every": 1, "keep_every": 1, "log_every": 1},
        },
    },
    "evaluation": {
        "realfake": {"n_test_sets": 1, "train": {"steps": 2, "checkpoint_every": 2, "log_every": 1}},
        "downstream": {
            "real_fractions": [1.0, 0.0],
            "additive_fractions": [0.5],
            "magnitude_only_fractions": [1.0],
            "train": {"steps": 2, "checkpoint_every": 2, "log_every": 1},
        },
    },
    "phasegen": {
        "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 1},
        "evaluation_patches": 4,
    },
}
_LEAVES = {"sequence_mix", "class_fractions", "coils", "matrices"}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _LEAVES:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _manifest(store: Path) -> list[dict[str, str]]:
    with open(store / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _is_store(path: Path) -> bool:
    return all((path / name).is_file() for name in ("arrays.h5", "manifest.csv", "meta.json"))


class Chain:
    """Runs the verbs in pipeline order into one run folder and keeps each one's CliRunner result."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.cfg = root / "smoke.yaml"
        self.cfg.write_text(yaml.safe_dump(_merge(yaml.safe_load(MICRO.read_text()), SMOKE)))
        self.results: dict[str, Any] = {}

    def __call__(self, key: str, *args: Any) -> Any:
        self.results[key] = res = CliRunner().invoke(app, [str(a) for a in args])
        return res

    def ok(self, key: str):
        res = self.results[key]
        assert res.exit_code == 0, f"{key} failed (exit {res.exit_code}):\n{_explain(res)}"
        return res


def _build_chain(c: Chain) -> None:
    run, cfg = c.run, c.cfg
    data = run / "data"
    c("simulate", "simulate", "--config", cfg, "--out", data, "--preview", c.root / "preview.png")
    h5 = sorted(data.glob("*.h5"))
    c("info", "info", h5[0] if h5 else data / "none.h5", "--json")
    c(
        "labels",
        "labels",
        "-a",
        data / "brain.csv",
        "-l",
        data / "brain_file_list.csv",
        "--out",
        c.root / "labels.csv",
    )
    c(
        "prepare",
        "prepare",
        "--config",
        cfg,
        "--raw",
        data,
        "-a",
        data / "brain.csv",
        "-l",
        data / "brain_file_list.csv",
        "--out",
        run / "prepare",
    )
    c(
        "prepare-external",
        "prepare-external",
        "--config",
        cfg,
        "--raw",
        data / "external",
        "--labels",
        data / "external" / "labels.csv",
        "--out",
        run / "prepare-external",
    )
    c("train-autoencoder", "train-autoencoder", "--config", cfg, "--out", run)
    c("evaluate autoencoder", "evaluate", "autoencoder", "--config", cfg, "--out", run)
    c("encode", "encode", "--config", cfg, "--out", run / "latents")
    c("train-flow 1", "train-flow", "--stage", "1", "--config", cfg, "--out", run)
    c("train-flow 2", "train-flow", "--stage", "2", "--config", cfg, "--out", run)
    c(
        "flow-snapshots",
        "flow-snapshots",
        "--stage",
        "2",
        "--out",
        run,
        "--select",
        "2",
        "--criterion",
        "smoke test",
    )
    # Real-vs-synthetic needs as many synthetic latents per sequence as real ones; downstream as many
    # synthetic patches per class as the real train split has.
    latents = _manifest(run / "latents") if _is_store(run / "latents") else []
    n_latents = max(Counter(r["sequence"] for r in latents).values(), default=1)
    patches = _manifest(run / "prepare" / "patches") if _is_store(run / "prepare" / "patches") else []
    n_train = max(Counter(r["label"] for r in patches if r["split"] == "train").values(), default=1)
    common = ["--sequence", "AXT1POST", "--config", cfg, "--run", run]
    c(
        "sample 1",
        "sample",
        "--stage",
        "1",
        "--n",
        n_latents,
        "--no-decode",
        *common,
        "--out",
        run / "samples" / "realfake",
    )
    c(
        "sample 1 test",
        "sample",
        "--stage",
        "1",
        "--n",
        n_latents,
        "--no-decode",
        "--seed",
        "7",
        *common,
        "--out",
        run / "samples" / "realfake-test",
    )
    c(
        "sample 2",
        "sample",
        "--stage",
        "2",
        "--label",
        "normal,abnormal",
        "--n",
        n_train,
        *common,
        "--out",
        run / "samples" / "downstream",
    )
    c(
        "flow-probe",
        "flow-probe",
        "-w",
        run / "flow" / "stage2" / "phase2" / "ema.safetensors",
        "-l",
        run / "latents",
        "--repeats",
        "1",
        "--max-items",
        "8",
        "--json",
        c.root / "probe.json",
    )
    ev = run / "evaluation"
    c(
        "evaluate realfake",
        "evaluate",
        "realfake",
        "--config",
        cfg,
        "--real",
        run / "latents",
        "--synthetic",
        run / "samples" / "realfake",
        "--test",
        run / "samples" / "realfake-test",
        "--out",
        ev / "realfake",
    )
    c(
        "evaluate downstream",
        "evaluate",
        "downstream",
        "--config",
        cfg,
        "--real",
        run / "prepare" / "patches",
        "--synthetic",
        run / "samples" / "downstream",
        "--external",
        run / "prepare-external" / "patches",
        "--out",
        ev / "downstream",
    )
    c(
        "evaluate learning-curve",
        "evaluate",
        "learning-curve",
        "--config",
        cfg,
        "--set",
        "evaluation.learning_curve.runs=1",
        "--real",
        run / "prepare" / "patches",
        "--external",
        run / "prepare-external" / "patches",
        "--out",
        ev / "learning-curve",
    )
    c(
        "evaluate select-stage1",
        "evaluate",
        "select-stage1",
        "--config",
        cfg,
        "--real",
        run / "latents",
        "--candidate",
        f"a={run / 'samples' / 'realfake'}",
        "--out",
        c.root / "select1",
    )
    c(
        "evaluate select-stage2",
        "evaluate",
        "select-stage2",
        "--config",
        cfg,
        "--real",
        run / "prepare" / "patches",
        "--candidate",
        f"a={run / 'samples' / 'downstream'}",
        "--out",
        c.root / "select2",
    )
    c("phasegen train", "phasegen", "train", "--config", cfg, "--out", run)
    c(
        "phasegen sample",
        "phasegen",
        "sample",
        "--config",
        cfg,
        "--source",
        run / "prepare" / "patches",
        "--run",
        run,
        "--split",
        "test",
        "--limit",
        "4",
        "--out",
        run / "phasegen" / "test-samples",
    )
    c(
        "phasegen figure",
        "phasegen",
        "figure",
        "--config",
        cfg,
        "--source",
        run / "prepare" / "patches",
        "--run",
        run,
        "--k",
        "2",
        "--draws",
        "1",
        "--steps",
        "2",
        "--out",
        c.root / "phasegen.png",
    )
    c(
        "phasegen eval",
        "phasegen",
        "eval",
        "--synthetic",
        run / "phasegen" / "test-samples",
        "--out",
        run / "phasegen" / "evaluation",
    )
    c("report", "report", run, "--config", cfg)
    # `run` on the same folder: the simulated data matches the config, so simulate only resumes
    # (nothing to draw) and is marked finished; the dry run then plans to skip it.
    c("run", "run", cfg, "--out", run, "--until", "simulate")
    c("run dry", "run", cfg, "--out", run, "--dry-run")


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Chain:
    c = Chain(tmp_path_factory.mktemp("cli-chain"))
    _build_chain(c)
    return c


@pytest.mark.slow
def test_simulate(chain: Chain) -> None:
    res = chain.ok("simulate")
    data = chain.run / "data"
    assert len(list(data.glob("*.h5"))) == 6 and len(list((data / "external").glob("*.h5"))) == 1
    for name in ("brain.csv", "brain_file_list.csv", "external/labels.csv"):
        assert (data / name).is_file(), name
    assert (chain.root / "preview.png").stat().st_size > 0
    assert "7 volumes written" in res.output


@pytest.mark.slow
def test_info(chain: Chain) -> None:
    summary = json.loads(chain.ok("info").output)
    assert summary["sequence"] == "AXT1POST" and summary["n_coils"] == 2 and summary["n_slices"] == 3


@pytest.mark.slow
def test_labels(chain: Chain) -> None:
    res = chain.ok("labels")
    assert "AXT1POST" in res.output and "total" in res.output
    rows = list(csv.DictReader(open(chain.root / "labels.csv", newline="")))
    assert len(rows) == 6


@pytest.mark.slow
def test_prepare(chain: Chain) -> None:
    res = chain.ok("prepare")
    assert "| Class |" in res.output  # Table 1
    store = chain.run / "prepare" / "patches"
    assert _is_store(store)
    rows = _manifest(store)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert {r["label"] for r in rows} == {"normal", "abnormal"}


@pytest.mark.slow
def test_prepare_external(chain: Chain) -> None:
    chain.ok("prepare-external")
    assert _is_store(chain.run / "prepare-external" / "patches")


@pytest.mark.slow
def test_train_autoencoder(chain: Chain) -> None:
    assert "trained to step 2" in chain.ok("train-autoencoder").output
    assert (chain.run / "autoencoder" / "ema.safetensors").is_file()


@pytest.mark.slow
def test_evaluate_autoencoder(chain: Chain) -> None:
    res = chain.ok("evaluate autoencoder")
    assert "| all |" in res.output and "written:" in res.output  # Table 3
    out = chain.run / "autoencoder" / "evaluation"
    assert (out / "table3.md").is_file() and (out / "fig3_reconstructions.png").is_file()


@pytest.mark.slow
def test_encode(chain: Chain) -> None:
    chain.ok("encode")
    assert _is_store(chain.run / "latents") and _is_store(chain.run / "latents-external")
    assert len(_manifest(chain.run / "latents")) == len(_manifest(chain.run / "prepare" / "patches"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["1", "2"])
def test_train_flow(chain: Chain, stage: str) -> None:
    assert f"stage {stage} trained to step 2" in chain.ok(f"train-flow {stage}").output
    weights = chain.run / "flow" / ("stage1" if stage == "1" else "stage2/phase2") / "ema.safetensors"
    assert weights.is_file()


@pytest.mark.slow
def test_flow_snapshots(chain: Chain) -> None:
    res = chain.ok("flow-snapshots")
    assert "selected step 2" in res.output and "inference weights:" in res.output
    assert json.loads((chain.run / "flow" / "stage2" / "selected.json").read_text())["step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("key, store", [("sample 1", "realfake"), ("sample 2", "downstream")])
def test_sample(chain: Chain, key: str, store: str) -> None:
    res = chain.ok(key)
    assert "synthetic store:" in res.output
    assert _is_store(chain.run / "samples" / store)
    if key == "sample 2":
        assert "decoded" in res.output
        assert {r["label"] for r in _manifest(chain.run / "samples" / store)} == {"normal", "abnormal"}


@pytest.mark.slow
def test_flow_probe(chain: Chain) -> None:
    assert "AUROC" in chain.ok("flow-probe").output
    result = json.loads((chain.root / "probe.json").read_text())
    assert result["split"] == "val" and result["n"] > 0


@pytest.mark.slow
def test_evaluate_realfake(chain: Chain) -> None:
    assert "AXT1POST" in chain.ok("evaluate realfake").output
    out = chain.run / "evaluation" / "realfake"
    assert (out / "table4.md").is_file() and (out / "results.csv").is_file()


@pytest.mark.slow
def test_evaluate_downstream(chain: Chain) -> None:
    chain.ok("evaluate downstream")
    out = chain.run / "evaluation" / "downstream"
    assert (out / "summary.md").is_file() and (out / "results.csv").is_file()


@pytest.mark.slow
def test_evaluate_learning_curve(chain: Chain) -> None:
    assert "AUROC test" in chain.ok("evaluate learning-curve").output
    out = chain.run / "evaluation" / "learning-curve"
    assert (out / "learning_curve.md").is_file() and (out / "learning_curve.png").is_file()
    assert json.loads((out / "learning_curve.json").read_text())["fractions"] == [1.0, 0.5, 0.25]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["1", "2"])
def test_evaluate_select(chain: Chain, stage: str) -> None:
    assert "<- selected" in chain.ok(f"evaluate select-stage{stage}").output
    assert (chain.root / f"select{stage}" / "selection.json").is_file()


@pytest.mark.slow
def test_train_phasegen(chain: Chain) -> None:
    assert "PhaseGen trained to step 2" in chain.ok("phasegen train").output
    assert (chain.run / "phasegen" / "ema.safetensors").is_file()


@pytest.mark.slow
def test_sample_phasegen(chain: Chain) -> None:
    assert "4 patches" in chain.ok("phasegen sample").output
    store = chain.run / "phasegen" / "test-samples"
    assert _is_store(store) and len(_manifest(store)) == 4


@pytest.mark.slow
def test_phasegen_figure(chain: Chain) -> None:
    chain.ok("phasegen figure")
    assert (chain.root / "phasegen.png").stat().st_size > 1000


@pytest.mark.slow
def test_phasegen_eval(chain: Chain) -> None:
    assert "all" in chain.ok("phasegen eval").output
    out = chain.run / "phasegen" / "evaluation"
    assert (out / "phasegen_phase.csv").is_file() and (out / "phasegen_phase.md").is_file()


@pytest.mark.slow
def test_report(chain: Chain) -> None:
    chain.ok("report")
    report = (chain.run / "report" / "report.md").read_text()
    assert "Table 1" in report and "Table 3" in report and "| AXT1POST |" in report


@pytest.mark.slow
def test_run(chain: Chain) -> None:
    assert "[done] simulate" in chain.ok("run").output
    plan = chain.ok("run dry").output
    assert any(line.split()[:2] == ["simulate", "skip"] for line in plan.splitlines()), plan


# ------------------------------------------------------------------- user errors that need the chain


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            [
                "sample",
                "--stage",
                "1",
                "-s",
                "AXT1POST",
                "--n",
                "2",
                "--no-decode",
                "--run",
                "{run}",
                "--snapshot",
                "99",
                "--out",
                "{tmp}/s",
            ],
            "--snapshot 99",
        ),
        (
            [
                "sample",
                "--stage",
                "1",
                "-s",
                "AXT1POST",
                "--n",
                "2",
                "--no-decode",
                "--run",
                "{run}",
                "--checkpoint",
                "{run}/flow/stage2/phase2/ema.safetensors",
                "--out",
                "{tmp}/s",
            ],
            "stage-2 model",
        ),
        (["flow-probe", "-w", "{run}/flow/stage1/ema.safetensors", "-l", "{run}/latents"], "stage-1 model"),
        (["flow-snapshots", "--stage", "1", "--out", "{run}", "--select", "99"], "99"),
        (
            [
                "phasegen",
                "sample",
                "--source",
                "{run}/prepare/patches",
                "--run",
                "{run}",
                "--eta",
                "2",
                "--out",
                "{tmp}/o",
            ],
            "--eta",
        ),
    ],
    ids=["sample-missing-snapshot", "sample-wrong-stage", "probe-stage1", "select-missing-step", "eta"],
)
def test_user_error_on_a_real_run(chain, argv, needle, tmp_path, monkeypatch, capsys) -> None:
    args = [a.replace("{run}", str(chain.run)).replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = _run_main(monkeypatch, capsys, *args)
    _assert_one_clear_error(code, out, err, needle)


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            [
                "sample",
                "--stage",
                "1",
                "-s",
                "AXT1POST",
                "--n",
                "2",
                "--no-decode",
                "--run",
                "{run}",
                "--device",
                "bogus",
                "--out",
                "{tmp}/s",
            ],
            id="sample-bad-device",
        ),
        pytest.param(
            ["evaluate", "autoencoder", "--out", "{run}", "--config", "{cfg}", "--device", "bogus"],
            id="evaluate-autoencoder-bad-device",
        ),
        pytest.param(
            [
                "phasegen",
                "figure",
                "--source",
                "{run}/prepare/patches",
                "--run",
                "{run}",
                "--k",
                "0",
                "--out",
                "{tmp}/f.png",
            ],
            id="phasegen-figure-k0",
        ),
        pytest.param(
            [
                "phasegen",
                "figure",
                "--source",
                "{run}/prepare/patches",
                "--run",
                "{run}",
                "--split",
                "nosuch",
                "--out",
                "{tmp}/f.png",
            ],
            id="phasegen-figure-empty-split",
        ),
        pytest.param(
            ["prepare", "--config", "{cfg}", "--raw", "{run}/data", "--device", "bogus", "--out", "{tmp}/p"],
            id="prepare-bad-device",
        ),
        pytest.param(
            [
                "phasegen",
                "sample",
                "--source",
                "{run}/prepare/patches",
                "--run",
                "{run}",
                "--steps",
                "0",
                "--limit",
                "1",
                "--out",
                "{tmp}/o",
            ],
            id="sample-phasegen-steps0",
        ),
    ],
)
def test_bad_values_of_a_trained_run_give_one_clear_error(chain, argv, tmp_path, monkeypatch, capsys) -> None:
    args = [
        a.replace("{run}", str(chain.run)).replace("{cfg}", str(chain.cfg)).replace("{tmp}", str(tmp_path))
        for a in argv
    ]
    code, out, err = _run_main(monkeypatch, capsys, *args)
    if "Invalid value for" in out + err:  # caught by the option's own range: a usage error
        assert code == 2 and "Traceback" not in out + err, out + err
    else:
        _assert_one_clear_error(code, out, err)
