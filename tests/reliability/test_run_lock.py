"""One writer per run folder: a second ``magphase run`` refuses; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import assert_one_clear_error, run_main
from magphase.rundir import RunLayout
from magphase.utils.lockfile import LockedError, PidLock
from magphase.utils.process import process_start_ticks

REPO = Path(__file__).resolve().parents[2]
MICRO = REPO / "configs" / "micro.yaml"


def _write_lock(path: Path, pid: int, host: str | None = None, start_ticks: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": pid,
        "host": host or socket.gethostname(),
        "start_ticks": start_ticks,
        "since": "earlier",
    }
    path.write_text(json.dumps(record))


@pytest.fixture
def other_process():
    """A live process that is not this one (its pid stands for another magphase run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_held_by_a_live_process_refuses_with_its_owner(tmp_path: Path, other_process) -> None:
    lock = tmp_path / "run.lock"
    _write_lock(lock, other_process.pid, start_ticks=process_start_ticks(other_process.pid))
    with pytest.raises(LockedError, match=f"in use by pid {other_process.pid} on {socket.gethostname()}"):
        PidLock(lock).acquire()
    assert json.loads(lock.read_text())["pid"] == other_process.pid  # left alone


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path, caplog) -> None:
    lock = tmp_path / "run.lock"
    _write_lock(lock, _dead_pid())
    with PidLock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    assert "stale lock" in caplog.text


def test_lock_whose_pid_was_reused_is_stale(tmp_path: Path, other_process) -> None:
    """Same pid, other start time: the owner died and an unrelated process got its pid."""
    lock = tmp_path / "run.lock"
    ticks = process_start_ticks(other_process.pid)
    if ticks is None:
        pytest.skip("no /proc start times on this system")
    _write_lock(lock, other_process.pid, start_ticks=ticks - 1)
    with PidLock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_lock_of_another_host_is_refused_not_judged(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    _write_lock(lock, 1, host="some-other-node")
    with pytest.raises(LockedError, match="some-other-node.*delete the lock file"):
        PidLock(lock).acquire()


@pytest.mark.parametrize("content", ["", "{not json", "[]"])
def test_unreadable_lock_file_is_stale(tmp_path: Path, content: str) -> None:
    lock = tmp_path / "run.lock"
    lock.write_text(content)
    with PidLock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_lock_is_reentrant_and_released_on_error(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    with pytest.raises(RuntimeError), PidLock(lock):
        with PidLock(lock):  # a stage verb inside a run of the same process
            assert lock.exists()
        assert lock.exists()
        raise RuntimeError("boom")
    assert not lock.exists()


def test_run_on_a_locked_folder_refuses_before_any_work(
    tmp_path: Path, other_process, monkeypatch, capsys
) -> None:
    run = tmp_path / "run"
    layout = RunLayout(run)
    _write_lock(layout.lock_file, other_process.pid, start_ticks=process_start_ticks(other_process.pid))
    code, out, err = run_main(monkeypatch, capsys, "run", MICRO, "--out", run)
    assert_one_clear_error(code, out, err, f"pid {other_process.pid}", str(layout.lock_file))
    assert sorted(p.name for p in run.iterdir()) == ["run.lock"]  # nothing written, no stage begun


@pytest.mark.slow
def test_two_real_runs_on_one_folder(tmp_path: Path) -> None:
    """A second ``magphase run`` process on a folder in use exits 2 naming the first's pid."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "magphase", "run", str(MICRO), "--out", str(run)]
    first = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        lock = RunLayout(run).lock_file
        deadline = time.monotonic() + 120
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.exists()
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"in use by pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert json.loads(lock.read_text())["pid"] == first.pid
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
