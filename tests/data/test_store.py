import os

import numpy as np
import pytest

from magphase.data.store import MANIFEST_COLUMNS, Store, StoreWriter, merge_stores
from magphase.errors import DataError


def _rows(n, start=0, split="train"):
    return [
        dict(
            patch_id=start + i,
            volume=f"v{(start + i) // 3}",
            sequence="AXT1",
            label="normal",
            split=split,
            slice=i,
            row=0,
            col=0,
            box_overlap=0.0,
        )
        for i in range(n)
    ]


def test_write_read_select(tmp_path, rng):
    data = rng.standard_normal((7, 2, 8, 8)).astype(np.float32)
    with StoreWriter(tmp_path / "s", {"patches": (2, 8, 8)}) as w:
        w.append(_rows(4), patches=data[:4])
        w.append(_rows(3, 4, split="val"), patches=data[4:])
    s = Store(tmp_path / "s")
    assert len(s) == 7 and tuple(s.manifest.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    np.testing.assert_array_equal(s.read("patches", slice(None)), data)
    idx = np.array([5, 1, 5, 0])
    np.testing.assert_array_equal(s.read("patches", idx), data[idx])
    np.testing.assert_array_equal(s.select(split="val"), [4, 5, 6])
    np.testing.assert_array_equal(s.select(split=["val"], slice=[0, 2]), [4, 6])
    assert not list(tmp_path.glob("*.tmp-*"))


def test_failed_writer_leaves_nothing(tmp_path, rng):
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "s", {"patches": (2, 4, 4)}) as w:
            w.append(_rows(2), patches=rng.standard_normal((2, 2, 4, 4)))
            raise RuntimeError("killed")
    assert not (tmp_path / "s").exists() and not list(tmp_path.iterdir())


def test_partials_of_killed_writers_are_removed(tmp_path, rng):
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    host = socket.gethostname()
    stale = [tmp_path / f"s.tmp-{host}-{dead.pid}", tmp_path / f"s.tmp-{dead.pid}"]  # + earlier naming
    alive = tmp_path / f"s.tmp-{host}-1"  # pid 1 always runs
    other_host = tmp_path / f"s.tmp-{host}x-{dead.pid}"
    for d in (*stale, alive, other_host):
        d.mkdir()
    with StoreWriter(tmp_path / "s", {"patches": (2, 4, 4)}) as w:
        w.append(_rows(1), patches=rng.standard_normal((1, 2, 4, 4)))
    assert len(Store(tmp_path / "s")) == 1
    assert not any(d.exists() for d in stale)
    assert alive.is_dir() and other_host.is_dir()


def test_rejects_bad_arrays(tmp_path):
    w = StoreWriter(tmp_path / "s", {"patches": (2, 4, 4)})
    with pytest.raises(ValueError, match="shape"):
        w.append(_rows(2), patches=np.zeros((2, 2, 4, 5)))
    bad = np.zeros((1, 2, 4, 4))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        w.append(_rows(1), patches=bad)
    w.abort()
    with pytest.raises(DataError, match="not a magphase store"):
        Store(tmp_path / "nothing")


def test_merge_and_pickle_reopen(tmp_path, rng):
    a = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    b = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    with StoreWriter(tmp_path / "a", {"mu": (2, 4, 4)}, kind="latents") as w:
        w.append(_rows(3), mu=a)
    with StoreWriter(tmp_path / "b", {"mu": (2, 4, 4)}, kind="latents") as w:
        w.append(_rows(2, 3), mu=b)
    merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    m = Store(tmp_path / "m")
    np.testing.assert_array_equal(m.read("mu", slice(None)), np.concatenate([a, b]))
    assert m.meta["kind"] == "latents"
    import pickle

    m.read("mu", 0)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2._h5 is None
    np.testing.assert_array_equal(m2.read("mu", [4]), b[1:])
    assert os.getpid() == m2._pid


def test_read_runs_repeats_and_bounds(tmp_path, rng):
    data = rng.standard_normal((10, 2, 3, 3)).astype(np.float32)
    with StoreWriter(tmp_path / "s", {"patches": (2, 3, 3)}) as w:
        w.append(_rows(10), patches=data)
    s = Store(tmp_path / "s")
    idx = np.array([7, 2, 3, 4, 9, 3, 3, 0])
    np.testing.assert_array_equal(s.read("patches", idx), data[idx])
    with pytest.raises(IndexError):
        s.read("patches", [10])


def test_copy_store_is_whole_and_adds_meta(tmp_path, rng):
    from magphase.data.store import copy_store

    data = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    with StoreWriter(tmp_path / "a", {"patches": (2, 4, 4)}, meta={"recipe": {"seed": 1}}) as w:
        w.append(_rows(3), patches=data)
    with StoreWriter(tmp_path / "b", {"patches": (2, 4, 4)}) as w:  # an older store at the target
        w.append(_rows(1), patches=data[:1])
    copy_store(tmp_path / "a", tmp_path / "b", copied_from="a")
    b = Store(tmp_path / "b")
    np.testing.assert_array_equal(b.read("patches", slice(None)), data)
    assert b.meta["recipe"] == {"seed": 1} and b.meta["copied_from"] == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    with pytest.raises(DataError):
        copy_store(tmp_path / "missing", tmp_path / "c")
    assert not (tmp_path / "c").exists()
