"""A tqdm progress bar for :func:`magphase.training.fit`, for the CLI (library code never draws bars)."""

from __future__ import annotations

from typing import Any

from magphase.training.engine import ProgressEvent


class TqdmProgress:
    """Callable ``progress`` adapter: a bar over the steps showing loss, lr and samples/s.

    Use as ``with TqdmProgress("autoencoder") as bar: fit(..., progress=bar)``.
    """

    def __init__(self, desc: str = "train", **tqdm_kwargs: Any):
        self.desc = desc
        self.tqdm_kwargs = tqdm_kwargs
        self._bar: Any = None

    def __call__(self, event: ProgressEvent) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=event.total_steps,
                initial=event.step,
                desc=self.desc,
                unit="step",
                dynamic_ncols=True,
                **self.tqdm_kwargs,
            )
        self._bar.update(event.step - self._bar.n)
        if event.logged:
            m = event.metrics
            self._bar.set_postfix(
                loss=f"{m.get('loss', float('nan')):.4g}",
                lr=f"{m.get('lr', 0.0):.2e}",
                sps=f"{m.get('samples_per_s', 0.0):.1f}",
                refresh=False,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["TqdmProgress"]
