import pytest

from magphase.config import MagphaseConfig, config_hash, dump_config, load_config
from magphase.conventions import (
    CLASS_TOKENS,
    SEQUENCES,
    sequence_from_filename,
    sequence_index,
)
from magphase.errors import ConfigError


def test_fixed_orders():
    assert SEQUENCES == ("AXFLAIR", "AXT1", "AXT1POST", "AXT1PRE", "AXT2")
    assert CLASS_TOKENS == ("normal", "abnormal", "unknown", "null")
    assert sequence_index("axt1post") == 2
    with pytest.raises(ValueError, match="AXFLAIR"):
        sequence_index("T1SE")


@pytest.mark.parametrize(
    "name,seq",
    [
        ("file_brain_AXT1POST_201_6002780.h5", "AXT1POST"),
        ("file_brain_AXT1_202_2020098.h5", "AXT1"),
        ("file_brain_AXT1PRE_203_6000696", "AXT1PRE"),
        ("/x/y/file_brain_AXFLAIR_200_6002462.h5", "AXFLAIR"),
        ("file_brain_AXT2_200_2000019.h5", "AXT2"),
        ("something_else.h5", None),
    ],
)
def test_sequence_from_filename(name, seq):
    assert sequence_from_filename(name) == seq


def test_config_round_trip_and_overrides(tmp_path):
    cfg = load_config(None, ["seed=7", "name=x"])
    assert cfg.seed == 7 and cfg.name == "x"
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    again = load_config(p)
    assert again == cfg
    assert config_hash(cfg) == config_hash(again)
    assert config_hash(cfg) != config_hash(MagphaseConfig())


def test_config_errors_name_the_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("seeed: 3\n")
    with pytest.raises(ConfigError, match="seeed"):
        load_config(p)
    p.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["micro", "demo", "reproduce", "reproduce-gpu", "fastmri"])
def test_shipped_presets_validate_and_round_trip(tmp_path, name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    cfg = load_config(path)
    assert cfg.name == name
    again = tmp_path / "resolved.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg
