"""Atomic writes: content lands whole, a failure leaves the old file and no temp file, umask is respected."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from magphase.utils.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_text,
    temp_path_for,
)


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_text_creates_parents_and_round_trips(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "notes.md"
    text = "line one\r\nline two\nÄ, π\n"
    assert atomic_write_text(text, target) == target
    # byte for byte: no newline translation, UTF-8
    assert target.read_bytes() == text.encode("utf-8")
    assert sorted(p.name for p in target.parent.iterdir()) == ["notes.md"]


def test_write_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    atomic_write_bytes(b"old", target)
    atomic_write_bytes(b"new content", target, fsync=False)
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_write_csv_defaults_to_no_index(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=[10, 11])
    target = atomic_write_csv(frame, tmp_path / "t.csv")
    assert target.read_text() == "a,b\n1,x\n2,y\n"
    pd.testing.assert_frame_equal(pd.read_csv(target), frame.reset_index(drop=True))
    atomic_write_csv(frame, target, index=True)
    assert target.read_text().splitlines()[1] == "10,1,x"


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "volume.h5"
    target.write_bytes(b"previous")
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        seen.append(tmp)
        tmp.write_bytes(b"half written")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"previous"
    assert not seen[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["volume.h5"]


def test_failure_without_previous_file_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt  # BaseException too: a killed job must not publish a partial file
    assert list(tmp_path.iterdir()) == []


def test_body_that_writes_nothing_raises_and_publishes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "never.txt"
    with pytest.raises(FileNotFoundError), atomic_path(target):
        pass
    assert list(tmp_path.iterdir()) == []


def test_temp_name_is_hidden_unique_and_not_matched_by_scans(tmp_path: Path) -> None:
    target = tmp_path / "file_brain_AXT2_001.h5"
    names = {temp_path_for(target).name for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.startswith(".file_brain_AXT2_001.h5.") and name.endswith(".tmp")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        tmp.write_bytes(b"x")
        # a folder scan during the write (or after a crash) must not see the half-written file
        assert list(tmp_path.glob("*.h5")) == []
    assert list(tmp_path.glob("*.h5")) == [target]


def test_suffix_keeps_the_ending_libraries_use_to_pick_a_format(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x_mag.nii.gz", suffix=".tmp.nii.gz") as tmp:
        assert tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "x_mag.nii.gz").read_bytes() == b"x"


@pytest.mark.parametrize(
    "write",
    [
        lambda p: atomic_write_text("t", p),
        lambda p: atomic_write_bytes(b"b", p),
        lambda p: atomic_write_csv(pd.DataFrame({"a": [1]}), p),
    ],
    ids=["text", "bytes", "csv"],
)
def test_permissions_follow_umask(tmp_path: Path, umask_027: None, write) -> None:
    target = tmp_path / "out"
    write(target)
    assert _mode(target) == 0o640  # 0o666 & ~0o027, as a plain open() would give (mkstemp gives 0o600)


def test_permissions_follow_umask_for_library_written_files(tmp_path: Path, umask_027: None) -> None:
    target = tmp_path / "lib.bin"
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(b"x")
    assert _mode(target) == 0o640


def test_permissive_umask_gives_world_readable_files(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = atomic_write_text("shared", tmp_path / "shared.txt")
    finally:
        os.umask(old)
    assert _mode(target) == 0o644
