"""Config mistakes are refused before any work starts: one ``error:`` line naming the key, no run folder.

Each case is fed to ``magphase run`` (which would otherwise start simulating) and to every verb that
takes ``--config`` and ``--set``, with a path that has spaces and non-ASCII characters.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import assert_one_clear_error, run_main

REPO = Path(__file__).resolve().parents[2]
MICRO = REPO / "configs" / "micro.yaml"

# (case id, --set overrides, text the error line must hold)
OVERRIDES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("unknown key", ("autoencoder.train.stepz=3",), "autoencoder.train.stepz"),
    ("unknown section", ("autoencodr.train.steps=3",), "autoencodr"),
    ("wrong type", ("autoencoder.train.steps=many",), "autoencoder.train.steps"),
    ("negative steps", ("flow.stage1.train.steps=-5",), "flow.stage1.train.steps"),
    ("zero batch", ("autoencoder.train.batch_size=0",), "autoencoder.train.batch_size"),
    ("fraction above 1", ("evaluation.downstream.real_fractions=[1.5]",), "real_fractions"),
    ("additive fraction 0", ("evaluation.downstream.additive_fractions=[0.0]",), "additive_fractions"),
    ("negative guidance", ("flow.sampling.guidance_stage2=-1",), "guidance_stage2"),
    ("negative eval guidance", ("evaluation.downstream.guidance=-0.5",), "evaluation.downstream.guidance"),
    ("unknown preset", ("simulate.preset=nosuch",), "simulate.preset"),
    ("inverted range", ("prepare.normal_patches=[5,2]",), "prepare.normal_patches"),
    ("negative seed", ("seed=-1",), "seed"),
    ("unknown device", ("device=tpu",), "device"),
    ("malformed override", ("autoencoder.train.steps",), "key.sub=value"),
    ("override not YAML", ("evaluation.downstream.real_fractions=[1,",), "not valid YAML"),
    ("missing raw folder", ("data.raw=/nonexistent/raw",), "data.raw"),
    ("nothing to simulate", ("simulate.volumes=0",), "simulate.volumes"),
)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "run folder ü"


@pytest.mark.parametrize("overrides,needle", [c[1:] for c in OVERRIDES], ids=[c[0] for c in OVERRIDES])
def test_bad_override_is_refused_before_any_work(out, overrides, needle, monkeypatch, capsys) -> None:
    args = [a for o in overrides for a in ("--set", o)]
    code, stdout, stderr = run_main(monkeypatch, capsys, "run", MICRO, "--out", out, *args)
    assert_one_clear_error(code, stdout, stderr, needle)
    assert not out.exists()


STAGE_VERB_CASES = [c for c in OVERRIDES if c[0] not in ("missing raw folder", "nothing to simulate")]
STAGE_VERB_IDS = [c[0] for c in STAGE_VERB_CASES]
# Every verb that takes --config and --set, with the other options it needs to get as far as the config.
SET_VERBS = {
    "train-autoencoder": ("train-autoencoder", "--out", "{out}"),
    "encode": ("encode", "--out", "{out}/latents"),
    "train-flow": ("train-flow", "--stage", "1", "--out", "{out}"),
    "prepare": ("prepare", "--raw", "{out}/raw", "--out", "{out}"),
    "phasegen train": ("phasegen", "train", "--out", "{out}"),
    "phasegen sample": (
        "phasegen",
        "sample",
        "--source",
        "{out}/store",
        "--weights",
        "{out}/w",
        "--out",
        "{out}",
    ),
    "evaluate autoencoder": ("evaluate", "autoencoder", "--out", "{out}"),
}


@pytest.mark.parametrize("verb", list(SET_VERBS))
@pytest.mark.parametrize(
    "overrides,needle", [c[1:] for c in STAGE_VERB_CASES], ids=[c[0] for c in STAGE_VERB_CASES]
)
def test_bad_override_is_refused_by_every_verb_that_takes_set(
    out, verb, overrides, needle, monkeypatch, capsys
) -> None:
    args = [a for o in overrides for a in ("--set", o)]
    argv = [a.replace("{out}", str(out)) for a in SET_VERBS[verb]]
    code, stdout, stderr = run_main(monkeypatch, capsys, *argv, "--config", MICRO, *args)
    assert_one_clear_error(code, stdout, stderr, needle)
    assert not out.exists()


def test_missing_annotations_file_is_refused(tmp_path: Path, out, monkeypatch, capsys) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    sets = ("--set", f"data.raw={raw}", "--set", f"data.annotations={tmp_path / 'brain.csv'}")
    code, stdout, stderr = run_main(monkeypatch, capsys, "run", MICRO, "--out", out, *sets)
    assert_one_clear_error(code, stdout, stderr, "data.annotations", "brain.csv")
    assert not out.exists()


def test_external_raw_without_labels_is_refused(tmp_path: Path, out, monkeypatch, capsys) -> None:
    code, stdout, stderr = run_main(
        monkeypatch, capsys, "run", MICRO, "--out", out, "--set", f"data.external_raw={tmp_path}"
    )
    assert_one_clear_error(code, stdout, stderr, "data.external_labels")
    assert not out.exists()


@pytest.mark.parametrize(
    "content,needle",
    [
        ("a: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("autoencoder:\n  train:\n    steps: -1\n", "autoencoder.train.steps"),
        ("autoencoder: 3\n", "autoencoder"),
        (b"\xff\xfe\x00name: x", "not a UTF-8 text file"),
    ],
    ids=["yaml syntax", "not a mapping", "negative steps in file", "section not a mapping", "not utf-8"],
)
def test_bad_config_file_is_refused(tmp_path: Path, out, content, needle, monkeypatch, capsys) -> None:
    config = tmp_path / "my config ü.yaml"
    config.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, stdout, stderr = run_main(monkeypatch, capsys, "run", config, "--out", out)
    assert_one_clear_error(code, stdout, stderr, needle, str(config))
    assert not out.exists()


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_config_path_that_is_not_a_file(tmp_path: Path, out, kind, monkeypatch, capsys) -> None:
    config = tmp_path / "config.yaml"
    if kind == "folder":
        config.mkdir()
    code, stdout, stderr = run_main(monkeypatch, capsys, "run", config, "--out", out)
    assert_one_clear_error(code, stdout, stderr, str(config))
    assert not out.exists()
