"""pipeline.keep_raw: false: each simulated volume is prepared as it is written and its raw file deleted,
with the same patch store as keeping the raw files, and runs that resume or change the prepare config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from magphase.config import load_config
from magphase.data.store import Store
from magphase.run import run_stage
from magphase.rundir import RunLayout

MICRO = Path(__file__).resolve().parents[2] / "configs" / "micro.yaml"
# Fewer, smaller volumes than the micro run: the comparison needs two simulations.
SMALL = ["simulate.volumes=10", "simulate.external_volumes=1", "simulate.n_slices=4"]


def _prepare(run: Path, *extra: str) -> Store:
    cfg = load_config(MICRO, [*SMALL, *extra])
    for stage in ("simulate", "prepare"):
        run_stage(cfg, run, stage)
    return Store(RunLayout(run).prepare / "patches")


def _same_store(a: Store, b: Store) -> None:
    assert a.manifest.equals(b.manifest)
    rows = np.arange(len(a.manifest))
    assert np.array_equal(a.read("patches", rows), b.read("patches", rows))


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> Store:
    return _prepare(tmp_path_factory.mktemp("kept") / "run")


@pytest.mark.slow
def test_streamed_run_prepares_the_same_store_without_raw_files(kept: Store, tmp_path: Path) -> None:
    run = tmp_path / "run"
    streamed = _prepare(run, "pipeline.keep_raw=false")
    _same_store(streamed, kept)
    data = RunLayout(run).data
    assert not list(data.glob("*.h5")), "training raw files are deleted"
    assert list((data / "external").glob("*.h5")), "external volumes are kept"
    assert (data / "brain.csv").is_file() and (data / "brain_file_list.csv").is_file()

    # An interrupted run: a prepared volume lost (its raw file is long gone) is simulated again from
    # its seeds, prepared and deleted, to the same store.
    volumes = sorted((RunLayout(run).prepare / "volumes").glob("*.h5"))
    volumes[0].unlink()
    cfg = load_config(MICRO, [*SMALL, "pipeline.keep_raw=false"])
    run_stage(cfg, run, "prepare")
    assert volumes[0].is_file() and not list(data.glob("*.h5"))
    _same_store(Store(RunLayout(run).prepare / "patches"), kept)


@pytest.mark.slow
def test_streamed_run_with_another_prepare_config_simulates_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _prepare(run, "pipeline.keep_raw=false")
    changed = _prepare(run, "pipeline.keep_raw=false", "prepare.normal_patches=[2,2]")
    reference = _prepare(tmp_path / "kept", "prepare.normal_patches=[2,2]")
    _same_store(changed, reference)
    assert not list(RunLayout(run).data.glob("*.h5"))
