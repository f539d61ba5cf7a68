"""Lesions labelled as in fastMRI+: placement, 3-D shape, tissue make-up, susceptibility sources.

A lesion is planned in two steps. `plan_lesions` picks a plausible site in the head model (deep
white matter, periventricular, cortex/surface, deep grey nuclei, ...), maps it into the subject's
scanner space, makes sure it crosses at least one slice, and draws its size, irregular shape,
concentric tissue shells (e.g. necrotic core / enhancing rim / vasogenic edema) and any
susceptibility sources (micro-haemorrhages: paramagnetic; calcifications: diamagnetic) as small
spheres whose field is analytic. `render_lesion` then rasterises the shells on the slice points.

All coordinates are scanner (z, y, x) millimetres unless named `*_anatomy_mm` (MNI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from magphase.simulate.anatomy import (
    VENTRICLE_SCALING_SIGMA_MM,
    HeadAnatomy,
    LocalScaling,
    SubjectGeometry,
    anatomy_to_scanner,
)

LESION_LABELS = (
    "Mass",
    "Extra-axial mass",
    "Nonspecific white matter lesion",
    "Nonspecific lesion",
    "Encephalomalacia",
    "Lacunar infarct",
    "Likely cysts",
    "Metastasis",
    "Posttreatment change",
    "Possible artifact",
    "Edema",
    "Craniotomy",
    "Dural thickening",
    "Enlarged ventricles",
    "Resection cavity",
)

BRAIN_TISSUES = ("gm", "wm", "deep_gm")
INTRACRANIAL = ("gm", "wm", "deep_gm", "csf", "choroid")
EXTRA_AXIAL_SPACE = ("gm", "wm", "deep_gm", "csf", "dura")
#: What a craniotomy changes: the bone flap's tables and marrow (the scalp and the brain are not in it).
SKULL = ("bone", "fat")
#: Hosts an annotated "Edema" belongs to (the vasogenic edema of a mass, a tumour bed or a metastasis).
EDEMA_HOSTS = ("Mass", "Metastasis", "Extra-axial mass", "Nonspecific lesion", "Posttreatment change")
#: Findings a craniotomy, and a dural thickening, are placed over when the volume has one (the surgical
#: bed, or the dural base of a meningioma), in order of preference.
SURGICAL_BEDS = ("Resection cavity", "Posttreatment change", "Mass", "Encephalomalacia", "Extra-axial mass")
#: Placement order: hosts first, then the findings anchored to them.
_PLACEMENT_ORDER = {"Edema": 3, "Craniotomy": 2, "Dural thickening": 3, "Posttreatment change": 1}

#: Tissue of the annotated white matter and nonspecific lesions of T1-weighted volumes. fastMRI+ boxes
#: were drawn on the volume's own images, so a lesion boxed on a T1-weighted image is one that image
#: shows: the T1-hypointense chronic subtype ("black hole", darker than cortex), not the T1-isointense
#: lesion most white matter hyperintensities are (visible on T2 / FLAIR only).
T1_VISIBLE_SUBTYPE = "chronic_lesion"

CSF_INFLOW = "csf_inflow"
"""Pseudo-tissue of 'Possible artifact': inflowing CSF that escaped the inversion (FLAIR)."""


@dataclass(frozen=True)
class Shell:
    """Tissue occupying normalised radii rho in [rho_inner, rho_outer) of a lesion.

    replaces: tissue maps it displaces; weights: optional per-tissue affinity (edema spreads in
    white matter and spares cortex); annotated: part of the labelled lesion mask; edge_mm: width
    of its outer edge; one_hemisphere: stops at the midline (vasogenic edema does not cross the
    falx).
    """

    tissue: str
    rho_inner: float
    rho_outer: float
    replaces: tuple[str, ...]
    annotated: bool = True
    weights: tuple[tuple[str, float], ...] = ()
    edge_mm: float = 0.8
    one_hemisphere: bool = False
    label: str | None = None


@dataclass(frozen=True)
class SphereSource:
    """A small sphere of blood products or calcium: tissue + susceptibility vs tissue (ppm)."""

    centre_mm: np.ndarray
    radius_mm: float
    delta_chi_ppm: float
    tissue: str


def replaced_tissues(shells: list[Shell]) -> frozenset[str]:
    """Tissues a set of shells displaces (two lesions may overlap only where these are disjoint)."""
    return frozenset(t for shell in shells for t in shell.replaces)


@dataclass
class LesionPlan:
    """A placed lesion (see module docstring)."""

    label: str
    centre_mm: np.ndarray
    radii_mm: np.ndarray
    rotation: np.ndarray
    shells: list[Shell]
    shape_noise: list[tuple[np.ndarray, float, float]] = field(default_factory=list)
    sources: list[SphereSource] = field(default_factory=list)
    mass_effect: LocalScaling | None = None
    centre_anatomy_mm: np.ndarray | None = None

    @property
    def susceptibility(self) -> bool:
        return bool(self.sources)

    @property
    def box_labels(self) -> tuple[str, ...]:
        """Labels of the annotated parts, the lesion's own first (one box set each)."""
        out = [self.label]
        for shell in self.shells:
            if shell.annotated and shell.label and shell.label not in out:
                out.append(shell.label)
        return tuple(out)

    @property
    def replaced(self) -> frozenset[str]:
        """Tissues the lesion's shells displace."""
        return replaced_tissues(self.shells)

    @property
    def extent(self) -> float:
        """Largest normalised radius of any shell."""
        return max(s.rho_outer for s in self.shells)

    @property
    def reach_mm(self) -> float:
        """Distance from the centre beyond which no shell reaches (shape modulation included)."""
        modulation = 1.0 + sum(abs(amp) for _, _, amp in self.shape_noise)
        return float(self.radii_mm.max()) * self.extent * modulation + 2.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )


def _shape_noise(
    rng: np.random.Generator, amplitude: float, n: int = 5
) -> list[tuple[np.ndarray, float, float]]:
    """Random smooth radial modulation: sum of cosines of the direction (lobulated outline)."""
    terms = []
    for _ in range(n):
        k = rng.normal(size=3)
        k *= rng.uniform(1.5, 4.0) / np.linalg.norm(k)
        terms.append((k, rng.uniform(0, 2 * math.pi), amplitude * rng.uniform(0.4, 1.0) / math.sqrt(n)))
    return terms


_SITE_BY_LABEL = {
    "Mass": ("hemisphere",),
    "Extra-axial mass": ("surface",),
    "Nonspecific white matter lesion": ("periventricular", "periventricular", "deep_wm", "juxtacortical"),
    "Nonspecific lesion": ("parenchyma", "juxtacortical"),
    "Encephalomalacia": ("surface",),
    "Lacunar infarct": ("deep_gm", "deep_gm", "deep_wm", "periventricular"),
    "Likely cysts": ("parenchyma", "deep_wm"),
    "Metastasis": ("juxtacortical", "juxtacortical", "parenchyma"),
    "Posttreatment change": ("surface",),
    "Possible artifact": ("ventricle",),
    "Edema": ("deep_wm",),
    "Craniotomy": ("surface",),
    "Dural thickening": ("surface",),
    "Enlarged ventricles": ("ventricle_centre",),
    "Resection cavity": ("surface",),
}
#: Centre offset along the outward surface normal, in mean radii (surface sites): extra-axial lesions
#: sit on the dura and displace the brain; cortical defects (encephalomalacia, resection cavities) are
#: centred under the surface.
_SURFACE_OFFSET = {
    "Extra-axial mass": 0.1,
    "Encephalomalacia": -0.45,
    "Posttreatment change": -0.6,
    "Resection cavity": -0.5,
    "Dural thickening": 0.0,
}
#: Findings laid along the skull (axis 0 of the lesion = the outward surface normal), centred this far
#: outside the brain surface (mm): the bone flap of a craniotomy in the skull (past the CSF, the dura and
#: the inner table), a thickened dura in the space under the inner table.
FRAMED_OFFSET_MM = {"Craniotomy": 6.0, "Dural thickening": 2.5}
#: Findings whose several lesions of one volume lie together (around the first, or the surgical bed).
_CLUSTERED = ("Posttreatment change",)
#: Annotation-only findings (no tissue displaced): other lesions may overlap them.
_ANNOTATION_ONLY = frozenset({"Enlarged ventricles"})


def _edema(rho_inner: float, rho_outer: float) -> Shell:
    """Vasogenic edema: follows white matter, spares cortex, fades out, stops at the midline."""
    affinity = (("wm", 1.0), ("deep_gm", 0.8), ("gm", 0.25))
    return Shell(
        "edema",
        rho_inner,
        rho_outer,
        BRAIN_TISSUES,
        annotated=False,
        weights=affinity,
        edge_mm=4.0,
        one_hemisphere=True,
    )


def _design(
    label: str, rng: np.random.Generator, radius_mm: float | None = None, t1_weighted: bool = False
) -> tuple[np.ndarray, list[Shell], float, float]:
    """Size (radii mm), shells, shape irregularity and mass-effect strength for a label.

    ``radius_mm`` replaces the label's built-in size range (the fitted fastMRI+ sizes, see
    :mod:`magphase.simulate.findings`); the shape, shells and everything else stay the label's.
    ``t1_weighted``: the volume is a T1-weighted acquisition, so its annotated white matter and
    nonspecific lesions are the T1-hypointense chronic subtype (:data:`T1_VISIBLE_SUBTYPE`). Neither
    draws a random number, so the rest of the plan is the same either way.
    """
    u = rng.uniform
    wm_lesion = T1_VISIBLE_SUBTYPE if t1_weighted else "wm_lesion"
    gliosis = T1_VISIBLE_SUBTYPE if t1_weighted else "gliosis"

    def size(low: float, high: float) -> float:
        return u(low, high) if radius_mm is None else float(radius_mm)

    edema_w = (("wm", 1.0), ("deep_gm", 0.8), ("gm", 0.25))  # gliosis around a resection
    if label == "Mass":
        r = size(9.0, 22.0)
        radii = r * np.array([u(0.8, 1.1), u(0.9, 1.25), u(0.8, 1.1)])
        core = u(0.35, 0.65) if rng.random() < 0.75 else 0.0
        shells = [Shell("tumour", core, 1.0, INTRACRANIAL)]
        if core > 0:
            shells.insert(0, Shell("necrosis", 0.0, core, INTRACRANIAL))
        shells.append(_edema(1.0, u(1.5, 2.4)))
        return radii, shells, 0.18, u(1.25, 1.5)
    if label == "Extra-axial mass":
        r = size(8.0, 20.0)
        radii = r * np.array([u(0.8, 1.0), u(0.9, 1.2), u(0.9, 1.2)])
        shells = [Shell("meningioma", 0.0, 1.0, EXTRA_AXIAL_SPACE)]
        if rng.random() < 0.3:
            shells.append(_edema(1.0, u(1.2, 1.5)))
        return radii, shells, 0.08, u(1.15, 1.35)
    if label == "Nonspecific white matter lesion":
        r = size(1.5, 5.0)
        radii = r * np.array([u(0.8, 1.6), u(0.7, 1.3), u(0.7, 1.3)])
        return radii, [Shell(wm_lesion, 0.0, 1.0, BRAIN_TISSUES)], 0.15, 1.0
    if label == "Nonspecific lesion":
        r = size(3.0, 9.0)
        radii = r * np.array([u(0.8, 1.2), u(0.8, 1.2), u(0.8, 1.2)])
        shells = [Shell(gliosis, 0.0, 1.0, BRAIN_TISSUES)]
        if rng.random() < 0.4:
            shells = [Shell("tumour", 0.0, 0.45, BRAIN_TISSUES), Shell(gliosis, 0.45, 1.0, BRAIN_TISSUES)]
        return radii, shells, 0.15, 1.0
    if label == "Encephalomalacia":
        r = size(10.0, 22.0)
        radii = r * np.array([u(0.7, 1.0), u(0.9, 1.3), u(0.9, 1.3)])
        shells = [Shell("csf", 0.0, 1.0, BRAIN_TISSUES), Shell("gliosis", 1.0, u(1.2, 1.4), BRAIN_TISSUES)]
        return radii, shells, 0.25, 0.85
    if label == "Lacunar infarct":
        r = size(2.0, 6.0)
        radii = r * np.array([u(0.9, 1.5), u(0.8, 1.2), u(0.8, 1.2)])
        shells = [Shell("csf", 0.0, 1.0, BRAIN_TISSUES), Shell("gliosis", 1.0, u(1.3, 1.6), BRAIN_TISSUES)]
        return radii, shells, 0.12, 1.0
    if label == "Likely cysts":
        r = size(4.0, 12.0)
        radii = r * np.array([u(0.85, 1.15), u(0.85, 1.15), u(0.85, 1.15)])
        return radii, [Shell("cyst", 0.0, 1.0, INTRACRANIAL)], 0.04, u(1.0, 1.15)
    if label == "Metastasis":
        r = size(2.5, 11.0)
        radii = r * np.array([u(0.85, 1.15), u(0.85, 1.15), u(0.85, 1.15)])
        shells = [Shell("tumour", 0.0, 1.0, INTRACRANIAL)]
        if r > 6.0:
            core = u(0.4, 0.7)
            shells = [Shell("necrosis", 0.0, core, INTRACRANIAL), Shell("tumour", core, 1.0, INTRACRANIAL)]
        shells.append(_edema(1.0, u(1.6, 3.2)))
        return radii, shells, 0.1, u(1.05, 1.25)
    if label == "Posttreatment change":
        r = size(10.0, 20.0)
        radii = r * np.array([u(0.8, 1.1), u(0.9, 1.2), u(0.8, 1.1)])
        rim = u(0.72, 0.85)
        shells = [
            Shell("cyst", 0.0, rim, INTRACRANIAL),
            Shell("tumour", rim, 0.9, BRAIN_TISSUES),  # thin reactive enhancing rim
            Shell("gliosis", 0.9, u(1.3, 1.8), BRAIN_TISSUES, weights=edema_w),
        ]
        return radii, shells, 0.2, 0.9
    if label == "Possible artifact":
        r = size(2.5, 5.0)
        radii = r * np.array([u(0.8, 1.2), u(0.8, 1.4), u(0.8, 1.2)])
        return radii, [Shell(CSF_INFLOW, 0.0, 1.0, ("csf",))], 0.2, 1.0
    if label == "Edema":  # vasogenic edema without a host lesion in the slab (its source lies outside)
        r = size(10.0, 25.0)
        radii = r * np.array([u(0.7, 1.0), u(0.9, 1.3), u(0.8, 1.1)])
        return radii, [replace(_edema(0.0, 1.0), annotated=True)], 0.3, u(1.0, 1.1)
    if label == "Craniotomy":
        # The replaced bone flap, a disk of skull about the lesion centre (which plan_lesions puts in
        # the skull): its marrow turned to fibrous tissue (the fat of the diploe, not of the scalp: the
        # shell only takes fat where there is bone), and at its edge the kerf, a ring where both tables
        # and the marrow are gone and scar and fluid fill the gap. Radius: the flap (5-8 cm across).
        r = size(20.0, 35.0)
        radii = r * np.array([u(0.9, 1.1), u(0.9, 1.1), u(0.9, 1.1)])
        kerf = 1.0 - u(2.5, 4.0) / r
        shells = [
            Shell("scar", 0.0, kerf, ("fat",), weights=(("bone", 1.5),), edge_mm=1.0),
            Shell("scar", kerf, 1.0, SKULL, weights=(("bone", 2.5),), edge_mm=1.0),
        ]
        return radii, shells, 0.08, 1.0
    if label == "Dural thickening":
        # Thickened, enhancing dura (pachymeningeal reaction after surgery, or a meningioma's dural
        # tail): fills the subarachnoid space under the inner table over a patch of the convexity.
        r = size(8.0, 25.0)
        radii = np.array([4.0, r * u(0.9, 1.1), r * u(0.9, 1.1)])
        return radii, [Shell("dura", 0.0, 1.0, ("csf", "dura"), edge_mm=1.0)], 0.15, 1.0
    if label == "Enlarged ventricles":
        # Ventriculomegaly (hydrocephalus, or ex vacuo): the ventricular system expanded by a local
        # scaling (mass_factor) about its centroid; the annotation is its CSF (no signal change).
        radii = np.array([24.0, 44.0, 30.0]) * (1.0 if radius_mm is None else u(0.9, 1.1))
        return radii, [Shell("csf", 0.0, 1.0, ("csf",), edge_mm=3.0)], 0.05, u(1.45, 1.85)
    if label == "Resection cavity":
        # Surgical cavity: CSF-filled defect under the cortex with a thin gliotic wall (T1-dark
        # chronic gliosis on T1-weighted scans), the brain collapsing slightly into it.
        r = size(8.0, 22.0)
        radii = r * np.array([u(0.7, 1.0), u(0.9, 1.3), u(0.9, 1.3)])
        shells = [
            Shell("csf", 0.0, 1.0, BRAIN_TISSUES),
            Shell(gliosis, 1.0, u(1.1, 1.25), BRAIN_TISSUES, annotated=False),
        ]
        return radii, shells, 0.25, 0.9
    raise ValueError(f"lesion label {label!r}: known labels are {LESION_LABELS}")


def _sources(
    label: str, rng: np.random.Generator, centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray
):
    """Susceptibility spheres inside the lesion (may be empty)."""
    if label == "Craniotomy":
        return _fixation(rng, centre, radii, rotation)
    p_haem = {"Mass": 0.25, "Metastasis": 0.3, "Posttreatment change": 0.6, "Resection cavity": 0.4}.get(
        label, 0.0
    )
    p_calc = {"Mass": 0.15, "Extra-axial mass": 0.3}.get(label, 0.0)
    draw = rng.random()
    if draw < p_haem:  # intratumoral / post-operative blood products, micro- to small bleeds
        tissue, dchi, n, rmin, rmax = "haemorrhage", 1.0, int(rng.integers(2, 7)), 1.0, 3.5
    elif draw < p_haem + p_calc:  # dystrophic / psammomatous calcification
        tissue, dchi, n, rmin, rmax = "calcification", -1.0, int(rng.integers(1, 4)), 1.5, 4.0
    else:
        return []
    sources = []
    for _ in range(n):
        v = rng.normal(size=3)
        v *= rng.uniform(0.0, 0.85) / np.linalg.norm(v)
        sources.append(
            SphereSource(centre + rotation @ (v * radii), float(rng.uniform(rmin, rmax)), dchi, tissue)
        )
    return sources


#: Titanium (the plates and screws that fix a bone flap): volume susceptibility +182 ppm (SI), i.e.
#: about +191 ppm relative to tissue (Schenck 1996, Med Phys 23:815); fraction of craniotomies with
#: fixation visible in the slab.
TITANIUM_DELTA_CHI_PPM = 191.0
P_FIXATION = 0.6


def _fixation(rng: np.random.Generator, centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray):
    """Titanium screws / mini-plates at the rim of a bone flap (axis 0 of the flap is its normal)."""
    if rng.random() >= P_FIXATION:
        return []
    sources = []
    for angle in rng.uniform(0.0, 2 * math.pi) + np.arange(int(rng.integers(2, 5))) * (2 * math.pi / 4):
        v = np.array([0.0, math.cos(angle), math.sin(angle)]) * rng.uniform(0.85, 1.0)
        sources.append(
            SphereSource(
                centre + rotation @ (v * radii),
                float(rng.uniform(0.6, 1.0)),
                TITANIUM_DELTA_CHI_PPM,
                "titanium",
            )
        )
    return sources


def _frame(normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotation whose first column is ``normal`` (unit), the other two a random in-plane pair."""
    n = normal / max(float(np.linalg.norm(normal)), 1e-6)
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a = np.cross(n, helper)
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    angle = rng.uniform(0.0, 2 * math.pi)
    a, b = math.cos(angle) * a + math.sin(angle) * b, -math.sin(angle) * a + math.cos(angle) * b
    return np.stack([n, a, b], axis=1)


def _attach_edema(host: LesionPlan, radius_mm: float | None, rng: np.random.Generator) -> None:
    """Box the host's vasogenic edema as "Edema" (adding an edema shell where the host had none),
    its outer radius from the drawn edema size (at least 1.25 host radii)."""
    mean_r = float(np.mean(host.radii_mm))
    outer = max(1.25, (radius_mm or rng.uniform(1.5, 2.4) * mean_r) / mean_r)
    inner = max(s.rho_outer for s in host.shells if s.tissue != "edema")
    shells = [s for s in host.shells if s.tissue != "edema"]
    shells.append(replace(_edema(inner, max(outer, inner + 0.25)), annotated=True, label="Edema"))
    host.shells = shells


def _rim_posttreatment(host: LesionPlan, rng: np.random.Generator) -> None:
    """The tumour bed around a resection cavity: a thin enhancing reactive rim and gliosis, boxed as
    "Posttreatment change" (replaces the cavity's own gliotic wall)."""
    inner = max(s.rho_outer for s in host.shells if s.annotated)
    rim = inner + rng.uniform(0.08, 0.15)
    host.shells = [s for s in host.shells if s.annotated] + [
        Shell("tumour", inner, rim, BRAIN_TISSUES, label="Posttreatment change"),
        Shell(
            "gliosis",
            rim,
            rim + rng.uniform(0.3, 0.7),
            BRAIN_TISSUES,
            label="Posttreatment change",
            edge_mm=2.5,
        ),
    ]


def plan_lesions(
    labels: tuple[str, ...],
    rng: np.random.Generator,
    anatomy: HeadAnatomy,
    geometry: SubjectGeometry,
    slice_z_mm: np.ndarray,
    fov_half_mm: tuple[float, float],
    radii_mm: tuple[float, ...] = (),
    target_slices: tuple[int, ...] = (),
    t1_weighted: bool = False,
) -> list[LesionPlan]:
    """Place the lesions of ``labels`` so that each crosses at least one slice.

    slice_z_mm: (S,) scanner z of the slice centres. radii_mm: optional size per lesion (empty: each
    label's built-in range). target_slices: optional slice index per lesion that its centre should lie
    on (empty: any slice; how the fitted statistics cluster a label's lesions on its annotated slices).
    t1_weighted: the volume is T1-weighted (its white matter / nonspecific lesions are the T1-visible
    subtype, see :func:`_design`).

    Companion findings are placed with the lesion they belong to: an "Edema" becomes the boxed edema
    shell of the first host (:data:`EDEMA_HOSTS`) instead of a lesion of its own; a "Posttreatment
    change" with a "Resection cavity" becomes the cavity's enhancing, gliotic wall; a "Craniotomy" (and
    a "Dural thickening") is centred over the surgical bed (:data:`SURGICAL_BEDS`) where there is one.
    Lesions avoid each other where they displace the same tissues (no overlap of their annotated
    parts). Raises ValueError for unknown labels; a label whose site cannot be found in the slab after
    many tries is placed at the best candidate found.
    """
    if radii_mm and len(radii_mm) != len(labels):
        raise ValueError(f"{len(radii_mm)} lesion sizes for {len(labels)} lesions")
    if target_slices and len(target_slices) != len(labels):
        raise ValueError(f"{len(target_slices)} target slices for {len(labels)} lesions")
    for label in labels:
        if label not in _SITE_BY_LABEL:
            raise ValueError(f"lesion label {label!r}: known labels are {LESION_LABELS}")
    order = sorted(range(len(labels)), key=lambda i: _PLACEMENT_ORDER.get(labels[i], 0))
    present = set(labels)
    plans: list[LesionPlan] = []
    for i in order:
        label = labels[i]
        radius = radii_mm[i] if radii_mm else None
        if label == "Edema":
            host = next((p for p in plans if p.label in EDEMA_HOSTS), None)
            if host is not None:
                _attach_edema(host, radius, rng)
                continue
        if label == "Posttreatment change" and "Resection cavity" in present:
            host = next((p for p in plans if p.label == "Resection cavity"), None)
            if host is not None and label not in host.box_labels:  # the wall once; more lesions beside it
                _rim_posttreatment(host, rng)
                continue
        radii, shells, irregularity, mass_factor = _design(label, rng, radius, t1_weighted)
        site = str(rng.choice(_SITE_BY_LABEL[label]))
        if site == "ventricle_centre":
            candidates = anatomy.ventricle_centre_mm[None].astype(np.float32)
        else:
            candidates = anatomy.sites[site]
        pick = rng.choice(len(candidates), size=min(400, len(candidates)), replace=False)
        anat = candidates[pick].astype(np.float64)
        normals = anatomy.surface_normals[pick].astype(np.float64) if site == "surface" else None
        bed = None
        if label in ("Craniotomy", "Dural thickening", *_CLUSTERED):
            beds = [p for p in plans if p.label in SURGICAL_BEDS and p.centre_anatomy_mm is not None]
            bed = min(beds, key=lambda p: SURGICAL_BEDS.index(p.label)) if beds else None
        if label in _CLUSTERED:  # one treated region seen on several slices, not scattered foci
            bed = next((p for p in plans if p.label == label), bed)
        if label in FRAMED_OFFSET_MM:
            anat = anat + normals * FRAMED_OFFSET_MM[label]
        elif site == "surface":
            anat = anat + normals * _SURFACE_OFFSET.get(label, 0.0) * float(np.mean(radii))
        scanner = anatomy_to_scanner(anat, geometry)
        rz = float(radii.max()) * 0.6
        if target_slices:
            target = slice_z_mm[min(max(int(target_slices[i]), 0), len(slice_z_mm) - 1)]
            dz = np.abs(scanner[:, 0] - target)
        else:
            dz = np.min(np.abs(scanner[:, :1] - slice_z_mm[None, :]), axis=1)
        # In the field of view; a finding along the skull only needs its centre there (its disk
        # reaches into the scalp and the air around the head, where it changes nothing).
        margin = 0.0 if label in FRAMED_OFFSET_MM else float(radii.max())
        inside_fov = (np.abs(scanner[:, 1]) < fov_half_mm[0] - margin) & (
            np.abs(scanner[:, 2]) < fov_half_mm[1] - margin
        )
        clear = np.ones(len(scanner), bool)
        mine = replaced_tissues(shells)
        for other in plans:
            if not (mine & other.replaced) or _ANNOTATION_ONLY & {label, other.label}:
                continue  # different tissues (skull, dura, brain) or no displacement: may overlap
            gap = np.linalg.norm(scanner - other.centre_mm, axis=1)
            clear &= gap > float(np.max(radii)) + float(np.max(other.radii_mm)) * 1.2 + 2.0
        # Dural masses on the convexity and falx, not on the skull base next to the sinuses.
        low_dura = (anat[:, 0] < 5.0) if label == "Extra-axial mass" else np.zeros(len(anat), bool)
        score = dz / max(rz, 1.0) + 10.0 * ~inside_fov + 10.0 * ~clear + 10.0 * low_dura
        if bed is not None:  # over the surgical bed: distance to it dominates the choice
            score = score + np.linalg.norm(anat - bed.centre_anatomy_mm, axis=1) / 10.0
        best = int(np.argmin(score + rng.uniform(0, 0.3, size=len(score))))
        centre = scanner[best]
        if label in FRAMED_OFFSET_MM:
            rotation = _frame(geometry.rotation @ normals[best], rng)
        else:
            rotation = _random_rotation(rng)
        plan = LesionPlan(
            label=label,
            centre_mm=centre,
            radii_mm=radii,
            rotation=rotation,
            shells=shells,
            shape_noise=_shape_noise(rng, irregularity),
            sources=_sources(label, rng, centre, radii, rotation),
            centre_anatomy_mm=anat[best],
        )
        if mass_factor != 1.0:
            sigma = VENTRICLE_SCALING_SIGMA_MM if label == "Enlarged ventricles" else radii * 1.3
            plan.mass_effect = LocalScaling(
                centre_mm=anat[best].astype(np.float32),
                sigma_mm=sigma.astype(np.float32),
                factor=float(mass_factor),
            )
        plans.append(plan)
    return plans


def lesion_rho(plan: LesionPlan, points_mm: np.ndarray) -> np.ndarray:
    """Normalised, shape-modulated radius of `points_mm` (..., 3) for a lesion (rho < 1 inside)."""
    d = (np.asarray(points_mm, np.float32) - plan.centre_mm.astype(np.float32)) @ plan.rotation.astype(
        np.float32
    )
    q = d / plan.radii_mm.astype(np.float32)
    rho = np.sqrt(np.sum(q * q, axis=-1))
    u = q / np.maximum(rho[..., None], 1e-6)
    modulation = np.ones_like(rho)
    for k, phase, amp in plan.shape_noise:
        modulation += amp * np.cos(u @ k.astype(np.float32) + phase)
    return rho / np.maximum(modulation, 0.3)


def render_lesion(
    plan: LesionPlan, points_mm: np.ndarray, edge_mm: float = 0.8
) -> tuple[tuple[slice, ...], dict[int, np.ndarray]]:
    """Shell occupancies of a lesion on the slice points (S, H, W, 3) within its bounding box.

    Returns (box, {shell index: float32 fraction in [0, 1] over the box}); the box is a tuple of
    slices (s, h, w). Empty dict if the lesion misses every point.
    """
    reach = plan.reach_mm
    s_idx = np.nonzero(np.abs(points_mm[:, 0, 0, 0] - plan.centre_mm[0]) < reach)[0]
    if s_idx.size == 0:
        return (slice(0, 0),) * 3, {}
    rows = np.nonzero(np.abs(points_mm[s_idx[0], :, 0, 1] - plan.centre_mm[1]) < reach)[0]
    cols = np.nonzero(np.abs(points_mm[s_idx[0], 0, :, 2] - plan.centre_mm[2]) < reach)[0]
    if rows.size == 0 or cols.size == 0:
        return (slice(0, 0),) * 3, {}
    box = (
        slice(int(s_idx[0]), int(s_idx[-1]) + 1),
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(cols[0]), int(cols[-1]) + 1),
    )
    return box, shell_occupancy(plan, points_mm[box], edge_mm)


def render_lesion_on_axes(
    plan: LesionPlan, z_mm: np.ndarray, y_mm: np.ndarray, x_mm: np.ndarray, edge_mm: float = 0.8
) -> tuple[tuple[slice, ...], dict[int, np.ndarray]]:
    """`render_lesion` on the rectilinear grid z_mm x y_mm x x_mm without building all its points."""
    reach = plan.reach_mm
    box = []
    for axis, values in enumerate((z_mm, y_mm, x_mm)):
        hits = np.nonzero(np.abs(np.asarray(values) - plan.centre_mm[axis]) < reach)[0]
        if hits.size == 0:
            return (slice(0, 0),) * 3, {}
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    pts = np.stack(np.meshgrid(z_mm[box[0]], y_mm[box[1]], x_mm[box[2]], indexing="ij"), axis=-1)
    return tuple(box), shell_occupancy(plan, pts.astype(np.float32), edge_mm)


def shell_occupancy(plan: LesionPlan, points_mm: np.ndarray, edge_mm: float = 0.8) -> dict[int, np.ndarray]:
    """{shell index: float32 occupancy in [0, 1]} of a lesion's shells at points (..., 3)."""
    rho = lesion_rho(plan, points_mm)
    mm_per_rho = float(np.mean(plan.radii_mm))
    scale = mm_per_rho / edge_mm  # rho units -> edge widths
    out = {}
    for i, shell in enumerate(plan.shells):
        inner = np.clip((rho - shell.rho_inner) * scale + 0.5, 0.0, 1.0) if shell.rho_inner > 0 else 1.0
        outer_scale = mm_per_rho / max(edge_mm, shell.edge_mm)
        outer = np.clip((shell.rho_outer - rho) * outer_scale + 0.5, 0.0, 1.0)
        occ = (inner * outer).astype(np.float32)
        if occ.max() > 0:
            out[i] = occ
    return out


def sphere_cross_section(source: SphereSource, points_mm: np.ndarray, edge_mm: float = 0.35) -> np.ndarray:
    """In-plane partial-volume fraction of the sphere's section through each point (..., 3).

    The section at the points' z is a disk of radius sqrt(a^2 - dz^2); pixels are scored by
    their distance to its edge (linear ramp over ~2 * edge_mm). float32, shape points.shape[:-1].
    """
    d = np.asarray(points_mm, np.float32) - source.centre_mm.astype(np.float32)
    r_xy = np.sqrt(d[..., 1] ** 2 + d[..., 2] ** 2)
    r2 = source.radius_mm**2 - d[..., 0] ** 2
    disk = np.sqrt(np.maximum(r2, 0.0))
    return (np.clip(disk - r_xy + edge_mm, 0.0, 1.0) * (r2 > 0)).astype(np.float32)
