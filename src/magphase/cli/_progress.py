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
