"""Report text helpers: the protocol table says where a preset departs from the paper."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize(("preset", "n_differ"), [("demo.yaml", 7), ("reproduce.yaml", 5)])
def test_reduced_presets_say_what_differs(preset, n_differ):
    text = _protocol_table(load_config(CONFIGS / preset))
    rows = _rows(text)
    assert text.startswith(f"{n_differ} setting(s) differ")
    assert sum(cells[2] == "differs" for cells in rows.values()) == n_differ
    assert rows["downstream classifiers per configuration"][1:] == ["5", "differs"]
    assert rows["stage-2 guidance w (downstream)"] == ["2", "2", ""]
