"""GroundTruthVolume contract: shapes, dtypes, orientation, slab geometry, facial flags."""

from __future__ import annotations

import numpy as np
import pytest

from magphase.errors import ConfigError
from magphase.simulate.phantom import (
    GroundTruthVolume,
    VolumeSpec,
    pixel_coordinates_mm,
    render_volume,
    slice_positions_mm,
)

pytestmark = pytest.mark.slow  # needs the head model (built once per machine, then cached)


@pytest.mark.parametrize("matrix", [(320, 320), (256, 256), (384, 384), (213, 213)])
def test_shapes_and_dtypes(matrix):
    v = render_volume(VolumeSpec(seed=2, sequence="AXFLAIR", matrix=matrix, n_slices=2, lesions=("Mass",)))
    assert isinstance(v, GroundTruthVolume)
    shape = (2, *matrix)
    assert v.image.shape == shape and v.image.dtype == np.complex64
    assert v.brain_mask.shape == shape and v.brain_mask.dtype == bool
    assert v.head_mask.shape == shape and v.head_mask.dtype == bool
    assert v.b0_hz.shape == shape and v.b0_hz.dtype == np.float32
    assert v.facial.shape == (2,) and v.facial.dtype == bool
    assert np.isfinite(v.image).all() and np.isfinite(v.b0_hz).all()
    assert 0.2 < np.abs(v.image).max() < 1.5  # arbitrary units, max of order 1
    assert v.voxel_size_mm == pytest.approx((5.0, 220.0 / matrix[0], 220.0 / matrix[1]))
    assert v.sequence == "AXFLAIR" and v.field_strength_t == 3.0
    assert v.ti_ms is not None and v.tr_ms > v.ti_ms > v.te_ms


def test_masks_are_nested_and_phase_is_wrapped():
    v = render_volume(VolumeSpec(seed=4, sequence="AXT2", matrix=(128, 128), n_slices=4))
    assert v.brain_mask.any()
    assert (v.brain_mask & ~v.head_mask).sum() <= 0.01 * v.brain_mask.sum()
    assert v.head_mask.mean() > 0.2
    phase = np.angle(v.image[v.head_mask])
    assert phase.min() >= -np.pi and phase.max() <= np.pi
    assert np.abs(np.abs(v.image[~v.head_mask])).max() < 0.5 * np.abs(v.image).max()
    assert v.ti_ms is None and v.flip_deg == 90.0


def test_slices_run_inferior_to_superior_and_pixels_follow_the_stored_convention():
    spec = VolumeSpec(seed=0, sequence="AXT1", n_slices=5, slice_thickness_mm=4.0, slice_gap_mm=2.0)
    z = slice_positions_mm(spec)
    np.testing.assert_allclose(np.diff(z), 6.0)
    y, x = pixel_coordinates_mm((4, 6), (220.0, 220.0))
    assert np.all(np.diff(y) > 0)  # row index -> anterior (top after flipud)
    assert np.all(np.diff(x) < 0)  # column index -> patient's left (RAS x decreasing)


def test_anterior_is_at_the_top_of_the_flipped_image():
    """In low slices the face (orbits, sinuses, nose) is anterior and the posterior fossa
    (cerebellum) posterior: in the radiological view np.flipud(image[s]) the brain's centroid lies
    below the head's centroid and in the lower half of the image."""
    v = render_volume(VolumeSpec(seed=1, sequence="AXT2", matrix=(128, 128), slab_offset_mm=-45.0))
    low = [s for s in range(v.image.shape[0]) if v.facial[s] and v.brain_mask[s].sum() > 50]
    assert low
    for s in low[:3]:
        brain_rows = np.nonzero(np.flipud(v.brain_mask[s]))[0]
        head_rows = np.nonzero(np.flipud(v.head_mask[s]))[0]
        assert brain_rows.mean() > head_rows.mean() + 5
        assert brain_rows.mean() > v.image.shape[1] / 2
    # Mid-brain slice: the head is longer front-to-back (rows) than wide (columns).
    mid = np.flipud(v.head_mask[12])
    assert np.ptp(np.nonzero(mid.any(axis=1))[0]) > np.ptp(np.nonzero(mid.any(axis=0))[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_facial_flags_only_for_low_slabs(seed):
    normal = render_volume(VolumeSpec(seed=seed, sequence="AXT1", matrix=(96, 96)))
    assert not normal.facial.any()
    low = render_volume(VolumeSpec(seed=seed, sequence="AXT1", matrix=(96, 96), slab_offset_mm=-45.0))
    assert low.facial.any()
    assert not low.facial[-1]  # the top of a low slab is brain, not face
    # Flags mark a contiguous block of the lowest slices.
    flagged = np.nonzero(low.facial)[0]
    assert flagged[0] == 0 and np.all(np.diff(flagged) == 1)


def test_external_protocols_and_field_strengths():
    for sequence in ("T1TSE", "T2TIRM"):
        v = render_volume(
            VolumeSpec(seed=8, sequence=sequence, field_strength_t=1.5, matrix=(64, 64), n_slices=2)
        )
        assert v.field_strength_t == 1.5 and v.sequence == sequence
        assert (v.ti_ms is not None) == (sequence == "T2TIRM")


def test_acquisition_overrides_reach_the_header_fields():
    v = render_volume(
        VolumeSpec(
            seed=3, sequence="AXT2", matrix=(64, 64), n_slices=2, tr_ms=6000.0, te_ms=110.0, flip_deg=150.0
        )
    )
    assert (v.tr_ms, v.te_ms, v.flip_deg) == (6000.0, 110.0, 150.0)


def test_phase_differs_between_field_strengths_and_sequences():
    a = render_volume(VolumeSpec(seed=7, sequence="AXT2", matrix=(64, 64), n_slices=2))
    b = render_volume(VolumeSpec(seed=7, sequence="AXT2", field_strength_t=1.5, matrix=(64, 64), n_slices=2))
    c = render_volume(VolumeSpec(seed=7, sequence="AXFLAIR", matrix=(64, 64), n_slices=2))
    np.testing.assert_allclose(b.b0_hz, a.b0_hz / 2, atol=0.05 * np.abs(a.b0_hz).max())  # same subject
    for other in (b, c):
        both = a.brain_mask & other.brain_mask
        assert np.abs(np.angle(a.image[both] * np.conj(other.image[both]))).mean() > 0.05


@pytest.mark.parametrize(
    "bad",
    [
        {"sequence": "AXT3"},
        {"field_strength_t": 7.0},
        {"matrix": (8, 8)},
        {"n_slices": 0},
        {"lesions": ("Glioma",)},
    ],
)
def test_invalid_specs_raise_config_error(bad):
    with pytest.raises(ConfigError):
        render_volume(VolumeSpec(**{"seed": 0, "sequence": "AXT1", **bad}))
