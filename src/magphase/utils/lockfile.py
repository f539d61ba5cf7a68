"""An exclusive lock file naming its owner (pid, host, start time), with stale-lock detection.

``RUN/run.lock`` keeps two ``magphase run`` (or a run and a single-stage verb) from writing the same
run folder at once. The lock file is created complete in one step (a filled temp file hard-linked to
the lock name, which fails if the name exists), so a reader never sees a half-written one. A lock
whose owner is gone (same host, pid not running or reused by another process) is stale: it is
replaced with a warning. A lock held on another host cannot be judged from here and is refused with
the owner's name, so the user can remove it by hand once sure that job is over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from magphase.errors import MagphaseError
from magphase.utils.atomic import temp_path_for
from magphase.utils.process import process_start_ticks, same_process_alive

log = logging.getLogger(__name__)


class LockedError(MagphaseError):
    """A folder is locked by another live process; the message names the owner and the lock file."""


class PidLock:
    """``with PidLock(path, what="run"):`` holds ``path`` exclusively for this process.

    Re-entrant within a process (a nested ``with`` on the same path is a no-op); released on exit,
    including on errors and KeyboardInterrupt. A SIGKILLed owner leaves the file; the next taker
    detects it as stale.
    """

    _held: dict[str, int] = {}

    def __init__(self, path: str | os.PathLike[str], *, what: str = "folder") -> None:
        self.path = Path(path)
        self.what = what
        self._owned = False

    def _record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_ticks": process_start_ticks(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def _read(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _try_create(self) -> bool:
        tmp = temp_path_for(self.path)
        tmp.write_text(json.dumps(self._record()) + "\n")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _is_stale(self, owner: dict[str, Any]) -> bool:
        if not owner:
            return True  # empty or not JSON: not a lock this code wrote (those are created complete)
        if owner.get("host") != socket.gethostname():
            return False
        try:
            pid = int(owner["pid"])
        except (KeyError, TypeError, ValueError):
            return True  # not a lock this code wrote
        if pid == os.getpid():
            return False
        return not same_process_alive(pid, owner.get("start_ticks"))

    def acquire(self) -> PidLock:
        key = str(self.path.resolve())
        if PidLock._held.get(key, 0):
            PidLock._held[key] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                break
            owner = self._read()
            if owner is None:
                continue  # released meanwhile: try again
            if self._is_stale(owner):
                log.warning(
                    "%s: removing the stale lock of pid %s on %s (that process no longer runs)",
                    self.path,
                    owner.get("pid"),
                    owner.get("host"),
                )
                self.path.unlink(missing_ok=True)
                continue
            raise LockedError(
                f"{self.path.parent}: this {self.what} is in use by pid {owner.get('pid')} on "
                f"{owner.get('host')} since {owner.get('since')} (lock file {self.path}); wait for it to "
                "finish, or delete the lock file if that process is gone"
            )
        else:
            raise LockedError(f"{self.path}: could not take the lock (another process keeps taking it)")
        PidLock._held[key] = 1
        self._owned = True
        return self

    def release(self) -> None:
        key = str(self.path.resolve())
        count = PidLock._held.get(key, 0)
        if count > 1:
            PidLock._held[key] = count - 1
            return
        PidLock._held.pop(key, None)
        if self._owned:
            owner = self._read() or {}
            if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self._owned = False

    def __enter__(self) -> PidLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


__all__ = ["LockedError", "PidLock"]
