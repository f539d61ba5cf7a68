"""Progress bars for long library calls that report through ``on_start(total)`` / per-item callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm


@contextmanager
def item_bar(
    desc: str, unit: str, postfix: Callable[[Any], Mapping[str, Any] | None] | None = None
) -> Iterator[tuple[Callable[[int], None], Callable[..., None]]]:
    """Yield ``(on_start, on_item)`` for a job with a known number of items; the bar closes on exit.

    ``on_start(total)`` opens the bar (the job knows its total only once it has planned). ``on_item(x)``
    advances it by one, showing ``postfix(x)`` when given. Before ``on_start`` ``on_item`` does nothing.
    """
    bar: tqdm | None = None

    def on_start(total: int) -> None:
        nonlocal bar
        bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)

    def on_item(item: Any = None, *_: Any) -> None:
        if bar is None:
            return
        shown = postfix(item) if postfix is not None else None
        if shown:
            bar.set_postfix(shown, refresh=False)
        bar.update(1)

    try:
        yield on_start, on_item
    finally:
        if bar is not None:
            bar.close()


def stage_bars() -> tuple[Callable[[str, int | None], Callable[..., None]], list[tqdm]]:
    """A progress factory for stage functions plus the list of bars it opened (closed by the caller)."""
    opened: list[tqdm] = []

    def factory(desc: str, total: int | None) -> Callable[..., None]:
        bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        opened.append(bar)

        def update(n: int = 1, *_: Any) -> None:
            bar.update(n if isinstance(n, int) else 1)

        return update

    return factory, opened


def run_one_stage(cfg: Any, run_dir: Any, stage: str) -> dict[str, Any]:
    """Run one pipeline stage (the same function ``magphase run`` calls) with progress bars."""
    from magphase.run import run_stage

    factory, opened = stage_bars()
    try:
        return run_stage(cfg, run_dir, stage, progress=factory)
    finally:
        for bar in opened:
            bar.close()
