"""Matplotlib plumbing shared by every figure: a headless pyplot, atomic PNG writes, and the display
conventions for complex images (magnitude in grey from 0, phase in the cyclic 'twilight' colormap on
[-pi, pi], so a wrap from +pi to -pi shows no false edge).

matplotlib is imported lazily: importing a module that draws figures must not cost the import (or pick a
GUI backend) when no figure is drawn.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magphase.utils.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar
    from matplotlib.figure import Figure, SubFigure
    from matplotlib.image import AxesImage

MAGNITUDE_CMAP = "gray"
PHASE_CMAP = "twilight"
PHASE_RANGE: tuple[float, float] = (-np.pi, np.pi)
PHASE_TICKS: tuple[float, float, float] = (-np.pi, 0.0, np.pi)
PHASE_TICK_LABELS: tuple[str, str, str] = ("-π", "0", "π")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig: Figure,
    path: str | Path,
    *,
    dpi: float = 110,
    close: bool = True,
    palette: bool = False,
    **savefig: Any,
) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file + ``os.replace``) and close it; returns the path.

    The format follows ``path``'s suffix (PNG by default). ``savefig`` keywords (``bbox_inches``, ...) pass
    through. ``close`` releases a pyplot-managed figure; a bare :class:`~matplotlib.figure.Figure` needs
    no closing, and pyplot is not imported for it. ``palette`` stores a PNG with 256 colours (median cut,
    no dithering: about 2.5x smaller, for figures kept in ``docs/``).
    """
    path = Path(path)
    savefig.setdefault("format", path.suffix.lstrip(".").lower() or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, **savefig)
        if palette and savefig["format"] == "png":
            from PIL import Image

            with Image.open(tmp) as image:
                rgb = image.convert("RGB")
            rgb.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                tmp, format="png", optimize=True
            )
    plt = sys.modules.get("matplotlib.pyplot")
    if close and plt is not None:
        plt.close(fig)
    return path


def show_magnitude(ax: Axes, magnitude: np.ndarray, vmax: float | None = None, **imshow: Any) -> AxesImage:
    """Magnitude in grey on ``[0, vmax]`` (``vmax`` None: the image maximum)."""
    return ax.imshow(magnitude, cmap=MAGNITUDE_CMAP, vmin=0.0, vmax=vmax, **imshow)


def show_phase(ax: Axes, phase: np.ndarray, **imshow: Any) -> AxesImage:
    """Phase (radians) in the cyclic 'twilight' colormap on the fixed range ``[-pi, pi]``."""
    return ax.imshow(phase, cmap=PHASE_CMAP, vmin=PHASE_RANGE[0], vmax=PHASE_RANGE[1], **imshow)


def phase_colorbar(fig: Figure | SubFigure, image: AxesImage, **colorbar: Any) -> Colorbar:
    """A colorbar for a phase image with ticks at -pi, 0, pi labelled with the symbol."""
    cb = fig.colorbar(image, **colorbar)
    cb.set_ticks(list(PHASE_TICKS), labels=list(PHASE_TICK_LABELS))
    return cb


__all__ = [
    "MAGNITUDE_CMAP",
    "PHASE_CMAP",
    "PHASE_RANGE",
    "phase_colorbar",
    "pyplot",
    "save_figure",
    "show_magnitude",
    "show_phase",
]
