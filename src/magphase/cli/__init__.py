"""The ``magphase`` command. Each stage registers its subcommands from its own module.

Library code logs; only this package prints and draws progress bars.
"""

from __future__ import annotations

import errno
import logging
import os
import signal

import typer

from magphase import __version__
from magphase.cli._app import app, evaluate_app
from magphase.errors import MagphaseError


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"magphase {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


# Subcommand modules register themselves on import (order = order in --help, so not sorted).
# isort: off
from magphase.cli import (  # noqa: E402,F401
    io_cmds,
    labels_cmds,
    simulate_cmds,
    prepare_cmds,
    autoencoder_cmds,
    flow_cmds,
    phasegen_cmds,
    evaluate_cmds,
    run_cmds,
)
# isort: on


_main_pid = os.getpid()


class _Interrupted(BaseException):
    """SIGTERM or SIGINT arrived. Not a KeyboardInterrupt, which click would turn into its own exit;
    a BaseException, so that every writer's cleanup (``except BaseException``, ``finally``) runs."""


def _os_error_line(exc: OSError) -> str:
    """``PATH: reason`` of an operating-system error (what failed, where), on one line."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason += " (free space, or point the output elsewhere, then rerun the same command to resume)"
    where = exc.filename if exc.filename is not None else "<unknown path>"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {reason}"


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler's, ``kill``'s) or SIGINT (Ctrl-C) unwinds the stack: writers remove temp files."""
    if os.getpid() != _main_pid:  # a forked worker (DataLoader, pool): dies quietly, the parent reports
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise _Interrupted(signal.Signals(signum).name)


def main() -> None:
    """Console entry point: run the app, turning documented errors into a one-line message.

    Ctrl-C and SIGTERM stop the command with exit code 130 (143 for SIGTERM) and one line saying that
    the finished work is kept: rerunning the same command resumes (``docs/reliability.md``).
    """
    global _main_pid
    _main_pid = os.getpid()
    try:
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        previous = {}
    try:
        app()
    except MagphaseError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from exc
    except OSError as exc:  # the environment: disk full, no permission, a path that cannot be made
        logging.getLogger(__name__).debug("operating-system error", exc_info=True)
        typer.secho(f"error: {_os_error_line(exc)}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from exc
    except (_Interrupted, KeyboardInterrupt) as exc:
        name = str(exc) if isinstance(exc, _Interrupted) else "SIGINT"
        typer.secho(
            f"interrupted ({name}): finished work is kept and partial files were removed; rerun the same "
            "command to resume",
            err=True,
            fg=typer.colors.YELLOW,
        )
        raise SystemExit(143 if name == "SIGTERM" else 130) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["app", "evaluate_app", "main"]
