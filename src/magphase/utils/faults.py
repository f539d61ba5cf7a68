"""Fault injection for the reliability tests: kill or interrupt this process at a named point.

Production runs never set ``MAGPHASE_FAULT`` and a point then costs one environment lookup. The kill
and resume tests (``tests/reliability``) set it to stop a real ``magphase run`` at a chosen place::

    MAGPHASE_FAULT="STAGE/POINT[:NAME]@N[!ACTION]"

- ``STAGE``: the stage running (``*`` for any); the runner names it with :func:`in_stage`.
- ``POINT``: ``write`` (an atomic write whose temp file is complete but not yet renamed; ``NAME`` is a
  glob on the target file name, e.g. ``write:checkpoint.pt`` or ``write:*.h5``), ``train.step`` (after
  an optimizer step) or ``store.publish`` (a store writer about to rename its finished folder).
- ``N``: fire at the N-th matching hit in this process (default 1).
- ``ACTION``: ``kill`` (default: SIGKILL to the whole process group, as the OOM killer or a scheduler
  would), ``term`` (SIGTERM to this process) or ``int`` (SIGINT, as Ctrl-C).
"""

from __future__ import annotations

import fnmatch
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "MAGPHASE_FAULT"
_hits = 0
_stage = ""


@contextmanager
def in_stage(name: str) -> Iterator[None]:
    """Name the stage running, for fault specs that say ``STAGE/...``."""
    global _stage
    before, _stage = _stage, name
    try:
        yield
    finally:
        _stage = before


def _parse(spec: str) -> tuple[str, str, str | None, int, str]:
    action = "kill"
    if "!" in spec:
        spec, action = spec.rsplit("!", 1)
    count = 1
    if "@" in spec:
        spec, n = spec.rsplit("@", 1)
        count = int(n)
    stage, _, point = spec.rpartition("/")
    point, _, name = point.partition(":")
    return stage or "*", point, name or None, count, action


def fault_point(point: str, name: str | None = None) -> None:
    """Kill or interrupt this process here if ``MAGPHASE_FAULT`` names this point (see module doc)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    global _hits
    stage, want, pattern, count, action = _parse(spec)
    if want != point or (stage != "*" and stage != _stage):
        return
    if pattern is not None and (name is None or not fnmatch.fnmatch(name, pattern)):
        return
    _hits += 1
    if _hits != count:
        return
    if action == "kill":
        try:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGTERM if action == "term" else signal.SIGINT)


__all__ = ["ENV", "fault_point", "in_stage"]
