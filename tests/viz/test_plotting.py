"""Shared figure plumbing: atomic PNG writes, figures closed, phase/magnitude display conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from magphase.viz.plotting import phase_colorbar, pyplot, save_figure, show_magnitude, show_phase


def test_pyplot_is_headless() -> None:
    import matplotlib

    pyplot()
    assert matplotlib.get_backend().lower() == "agg"


def test_save_figure_writes_png_atomically_and_closes(tmp_path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    target = tmp_path / "sub" / "fig.png"
    assert save_figure(fig, target) == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in target.parent.iterdir()] == ["fig.png"]  # no temp file left
    assert not plt.fignum_exists(fig.number)


def test_save_figure_palette_keeps_the_picture_in_256_colours(tmp_path: Path) -> None:
    from PIL import Image

    plt = pyplot()
    images = []
    for palette in (False, True):
        fig, ax = plt.subplots()
        ax.imshow(np.linspace(-np.pi, np.pi, 64 * 64).reshape(64, 64), cmap="twilight")
        target = save_figure(fig, tmp_path / f"fig{palette}.png", palette=palette)
        with Image.open(target) as image:
            images.append((image.mode, np.asarray(image.convert("RGB"), np.float64)))
    (mode_full, full), (mode_palette, small) = images
    assert mode_palette == "P" and mode_full != "P"
    assert np.abs(full - small).mean() < 2.0  # grey levels out of 255
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figFalse.png", "figTrue.png"]


def test_save_figure_format_follows_suffix_and_can_keep_figure_open(tmp_path: Path) -> None:
    plt = pyplot()
    fig = plt.figure()
    target = save_figure(fig, tmp_path / "fig.svg", close=False)
    assert b"<svg" in target.read_bytes()[:500]
    assert plt.fignum_exists(fig.number)
    plt.close(fig)


def test_save_figure_failure_keeps_old_file(tmp_path: Path) -> None:
    plt = pyplot()
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    fig = plt.figure()
    with pytest.raises(ValueError):
        save_figure(fig, target, format="no-such-format")
    plt.close(fig)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_bare_figure_needs_no_pyplot(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1])
    assert save_figure(fig, tmp_path / "bare.png").stat().st_size > 0


def test_phase_and_magnitude_display_conventions() -> None:
    plt = pyplot()
    fig, (ax_m, ax_p) = plt.subplots(1, 2)
    rng = np.random.default_rng(0)
    mag_im = show_magnitude(ax_m, rng.random((4, 4)), vmax=0.5, interpolation="nearest")
    phase_im = show_phase(ax_p, rng.uniform(-np.pi, np.pi, (4, 4)))
    assert mag_im.get_cmap().name == "gray" and mag_im.get_clim() == (0.0, 0.5)
    assert mag_im.get_interpolation() == "nearest"
    assert phase_im.get_cmap().name == "twilight"  # cyclic: +pi and -pi look the same
    assert phase_im.get_clim() == pytest.approx((-np.pi, np.pi))
    cb = phase_colorbar(fig, phase_im, ax=ax_p)
    np.testing.assert_allclose(cb.get_ticks(), [-np.pi, 0.0, np.pi])
    assert [t.get_text() for t in cb.ax.get_yticklabels()] == ["-π", "0", "π"]
    plt.close(fig)
