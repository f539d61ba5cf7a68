"""Physics of the simulator: dipole field, phase, signal equations, lesion susceptibility."""

from __future__ import annotations

import numpy as np
import pytest

from magphase.simulate import lesions as lesions_module
from magphase.simulate.contrast import (
    ALL_SIMULATED_SEQUENCES,
    csf_null_inversion_time_ms,
    default_protocol,
    protocol_is_t1_weighted,
    signal,
    tissue_signal,
)
from magphase.simulate.susceptibility import (
    dipole_kernel_rfft,
    field_from_susceptibility,
    phase_from_field,
    ppm_to_hz,
    remove_shim_terms,
    sphere_field_ppm,
    transceive_phase_from_conductivity,
    wrap_phase,
)
from magphase.simulate.tissue import GAMMA_BAR_MHZ_PER_T, MU0_H_PER_M, relaxation


def _supersampled_sphere(n: int, radius: float, sub: int = 4) -> np.ndarray:
    """Volume fraction of a sphere of `radius` voxels centred in an n^3 grid (z, y, x)."""
    c = np.arange(n) - n / 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    frac = np.zeros((n, n, n), np.float32)
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                frac += ((z + dz) ** 2 + (y + dy) ** 2 + (x + dx) ** 2) <= radius**2
    return frac / sub**3


def test_sphere_field_matches_analytic_dipole():
    n, a, chi = 80, 7.0, 0.8
    fld = field_from_susceptibility(_supersampled_sphere(n, a) * chi, (1.0, 1.0, 1.0), pad_factor=2.0)
    c = n // 2
    coords = np.stack(np.meshgrid(*(np.arange(n) - n / 2,) * 3, indexing="ij"), axis=-1)
    ref = sphere_field_ppm(coords, np.zeros(3), a, chi)
    # Radial profiles outside the sphere along B0 (theta = 0), across it (90 deg) and at 45 deg.
    for r in (11, 14, 18, 24):
        along = fld[c + r, c, c]
        across = fld[c, c, c + r]
        d = int(round(r / np.sqrt(2)))
        diagonal = fld[c + d, c, c + d]
        assert along == pytest.approx(chi / 3 * a**3 / r**3 * 2, rel=0.03)
        assert across == pytest.approx(-chi / 3 * a**3 / r**3, rel=0.03)
        assert diagonal == pytest.approx(ref[c + d, c, c + d], rel=0.05)
    # Lorentz-corrected convention: no field inside a uniformly magnetised sphere.
    inside = fld[c - 3 : c + 4, c - 3 : c + 4, c - 3 : c + 4]
    assert np.abs(inside).max() < 0.01 * chi


def test_dipole_kernel_conventions():
    kernel = dipole_kernel_rfft((8, 8, 8), (1.0, 1.0, 1.0))
    assert kernel[0, 0, 0] == 0.0
    assert kernel[1, 0, 0] == pytest.approx(1 / 3 - 1.0)  # k along B0 (axis 0)
    assert kernel[0, 1, 0] == pytest.approx(1 / 3)  # k perpendicular to B0
    assert kernel.min() >= -2 / 3 - 1e-6 and kernel.max() <= 1 / 3 + 1e-6


def test_field_is_linear_in_susceptibility(rng):
    chi = rng.normal(size=(16, 18, 20)).astype(np.float32)
    f1 = field_from_susceptibility(chi, (2.0, 2.0, 2.0))
    f2 = field_from_susceptibility(2.5 * chi, (2.0, 2.0, 2.0))
    np.testing.assert_allclose(f2, 2.5 * f1, rtol=1e-4, atol=1e-6)


def test_phase_scales_linearly_with_time_and_has_documented_sign(rng):
    b0_hz = rng.normal(0, 40.0, size=(5, 6)).astype(np.float32)
    p1 = phase_from_field(b0_hz, 5.0)
    p2 = phase_from_field(b0_hz, 10.0)
    p3 = phase_from_field(b0_hz, 15.0)
    np.testing.assert_allclose(p2, 2 * p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p3, 3 * p1, rtol=1e-5, atol=1e-6)
    # phi = -2 pi df t: +10 Hz over 25 ms is -pi/2.
    assert float(phase_from_field(np.float32(10.0), 25.0)) == pytest.approx(-np.pi / 2, rel=1e-5)
    wrapped = wrap_phase(p3)
    assert wrapped.min() >= -np.pi and wrapped.max() < np.pi
    np.testing.assert_allclose(np.exp(1j * wrapped), np.exp(1j * p3), atol=1e-4)


def test_ppm_to_hz_uses_gamma_bar():
    assert float(ppm_to_hz(np.float32(1.0), 3.0)) == pytest.approx(GAMMA_BAR_MHZ_PER_T * 3.0, rel=1e-6)


def test_shim_removes_second_order_polynomial(rng):
    gz, gy, gx = (np.linspace(-50, 50, n) for n in (11, 13, 15))
    z, y, x = np.meshgrid(gz, gy, gx, indexing="ij")
    poly = 0.3 + 0.01 * z - 0.02 * x + 1e-4 * y * x + 2e-4 * z**2
    bump = np.exp(-((z - 10) ** 2 + y**2 + x**2) / 50.0)
    shimmed, _ = remove_shim_terms(
        (poly + bump).astype(np.float32), np.ones(z.shape, bool), (gz, gy, gx), 2, 1
    )
    assert np.abs(shimmed - (bump - bump.mean())).max() < 0.2  # the local bump survives the shim
    shimmed_poly, _ = remove_shim_terms(poly.astype(np.float32), np.ones(z.shape, bool), (gz, gy, gx), 2, 1)
    assert np.abs(shimmed_poly).max() < 1e-4


@pytest.mark.parametrize("field_strength", [1.5, 3.0])
@pytest.mark.parametrize("sequence", ["AXFLAIR", "T2TIRM"])
def test_inversion_recovery_nulls_csf(sequence, field_strength):
    protocol = default_protocol(sequence, field_strength)
    assert protocol.ti_ms is not None
    csf = abs(tissue_signal(protocol, "csf"))
    wm = tissue_signal(protocol, "wm")
    gm = tissue_signal(protocol, "gm")
    assert csf < 0.05 * wm
    assert gm > wm > csf  # FLAIR: grey slightly brighter than white, fluid dark
    assert tissue_signal(protocol, "edema") > 1.5 * wm  # vasogenic edema is FLAIR bright


def test_null_inversion_time_formula_zeroes_the_signal():
    for t1 in (800.0, 2000.0, 4300.0):
        for tr in (5000.0, 9000.0):
            ti = csf_null_inversion_time_ms(t1, tr)
            protocol = default_protocol("AXFLAIR", 3.0, tr_ms=tr, ti_ms=ti)
            assert abs(float(signal(protocol, 1.0, t1, 100.0))) < 1e-9


@pytest.mark.parametrize("field_strength", [1.5, 3.0])
@pytest.mark.parametrize("sequence", ["AXT1", "AXT1PRE", "AXT1POST", "T1TSE"])
def test_t1_weighted_ordering(sequence, field_strength):
    p = default_protocol(sequence, field_strength)
    wm, gm, csf, fat = (tissue_signal(p, t) for t in ("wm", "gm", "csf", "fat"))
    assert fat > wm > gm > csf
    for lesion in ("edema", "wm_lesion", "gliosis", "necrosis", "cyst"):  # T1-hypointense vs WM
        assert tissue_signal(p, lesion) < wm


@pytest.mark.parametrize("field_strength", [1.5, 3.0])
@pytest.mark.parametrize("sequence", ["AXT1", "AXT1PRE", "AXT1POST", "T1TSE"])
def test_t1_visible_lesion_subtype_is_darker_than_cortex(sequence, field_strength):
    # the radiological definition of a T1 "black hole": hypointense to cortical grey matter
    p = default_protocol(sequence, field_strength)
    assert protocol_is_t1_weighted(p)
    assert tissue_signal(p, lesions_module.T1_VISIBLE_SUBTYPE) < tissue_signal(p, "gm")
    # ... while on T2 / FLAIR it is bright like the other white matter lesions
    for other in ("AXT2", "AXFLAIR"):
        q = default_protocol(other, field_strength)
        assert not protocol_is_t1_weighted(q)
        assert tissue_signal(q, lesions_module.T1_VISIBLE_SUBTYPE) > tissue_signal(q, "gm")


@pytest.mark.parametrize("label", ["Nonspecific white matter lesion", "Nonspecific lesion"])
def test_t1_weighted_volumes_get_the_t1_visible_subtype_and_the_same_geometry(label):
    rng = np.random.default_rng(3)
    a = lesions_module._design(label, np.random.default_rng(3), None, t1_weighted=False)
    b = lesions_module._design(label, rng, None, t1_weighted=True)
    np.testing.assert_array_equal(a[0], b[0])  # same size: the subtype draws no random number
    assert [s.rho_outer for s in a[1]] == [s.rho_outer for s in b[1]]
    assert lesions_module.T1_VISIBLE_SUBTYPE not in {s.tissue for s in a[1]}
    assert lesions_module.T1_VISIBLE_SUBTYPE in {s.tissue for s in b[1]}
    assert {s.tissue for s in b[1]} <= {lesions_module.T1_VISIBLE_SUBTYPE, "tumour"}


@pytest.mark.parametrize("field_strength", [1.5, 3.0])
def test_t2_weighted_ordering(field_strength):
    p = default_protocol("AXT2", field_strength)
    wm, gm, csf = (tissue_signal(p, t) for t in ("wm", "gm", "csf"))
    assert csf > gm > wm
    for lesion in ("edema", "wm_lesion", "gliosis"):  # T2-hyperintense vs grey matter
        assert tissue_signal(p, lesion) > gm


def test_gadolinium_enhances_only_post_contrast():
    pre = default_protocol("AXT1PRE", 3.0)
    post = default_protocol("AXT1POST", 3.0)
    assert not pre.gadolinium and post.gadolinium
    for t in ("tumour", "meningioma", "vein", "choroid"):
        assert tissue_signal(post, t) > 1.3 * tissue_signal(pre, t)
    assert tissue_signal(post, "wm") == pytest.approx(tissue_signal(pre, "wm"))
    assert relaxation("tumour", 3.0, 0.35).t1_ms < relaxation("tumour", 3.0).t1_ms


def test_every_sequence_has_both_field_strengths():
    for sequence in ALL_SIMULATED_SEQUENCES:
        for b0 in (1.5, 3.0):
            p = default_protocol(sequence, b0)
            assert p.tr_ms > p.te_ms > 0
            assert (p.ti_ms is not None) == (p.kind == "IR")
            assert 0 < p.phase_time_ms < p.te_ms


# --- rendered volumes (need the head model: built once per machine, then cached) -------------


@pytest.fixture(scope="module")
def render():
    from magphase.simulate.phantom import VolumeSpec, render_volume

    def _render(**kwargs):
        base = {"matrix": (96, 96), "n_slices": 6, "slice_thickness_mm": 5.0, "slice_gap_mm": 5.0}
        return render_volume(VolumeSpec(**{**base, **kwargs}))

    return _render


@pytest.mark.slow
def test_render_is_deterministic_and_seeds_differ(render):
    a = render(seed=11, sequence="AXT2", lesions=("Mass",))
    b = render(seed=11, sequence="AXT2", lesions=("Mass",))
    c = render(seed=12, sequence="AXT2", lesions=("Mass",))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.lesions[0].mask, b.lesions[0].mask)
    both = a.head_mask & c.head_mask
    rel_diff = np.abs(np.abs(a.image) - np.abs(c.image))[both].mean() / np.abs(a.image)[both].mean()
    assert rel_diff > 0.05
    assert (a.head_mask != c.head_mask).mean() > 0.005  # head size/pose differ too


@pytest.mark.slow
@pytest.mark.parametrize("label", lesions_module.LESION_LABELS)
def test_lesion_masks_are_inside_the_head_and_not_empty(render, label):
    v = render(seed=5, sequence="AXFLAIR", lesions=(label,))
    (lesion,) = v.lesions
    assert lesion.label == label
    assert lesion.mask.dtype == bool and lesion.mask.shape == v.image.shape
    assert lesion.mask.any()
    assert (lesion.mask & ~v.head_mask).sum() <= 0.02 * lesion.mask.sum()


@pytest.mark.slow
def test_susceptibility_lesion_shows_more_in_phase_than_in_magnitude(render, monkeypatch):
    """Blood products / calcium change the magnitude only where they are (partial volume of a
    thick slice), but their dipole field shifts the phase around them too: the phase-changed
    area exceeds the magnitude-changed area, and the phase change is a visible fraction of a
    radian even though spin echoes refocus most of it."""
    for seed in range(100):
        spec = {"seed": seed, "sequence": "AXT2", "matrix": (160, 160), "lesions": ("Mass",)}
        with_source = render(**spec)
        if with_source.lesions[0].susceptibility:
            break
    assert with_source.lesions[0].susceptibility
    monkeypatch.setattr(lesions_module, "_sources", lambda *args, **kwargs: [])
    without = render(**spec)
    assert not without.lesions[0].susceptibility
    magnitude = np.abs(without.image)
    tissue = magnitude > 0.05 * magnitude.max()
    phase_change = np.abs(np.angle(with_source.image * np.conj(without.image)))[tissue]
    relative_magnitude_change = (np.abs(np.abs(with_source.image) - magnitude) / np.maximum(magnitude, 1e-6))[
        tissue
    ]
    assert np.abs(with_source.b0_hz - without.b0_hz).max() > 10.0
    assert phase_change.max() > 0.2
    assert (phase_change > 0.05).sum() > 1.2 * (relative_magnitude_change > 0.05).sum()


def test_transceive_phase_solves_the_conductivity_poisson_equation():
    """lap(phi) = 2 omega mu0 sigma inside a uniformly conducting sphere (phase-based EPT)."""
    n, h, sigma = 64, 2.0, 0.5
    c = np.arange(n) - n / 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    conductor = (((z**2 + y**2 + x**2) * h * h) <= 40.0**2).astype(np.float32) * sigma
    phi = transceive_phase_from_conductivity(conductor, (h, h, h), larmor_hz=128e6, pad_factor=2.0)
    m = n // 2
    neighbours = phi[m + 1, m, m] + phi[m - 1, m, m] + phi[m, m + 1, m] + phi[m, m - 1, m]
    laplacian = (neighbours + phi[m, m, m + 1] + phi[m, m, m - 1] - 6 * phi[m, m, m]) / (h * 1e-3) ** 2
    expected = 2 * 2 * np.pi * 128e6 * MU0_H_PER_M * sigma
    assert laplacian == pytest.approx(expected, rel=0.03)
    # Quadratic bowl: phi(r) - phi(0) = expected r^2 / 6 inside.
    r = 15
    assert phi[m, m, m + r] - phi[m, m, m] == pytest.approx(expected * (r * h * 1e-3) ** 2 / 6, rel=0.05)
