"""The companion findings of the catalogue as the phantom renders them: where they lie, what they change,
under which label they are boxed."""

from __future__ import annotations

import numpy as np
import pytest

from magphase.simulate.lesions import LESION_LABELS
from magphase.simulate.phantom import VolumeSpec, render_volume

MATRIX = (160, 160)


def _render(sequence: str, lesions: tuple[str, ...], radii: tuple[float, ...] = (), seed: int = 11, **kw):
    spec = VolumeSpec(
        seed=seed,
        sequence=sequence,
        matrix=MATRIX,
        n_slices=8,
        lesions=lesions,
        lesion_radii_mm=radii,
        lesion_slices=(4,) * len(lesions) if radii else (),
        **kw,
    )
    return render_volume(spec)


def _masks(truth, label: str) -> np.ndarray:
    found = [lesion.mask for lesion in truth.lesions if lesion.label == label]
    assert found, f"no {label!r} in {[lesion.label for lesion in truth.lesions]}"
    return np.any(np.stack(found), axis=0)


def test_every_catalogue_label_is_a_lesion_label():
    from magphase.simulate.findings import CATALOGUE_LABELS

    assert set(CATALOGUE_LABELS) <= set(LESION_LABELS)


def test_edema_is_boxed_around_its_mass_not_as_a_lesion_of_its_own():
    truth = _render("AXFLAIR", ("Mass", "Edema"), (12.0, 24.0))
    assert [lesion.label for lesion in truth.lesions] == ["Mass", "Edema"]
    mass, edema = _masks(truth, "Mass"), _masks(truth, "Edema")
    assert edema.sum() > mass.sum() > 0
    # The edema is the shell outside the tumour (they share only partial-volume border voxels).
    assert (mass & edema).sum() < 0.35 * mass.sum() and (edema & ~mass).sum() > mass.sum()
    zs, ys, xs = np.nonzero(mass)
    ze, ye, xe = np.nonzero(edema)
    centre = np.array([ys.mean(), xs.mean()])
    assert np.linalg.norm(np.array([ye.mean(), xe.mean()]) - centre) < 6  # centred on the mass
    # Without a host in the volume the edema is a lesion of its own.
    alone = _render("AXFLAIR", ("Edema",), (15.0,))
    assert [lesion.label for lesion in alone.lesions] == ["Edema"] and _masks(alone, "Edema").any()


def test_flair_edema_is_brighter_than_the_white_matter_it_replaces():
    truth = _render("AXFLAIR", ("Mass", "Edema"), (12.0, 24.0))
    plain = _render("AXFLAIR", ())
    edema = _masks(truth, "Edema")
    assert np.abs(truth.image)[edema].mean() > 1.1 * np.abs(plain.image)[edema].mean()


@pytest.mark.parametrize("label", ["Craniotomy", "Dural thickening"])
def test_findings_along_the_skull_leave_the_brain_alone(label: str):
    truth = _render("AXT1", (label,), (25.0,))
    plain = _render("AXT1", ())
    mask = _masks(truth, label)
    assert mask.sum() > 50
    changed = np.abs(np.abs(truth.image) - np.abs(plain.image)) > 1e-3
    assert changed.any()
    brain = plain.brain_mask & truth.brain_mask
    # Within the brain proper (away from its edge) nothing changes; the finding is outside the brain.
    from scipy import ndimage as ndi

    core = ndi.binary_erosion(brain, iterations=3)
    assert not (changed & core).any()
    assert (mask & core).sum() == 0


def test_craniotomy_replaces_the_marrow_fat_and_opens_the_skull():
    truth = _render("AXT1", ("Craniotomy",), (28.0,), seed=12)
    plain = _render("AXT1", (), seed=12)
    mask = _masks(truth, "Craniotomy")
    # Bright T1 marrow (fat) of the flap becomes intermediate fibrous tissue: its brightest pixels drop.
    assert np.percentile(np.abs(truth.image)[mask], 95) < np.percentile(np.abs(plain.image)[mask], 95)


def test_enlarged_ventricles_hold_more_csf():
    big = _render("AXT2", ("Enlarged ventricles",), (30.0,), seed=13)
    plain = _render("AXT2", (), seed=13)
    mask = _masks(big, "Enlarged ventricles")
    # T2: CSF is the brightest tissue; the annotated ventricles are bright and larger than the
    # same subject's ventricle region without the finding.
    thr = 0.6 * np.abs(plain.image).max()
    zs, ys, xs = np.nonzero(mask)
    box = (slice(zs.min(), zs.max() + 1), slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    bright_big = (np.abs(big.image[box]) > thr).sum()
    bright_plain = (np.abs(plain.image[box]) > thr).sum()
    # The smallest expansion (x1.45 in volume) is about x1.28 in the area of each slice; the box also
    # holds sulcal CSF and bright texture that the finding leaves unchanged.
    assert bright_big > 1.2 * bright_plain
    assert np.abs(big.image)[mask].mean() > thr


def test_resection_cavity_is_csf_and_its_posttreatment_change_is_its_wall():
    flair = _render("AXFLAIR", ("Resection cavity", "Posttreatment change"), (12.0, 14.0), seed=14)
    t2 = _render("AXT2", ("Resection cavity", "Posttreatment change"), (12.0, 14.0), seed=14)
    assert [lesion.label for lesion in flair.lesions] == ["Resection cavity", "Posttreatment change"]
    cavity, wall = _masks(flair, "Resection cavity"), _masks(flair, "Posttreatment change")
    assert cavity.sum() > 0 and wall.sum() > 0 and (cavity & wall).sum() < 0.1 * cavity.sum()
    wm_like = np.median(np.abs(flair.image)[flair.brain_mask])
    assert np.abs(flair.image)[cavity].mean() < wm_like  # suppressed fluid on FLAIR
    assert np.abs(t2.image)[cavity].mean() > np.median(np.abs(t2.image)[t2.brain_mask])  # bright on T2


def test_titanium_fixation_brings_a_strong_local_field():
    from magphase.simulate.lesions import TITANIUM_DELTA_CHI_PPM

    for seed in range(20, 40):
        truth = _render("AXFLAIR", ("Craniotomy",), (28.0,), seed=seed)
        if any(lesion.susceptibility for lesion in truth.lesions):
            break
    else:
        pytest.fail("no craniotomy with fixation in 20 draws (P_FIXATION = 0.6)")
    plain = _render("AXFLAIR", (), seed=seed)
    extra = np.abs(truth.b0_hz - plain.b0_hz)
    assert TITANIUM_DELTA_CHI_PPM > 100 and extra.max() > 50.0  # Hz, near the screws
