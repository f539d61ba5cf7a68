"""The report: its tables and figures come from what the stages wrote, the paper's numbers beside,
and it loads no model; the protocol table says where a preset departs from the paper."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from magphase.config import load_config
from magphase.report.report import _protocol_table

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _rows(text: str) -> dict[str, list[str]]:
    rows = [
        line.strip("|").split("|")
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_full_protocol_preset_matches_the_paper():
    text = _protocol_table(load_config(CONFIGS / "reproduce-gpu.yaml"))
    assert text.startswith("This run follows the paper's protocol")
    assert all(cells[2] == "" for cells in _rows(text).values())


@pytest.mark.parametrize(("preset", "n_differ"), [("demo.yaml", 7), ("reproduce.yaml", 6)])
def test_reduced_presets_say_what_differs(preset, n_differ):
    text = _protocol_table(load_config(CONFIGS / preset))
    rows = _rows(text)
    assert text.startswith(f"{n_differ} setting(s) differ")
    assert sum(cells[2] == "differs" for cells in rows.values()) == n_differ
    assert rows["downstream classifiers per configuration"][1:] == ["5", "differs"]
    assert rows["stage-2 guidance w (downstream)"] == ["2", "2", ""]


def test_key_numbers_use_the_paper_additive_points_or_the_nearest_run(tmp_path):
    from magphase.report.report import _downstream_key_numbers
    from magphase.rundir import RunLayout

    folder = tmp_path / "evaluation" / "downstream"
    folder.mkdir(parents=True)
    configs = ["real100", "subst000", "add020", "add080", "add100"]
    pd.DataFrame(
        {
            "config": configs,
            "auroc_test_mean": [0.61, 0.65, 0.59, 0.58, 0.54],
            "auroc_test_std": [0.01] * 5,
            "auroc_external_mean": [0.66, 0.63, 0.69, 0.65, 0.68],
            "auroc_external_std": [0.02] * 5,
        }
    ).to_csv(folder / "summary.csv", index=False)
    rows = _rows(_downstream_key_numbers(RunLayout(tmp_path)))
    assert rows["100 % real + 80 % synthetic added, fastMRI test"] == ["0.894 ± 0.003", "0.580 ± 0.010"]
    # The paper's 90 % point was not run: the nearest one (100 % beats 80 % on a tie) is named.
    ext = "100 % real + 90 % synthetic added, external test (this run: add100, nearest run)"
    assert rows[ext] == ["0.840 ± 0.004", "0.680 ± 0.020"]
    assert rows["0 % real (fully synthetic), external test"] == ["0.843 ± 0.019", "0.630 ± 0.020"]


def _png(path: Path) -> Path:
    from magphase.viz.plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def _fake_run(root: Path) -> Path:
    """What the stages of a finished run write that the report reads (no models, no stores)."""
    import json

    from magphase.rundir import FIG4_NAME, FIG5_NAME, RunLayout

    layout = RunLayout(root)
    (layout.prepare).mkdir(parents=True)
    (layout.prepare / "table1.md").write_text("| class | train |\n|---|---|\n| abnormal | 7 |\n")
    layout.autoencoder_eval.mkdir(parents=True)
    (layout.autoencoder_eval / "table3.csv").write_text("sequence\nAXT2\n")
    (layout.autoencoder_eval / "table3.md").write_text("| Sequence | γ |\n|---|---|\n| AXT2 | 0.9991 |\n")
    layout.realfake.mkdir(parents=True)
    (layout.realfake / "table4.md").write_text("| Sequence | AUROC |\n|---|---|\n| AXT1 | 0.612 |\n")
    layout.downstream.mkdir(parents=True)
    (layout.downstream / "summary.md").write_text("| config | AUROC |\n|---|---|\n| real100 | 0.700 |\n")
    pd.DataFrame(
        {"config": ["real100", "subst000"], "auroc_test_mean": [0.70, 0.71], "auroc_test_std": [0.01, 0.02]}
    ).to_csv(layout.downstream / "summary.csv", index=False)
    for path in (
        layout.prepare / "fig2_patches.png",
        layout.autoencoder_eval / "fig3_reconstructions.png",
        layout.sample_figures / FIG4_NAME,
        layout.sample_figures / FIG5_NAME,
        layout.downstream / "fig6_substitution_test.png",
        layout.downstream / "fig8_additive.png",
    ):
        _png(path)
    probe = {"split": "val", "n": 12, "n_abnormal": 5, "auroc": 0.625, "per_sequence": {"AXT1": 0.6}}
    layout.class_probe.parent.mkdir(parents=True, exist_ok=True)
    layout.class_probe.write_text(
        json.dumps({"val": {**probe, "repeats": 4}, "train": {**probe, "split": "train", "auroc": 0.9}})
    )
    layout.write_marker("prepare", {"config_hash": "h", "seconds": 12.5, "finished": "t", "device": "cpu"})
    layout.hardware_file.write_text(json.dumps({"python": "3.11", "cpu_count": 2}))
    return root


def test_report_reads_the_stages_outputs_and_loads_no_model(tmp_path, monkeypatch):
    import json

    import magphase.models.cvae
    import magphase.models.unet
    from magphase.report.report import write_report

    def refuse(*_a, **_k):
        raise AssertionError("the report must not load a model")

    monkeypatch.setattr(magphase.models.unet, "load_flow_model", refuse)
    monkeypatch.setattr(magphase.models.cvae, "load_autoencoder", refuse)
    run = _fake_run(tmp_path / "run")
    text = write_report(run, load_config(None)).read_text()
    # Every table is the stage's own file, the paper's numbers beside.
    assert "| abnormal | 7 |" in text and "| AXT2 | 0.9991 |" in text and "| AXT1 | 0.612 |" in text
    assert "| real100 | 0.700 |" in text and "0.9984 ± 0.0013" in text  # paper Table 3, AXFLAIR
    key = _rows(text.split("### Key numbers beside the paper's")[1].split("##")[0])
    assert key["100 % real (baseline), fastMRI test"] == ["0.842 ± 0.006", "0.700 ± 0.010"]
    assert key["100 % real + 80 % synthetic added, fastMRI test"][1] == "n/a"  # no additive run
    # Figures are copies of what the stages drew; the probe is the flow2 stage's record.
    for fig in ("fig2_patches.png", "fig4_stage1_samples.png", "fig5_stage2_samples.png"):
        assert (run / "report" / fig).is_file() and f"]({fig})" in text
    assert "| val | 12 (5) | 0.625 | 0.600 |" in text and "| train | 12 (5) | 0.900 |" in text
    # Run time and hardware come from the markers and RUN/hardware.json.
    assert "| prepare | 12.5 |" in text and '"cpu_count": 2' in text
    meta = json.loads((run / "report" / "report.json").read_text())
    assert meta["class_probe"]["val"]["auroc"] == 0.625 and meta["hardware"]["cpu_count"] == 2


def test_report_of_an_empty_run_lists_what_is_missing(tmp_path):
    import json

    from magphase.report.report import write_report

    text = write_report(tmp_path / "run", load_config(None)).read_text()
    assert "_Not produced by this run" in text and "## Missing" in text
    missing = json.loads((tmp_path / "run" / "report" / "report.json").read_text())["missing"]
    assert "Fig. 4" in missing and "Fig. 5" in missing and any(m.startswith("Table 1") for m in missing)
