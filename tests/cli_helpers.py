"""Running the console entry point in-process, asserting what a user sees on an error, damaging files.

Shared by ``tests/cli`` (one user error per verb) and ``tests/reliability`` (the bad-input suite).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# What a killed or failed writer may leave beside its target: atomic temp files and partial stores.
PARTIAL_PATTERNS = ("*.tmp", ".*.tmp", "*.tmp-*", ".*.tmp.*", "*.old-*", "*.partial")


def run_main(monkeypatch, capsys, *args: Any) -> tuple[int, str, str]:
    """Run the console entry point (``magphase.cli.main``) in-process: ``(exit code, stdout, stderr)``.

    An exception that escapes ``main`` is what a user would see as a traceback, so it is not caught.
    """
    from magphase.cli import main

    monkeypatch.setattr(sys, "argv", ["magphase", *map(str, args)])
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else (0 if code is None else 1)), captured.out, captured.err


def assert_one_clear_error(code: int, out: str, err: str, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one ``error:`` line holding every needle; returns that line."""
    text = out + err
    assert code != 0, text
    assert "Traceback" not in text, text
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def partial_outputs(folder: str | Path) -> list[Path]:
    """Temp files and partial stores under ``folder`` (recursively): what a clean failure never leaves."""
    folder = Path(folder)
    if not folder.exists():
        return []
    found: set[Path] = set()
    for pattern in PARTIAL_PATTERNS:
        found.update(folder.rglob(pattern))
    return sorted(found)


class Marker:
    """Unpickling this writes ``path``: the proof that a loader executed code from a file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


def truncate(path: Path, fraction: float) -> Path:
    """Keep the first ``fraction`` of the file's bytes (a copy or a write cut short)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def flip_byte(path: Path, where: float = 0.75) -> Path:
    """Invert one byte at ``where`` (a fraction of the file's length): a bit rot stand-in."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))
    return path
