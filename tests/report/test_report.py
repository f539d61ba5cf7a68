"""Report text helpers: the protocol table says where a preset departs from the paper."""

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
