"""The run directory's owner: paths, the one completion marker, flow weights and snapshot selection."""

from __future__ import annotations

import json

import pytest
import torch

from magphase.errors import ConfigError, DataError
from magphase.models.weights import save_weights, weights_metadata
from magphase.rundir import STAGE_NAMES, RunLayout
from magphase.stages import STAGES


def test_registry_and_layout_name_the_same_stages_in_order():
    assert tuple(s.name for s in STAGES) == STAGE_NAMES
    for stage in STAGES:  # every declared output is a RunLayout path
        for name in stage.writes + stage.reads:
            attr = name.split("(")[0]
            assert hasattr(RunLayout, attr), (stage.name, name)


def test_markers_round_trip_and_unknown_stages_are_refused(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.read_marker("prepare") is None
    layout.write_marker("prepare", {"config_hash": "abc", "seconds": 1.5})
    assert layout.read_marker("prepare")["config_hash"] == "abc"
    layout.write_marker("simulate", {"config_hash": "x"})
    assert list(layout.stage_records()) == ["simulate", "prepare"]  # run order, not write order
    layout.marker("prepare").write_text("{not json")
    assert layout.read_marker("prepare") is None  # unreadable counts as not done
    with pytest.raises(ValueError, match="config_hash"):
        layout.write_marker("encode", {"seconds": 1})
    with pytest.raises(ConfigError, match="unknown stage"):
        layout.marker("nosuch")


def test_flow_weights_prefer_the_selected_snapshot(tmp_path):
    layout = RunLayout(tmp_path / "run")
    with pytest.raises(DataError, match="flow stage 1"):
        layout.flow_weights(1)
    meta = weights_metadata(10, {"kind": "velocity_unet"})
    final = save_weights({"w": torch.zeros(1)}, layout.flow_training(1) / "ema.safetensors", meta)
    snap = save_weights(
        {"w": torch.ones(1)}, layout.flow_training(1) / "snapshots" / "ema-step00000005.safetensors", meta
    )
    assert layout.flow_weights(1) == final and layout.flow_snapshots(1) == {5: snap}
    record = layout.select_flow_snapshot(1, 5, criterion="test", value=0.5)
    assert json.loads(record.read_text())["path"] == "flow/stage1/snapshots/ema-step00000005.safetensors"
    assert layout.flow_weights(1) == snap
    with pytest.raises(ConfigError, match="no snapshot at step 7"):
        layout.select_flow_snapshot(1, 7)
    assert layout.flow_training(2) == tmp_path / "run" / "flow" / "stage2" / "phase2"
    with pytest.raises(ValueError):
        layout.flow(3)
