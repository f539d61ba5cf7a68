"""Is a process still running? For stale-lock and stale-partial detection on this host.

A pid alone can be reused by an unrelated process after its owner died, so where Linux exposes it
(``/proc/<pid>/stat``) the process start time is recorded and compared too.
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):  # no such process / not a pid at all
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def process_start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is parenthesised and may hold spaces: split after its closing ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process_alive(pid: int, start_ticks: int | None) -> bool:
    """True when ``pid`` runs and, if both start times are known, it is the process that was recorded."""
    if not pid_alive(pid):
        return False
    now = process_start_ticks(pid)
    return start_ticks is None or now is None or now == start_ticks


__all__ = ["pid_alive", "process_start_ticks", "same_process_alive"]
