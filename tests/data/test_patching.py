"""Patch rules of paper 2.1.3 and the external grid of 2.1.4, checked against brute force."""

import numpy as np
import pytest

from magphase.data.patching import (
    PatchSpec,
    PixelBox,
    allocate_proportional,
    box_coverage,
    centre_grid_positions,
    extract_patches,
    grid_starts,
    plan_box_patches,
    plan_random_patches,
    touches_any_box,
    valid_positions,
    window_fraction,
)


def test_window_fraction_matches_brute_force(rng):
    mask = rng.random((23, 19)) > 0.4
    size = 7
    got = window_fraction(mask, size)
    assert got.shape == (17, 13)
    for r in range(17):
        for c in range(13):
            assert got[r, c] == pytest.approx(mask[r : r + size, c : c + size].mean())


def test_brain_fraction_threshold_is_inclusive_at_80_percent():
    size = 10
    mask = np.zeros((1, 10, 10), bool)
    mask[0, :8] = True  # exactly 80 %
    assert valid_positions(mask, size, 0.8)[0, 0, 0]
    mask[0, 7, 0] = False  # 79 %
    assert not valid_positions(mask, size, 0.8)[0, 0, 0]


def test_box_coverage_matches_brute_force():
    h, w, size = 30, 25, 8
    box = PixelBox(0, 10, 14, 3, 9)
    got = box_coverage(box, (h, w), size)
    box_img = np.zeros((h, w), bool)
    box_img[10:14, 3:9] = True
    for r in range(h - size + 1):
        for c in range(w - size + 1):
            expect = box_img[r : r + size, c : c + size].sum() / box_img.sum()
            assert got[r, c] == pytest.approx(expect)


def test_allocate_proportional_sums_and_respects_capacity():
    np.testing.assert_array_equal(allocate_proportional([4, 1], 10), [8, 2])
    got = allocate_proportional([1, 1, 1], 10)
    assert got.sum() == 10 and got.max() - got.min() <= 1
    capped = allocate_proportional([9, 1], 10, capacity=[3, 100])
    np.testing.assert_array_equal(capped, [3, 7])
    assert allocate_proportional([1, 1], 10, capacity=[2, 3]).sum() == 5


def _brain(shape=(3, 160, 160)):
    s, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.45 * h) ** 2
    return np.repeat(disc[None], s, axis=0)


def test_box_patches_follow_the_rules_and_are_area_proportional(rng):
    size = 32
    masks = _brain()
    valid = valid_positions(masks, size, 0.8)
    big = PixelBox(1, 70, 90, 60, 80, "Mass")  # area 400
    small = PixelBox(1, 50, 60, 90, 100, "Lacunar infarct")  # area 100
    plans = plan_box_patches(valid, [big, small], 10, rng, size=size, min_box_overlap=0.25)
    assert len(plans) == 10
    assert sum(p.box_id == 0 for p in plans) == 8 and sum(p.box_id == 1 for p in plans) == 2
    assert len({(p.slice, p.row, p.col) for p in plans}) == 10
    for p in plans:
        box = (big, small)[p.box_id]
        cov = box_coverage(box, masks.shape[1:], size)[p.row, p.col]
        assert cov >= 0.25 and p.box_overlap == pytest.approx(cov)
        assert masks[p.slice, p.row : p.row + size, p.col : p.col + size].mean() >= 0.8
        assert p.slice == box.slice and p.label == "abnormal"
    # "randomly shifted": the box lands at different places inside the patches.
    offsets = {(big.row0 - p.row, big.col0 - p.col) for p in plans if p.box_id == 0}
    assert len(offsets) == 8


def test_box_patches_skip_boxes_outside_the_brain(rng):
    size = 32
    masks = _brain()
    valid = valid_positions(masks, size, 0.8)
    outside = PixelBox(0, 0, 6, 0, 6)  # in the corner: no patch there is 80 % brain
    inside = PixelBox(0, 75, 85, 75, 85)
    plans = plan_box_patches(valid, [outside, inside], 6, rng, size=size)
    assert len(plans) == 6 and all(p.box_id == 1 for p in plans)


def test_patch_plans_are_deterministic_per_seed():
    masks = _brain()
    valid = valid_positions(masks, 32, 0.8)
    a = plan_random_patches(valid, 12, "normal", np.random.default_rng(5))
    b = plan_random_patches(valid, 12, "normal", np.random.default_rng(5))
    c = plan_random_patches(valid, 12, "normal", np.random.default_rng(6))
    assert a == b and a != c
    assert len(a) == 12 and {p.slice for p in a} <= {0, 1, 2}


def test_normal_patches_of_abnormal_volumes_touch_no_box(rng):
    size = 32
    masks = _brain()
    valid = valid_positions(masks, size, 0.8)
    boxes = [PixelBox(1, 60, 70, 60, 70), PixelBox(1, 90, 100, 40, 60)]
    near = touches_any_box(boxes, masks.shape, size, slice_margin=1)
    plans = plan_random_patches(valid, 40, "normal", rng, exclude=near)
    assert len(plans) == 40
    for p in plans:
        for b in boxes:
            rows = range(p.row, p.row + size)
            cols = range(p.col, p.col + size)
            overlaps = set(rows) & set(range(b.row0, b.row1)) and set(cols) & set(range(b.col0, b.col1))
            assert not (overlaps and abs(p.slice - b.slice) <= 1)


def test_random_patches_cap_at_available_positions():
    mask = np.zeros((2, 40, 40), bool)
    mask[0, :33, :33] = True  # 2 x 2 positions with a 32-patch fully inside
    valid = valid_positions(mask, 32, 1.0)
    assert valid.sum() == 4
    assert len(plan_random_patches(valid, 10, "unlabeled", np.random.default_rng(0))) == 4


def test_extract_patches_channels_are_real_and_imag(rng):
    vol = (rng.standard_normal((2, 50, 40)) + 1j * rng.standard_normal((2, 50, 40))).astype(np.complex64)
    plans = [PatchSpec(1, 3, 5, "normal"), PatchSpec(0, 10, 0, "abnormal")]
    out = extract_patches(vol, plans, size=16)
    assert out.shape == (2, 2, 16, 16) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], vol[1, 3:19, 5:21].real)
    np.testing.assert_array_equal(out[1, 1], vol[0, 10:26, 0:16].imag)


def test_external_grid_geometry():
    # 4 x 4 grid, stride 75, 96-pixel patches on 320: 225 + 96 = 321 overruns by one pixel -> 224.
    assert grid_starts(320, 96, 75, 4) == [0, 75, 150, 224]
    centre = centre_grid_positions((320, 320), 96, 75, 4, 2)
    assert centre == [(75, 75), (75, 150), (150, 75), (150, 150)]
    covered = np.zeros((320, 320), int)
    for r, c in centre:
        assert 0 <= r and r + 96 <= 320 and 0 <= c and c + 96 <= 320
        covered[r : r + 96, c : c + 96] += 1
    rows = np.flatnonzero(covered.any(axis=1))
    assert rows[0] == 75 and rows[-1] == 245  # the centre 171 x 171 pixels, overlap 21 px
    assert covered.max() == 4
    with pytest.raises(ValueError):
        grid_starts(90, 96)
