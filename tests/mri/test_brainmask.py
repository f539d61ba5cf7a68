"""Magnitude brain mask: agreement with known masks, skull/scalp stripped, empty slices."""

import sys
from pathlib import Path

import numpy as np
import pytest

from magphase.mri.brainmask import (
    BrainMaskParams,
    _closing,
    _dilate,
    _erode,
    _fill_holes,
    brain_mask,
    brain_mask_slice,
    dice,
    otsu_threshold,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from prepare_fixtures import head_phantom  # noqa: E402


def test_dice():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    assert dice(a, b) == 1.0
    a[:5] = True
    b[:5, :5] = True
    assert dice(a, b) == pytest.approx(2 * 25 / 75)


@pytest.mark.parametrize("radius", [1.0, 2.5, 6.0, 9.3])
def test_distance_transform_morphology_matches_disc_structuring_element(rng, radius):
    from scipy import ndimage

    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = yy**2 + xx**2 <= radius**2 + 1e-9
    mask = ndimage.gaussian_filter(rng.random((60, 50)), 2) > 0.5
    mask[0, :] = True  # objects touching the border: outside counts as background
    np.testing.assert_array_equal(_erode(mask, radius), ndimage.binary_erosion(mask, disc))
    np.testing.assert_array_equal(_dilate(mask, radius), ndimage.binary_dilation(mask, disc))
    pad = r + 1
    closed = ndimage.binary_closing(np.pad(mask, pad), disc)[pad:-pad, pad:-pad]
    np.testing.assert_array_equal(_closing(mask, radius), closed)


def test_fill_holes_matches_scipy(rng):
    from scipy import ndimage

    for _ in range(5):
        mask = ndimage.gaussian_filter(rng.random((70, 60)), 1.5) > 0.48
        np.testing.assert_array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_otsu_matches_skimage(rng):
    from skimage.filters import threshold_otsu

    values = np.concatenate([rng.normal(0.1, 0.03, 5000), rng.normal(0.6, 0.1, 3000)])
    assert otsu_threshold(values) == pytest.approx(threshold_otsu(values, nbins=256), abs=0.01)


def test_mask_matches_phantom_brain_and_strips_the_scalp(rng):
    images, truth, _ = head_phantom(rng, n_slices=4, shape=(192, 192))
    noisy = images + 0.01 * (rng.standard_normal(images.shape) + 1j * rng.standard_normal(images.shape))
    masks = brain_mask(np.abs(noisy))
    assert masks.shape == truth.shape and masks.dtype == bool
    for s in range(4):
        assert dice(masks[s], truth[s]) >= 0.9
        # Conservative: (almost) nothing outside the true brain, in particular no scalp.
        assert (masks[s] & ~truth[s]).sum() <= 0.01 * masks[s].sum()
    # The skull and scalp ring is bright in magnitude yet never in the mask.
    scalp = (np.abs(images[1]) > 0.7) & ~truth[1]
    assert scalp.any() and not (masks[1] & scalp).any()


def test_mask_scales_with_image_size(rng):
    images, truth, _ = head_phantom(rng, n_slices=1, shape=(320, 320))
    assert dice(brain_mask_slice(np.abs(images[0])), truth[0]) >= 0.9


def test_empty_and_noise_slices_have_no_brain(rng):
    assert not brain_mask_slice(np.zeros((64, 64))).any()
    noise = np.abs(rng.standard_normal((128, 128)) + 1j * rng.standard_normal((128, 128)))
    assert not brain_mask_slice(noise, BrainMaskParams()).any()
    with pytest.raises(ValueError):
        brain_mask(np.zeros((4, 4)))
