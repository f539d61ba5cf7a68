"""Tissue parameters of the simulated head: proton density, relaxation times, susceptibility.

Every value here is a literature value or, where the literature only gives a range, a value inside
it; `docs/simulated-data.md` lists each with its source. Times are in milliseconds, susceptibility
in ppm (SI volume susceptibility, absolute, i.e. water = -9.05 ppm). Field-independent quantities
(PD, chi) are shared between 1.5 T and 3 T; T1/T2/T2* are given per field strength.

The susceptibility map handed to the field solver is `chi - CHI_AIR_PPM`, i.e. relative to air, so
that zero padding around the head is air and the head is a diamagnetic object in air, which is
what a scanner bore holds.
"""

from __future__ import annotations

from dataclasses import dataclass

GAMMA_BAR_MHZ_PER_T = 42.577478
"""Gyromagnetic ratio of 1H over 2 pi, MHz/T (CODATA)."""

CHI_AIR_PPM = 0.36
CHI_WATER_PPM = -9.05
FAT_CHEMICAL_SHIFT_PPM = -3.4
"""Main methylene resonance of fat relative to water."""

SUPPORTED_FIELD_STRENGTHS_T = (1.5, 3.0)


@dataclass(frozen=True)
class Relaxation:
    """Relaxation times (ms) of one tissue at one field strength."""

    t1_ms: float
    t2_ms: float
    t2star_ms: float


@dataclass(frozen=True)
class TissueClass:
    """A tissue of the phantom.

    pd: proton density relative to pure water (CSF = 1).
    chi_ppm: absolute SI volume susceptibility.
    relax: field strength (T) -> relaxation times.
    gd_mm: gadolinium concentration (mmol/l) after a standard 0.1 mmol/kg dose at the usual
        post-contrast delay (minutes); 0 for tissue behind an intact blood-brain barrier.
    fat: True for tissue whose signal is the fat resonance (chemical shift applies).
    """

    pd: float
    chi_ppm: float
    relax: dict[float, Relaxation]
    gd_mm: float = 0.0
    fat: bool = False


def _r(t1_15: float, t2_15: float, t2s_15: float, t1_3: float, t2_3: float, t2s_3: float):
    return {1.5: Relaxation(t1_15, t2_15, t2s_15), 3.0: Relaxation(t1_3, t2_3, t2s_3)}


# Normal tissues. Relaxation: Stanisz et al. 2005 (WM, GM, muscle, blood T1), Gold et al. 2004 (fat),
# Wansapura et al. 1999 and Peters et al. 2007 (T2*), Zhao et al. 2007 (venous blood T2 at Y~0.6).
# Susceptibility: Schenck 1996 (water, air, fat, bone), Duyn et al. 2007 / Li et al. 2011 (GM-WM),
# Weisskoff & Kiihne 1992, Spees et al. 2001 (deoxygenated blood).
NORMAL_TISSUES: dict[str, TissueClass] = {
    "wm": TissueClass(0.69, -9.08, _r(780, 72, 66, 1084, 69, 53)),
    "gm": TissueClass(0.80, -9.03, _r(1124, 95, 84, 1820, 99, 66)),
    # Iron-free basis of the deep grey nuclei; their iron map (ppm) adds chi and shortens T2/T2*.
    "deep_gm": TissueClass(0.80, -9.05, _r(1050, 90, 70, 1400, 80, 55)),
    "csf": TissueClass(1.00, -9.05, _r(4200, 2000, 1500, 4300, 1800, 1200)),
    # Venous blood, Y ~ 0.6, Hct ~ 0.42: Delta chi = Hct (1 - Y) 4 pi 0.27 ppm ~ +0.45 ppm vs water.
    "vein": TissueClass(0.85, -8.60, _r(1441, 130, 40, 1932, 50, 15), gd_mm=0.5),
    "dura": TissueClass(0.45, -9.05, _r(800, 60, 40, 1000, 50, 30), gd_mm=0.3),
    "choroid": TissueClass(0.85, -9.05, _r(1100, 110, 60, 1450, 95, 45), gd_mm=0.3),
    # Apparent T2 of fat in a multi-echo TSE (J-coupling partly decoupled, Henkelman et al. 1992).
    "fat": TissueClass(0.90, -8.44, _r(343, 150, 40, 382, 130, 30), fat=True),
    "bone": TissueClass(0.05, -11.10, _r(250, 1.0, 0.5, 300, 0.8, 0.4)),
    "muscle": TissueClass(0.72, -9.03, _r(1008, 44, 30, 1412, 50, 25), gd_mm=0.05),
    "vitreous": TissueClass(0.98, -9.05, _r(3900, 1000, 600, 4100, 900, 500)),
    "air": TissueClass(0.0, CHI_AIR_PPM, _r(1000, 1.0, 1.0, 1000, 1.0, 1.0)),
}

# Lesion tissues: values inside the ranges reported for brain lesions (e.g. Just & Thelen 1988 for
# tumours/edema/cysts; Oh et al. 2005 for peritumoral edema T2), tuned so each lesion has its
# clinical appearance (edema/gliosis T1-hypo, T2/FLAIR-hyper; meningioma near grey matter with
# avid enhancement). Susceptibility of blood products / calcification: Schweser et al. 2010.
LESION_TISSUES: dict[str, TissueClass] = {
    "edema": TissueClass(0.86, -9.06, _r(1300, 210, 130, 1800, 200, 110)),
    "tumour": TissueClass(0.85, -9.05, _r(1300, 120, 80, 1700, 110, 70), gd_mm=0.35),
    "necrosis": TissueClass(0.95, -9.05, _r(2800, 400, 250, 3200, 380, 200), gd_mm=0.02),
    "gliosis": TissueClass(0.83, -9.06, _r(1150, 150, 100, 1650, 140, 90)),
    "wm_lesion": TissueClass(0.80, -9.07, _r(1150, 140, 95, 1500, 130, 85)),
    # Chronic lesion with tissue destruction (axonal loss, enlarged extracellular space): the
    # T1-hypointense "black hole" subtype of white matter lesions and chronic gliosis, darker than
    # cortex on a T1-weighted spin echo (the radiological definition), i.e. T1 a little over twice that
    # of normal white matter (van Walderveen et al. 1998, 1999: persistent black holes), T2 long,
    # water content raised.
    "chronic_lesion": TissueClass(0.88, -9.07, _r(1700, 190, 130, 2400, 170, 110)),
    "meningioma": TissueClass(0.82, -9.05, _r(1150, 95, 70, 1600, 90, 60), gd_mm=0.6),
    "cyst": TissueClass(1.00, -9.05, _r(3800, 1500, 1000, 4000, 1400, 900)),
    # Chronic blood products: paramagnetic hemosiderin/ferritin, +1 ppm vs tissue.
    "haemorrhage": TissueClass(0.80, -8.05, _r(900, 40, 10, 1100, 25, 6)),
    # Dystrophic calcification: diamagnetic, -1 ppm vs tissue, few mobile protons.
    "calcification": TissueClass(0.30, -10.05, _r(900, 30, 10, 1000, 20, 6)),
    # Healing craniotomy flap and kerf: fibrous scar mixed with fluid and granulation tissue, between
    # muscle and gliosis in T1 / T2, enhancing (approximate values; no single published table).
    "scar": TissueClass(0.75, -9.05, _r(900, 70, 40, 1150, 60, 30), gd_mm=0.3),
    # Titanium fixation plates and screws: no MR signal, +182 ppm SI volume susceptibility (Schenck 1996).
    "titanium": TissueClass(0.0, 182.0, _r(1000, 1.0, 1.0, 1000, 1.0, 1.0)),
}

ALL_TISSUES: dict[str, TissueClass] = {**NORMAL_TISSUES, **LESION_TISSUES}

# Electrical conductivity (S/m) at the Larmor frequency of 1.5 T (64 MHz) and 3 T (128 MHz):
# Gabriel et al. 1996 / IT'IS tissue database (normal tissues); lesions: EPT studies of brain
# tumours report raised conductivity (e.g. Tha et al. 2018) -- values in between WM and CSF.
CONDUCTIVITY_S_PER_M: dict[str, dict[float, float]] = {
    "wm": {1.5: 0.29, 3.0: 0.34},
    "gm": {1.5: 0.51, 3.0: 0.59},
    "deep_gm": {1.5: 0.45, 3.0: 0.52},
    "csf": {1.5: 2.07, 3.0: 2.14},
    "vein": {1.5: 1.21, 3.0: 1.25},
    "dura": {1.5: 0.50, 3.0: 0.55},
    "choroid": {1.5: 1.20, 3.0: 1.25},
    "fat": {1.5: 0.04, 3.0: 0.04},
    "bone": {1.5: 0.06, 3.0: 0.07},
    "muscle": {1.5: 0.69, 3.0: 0.72},
    "vitreous": {1.5: 1.50, 3.0: 1.51},
    "air": {1.5: 0.0, 3.0: 0.0},
    "edema": {1.5: 1.00, 3.0: 1.05},
    "tumour": {1.5: 0.90, 3.0: 0.95},
    "necrosis": {1.5: 1.60, 3.0: 1.65},
    "gliosis": {1.5: 0.70, 3.0: 0.75},
    "wm_lesion": {1.5: 0.55, 3.0: 0.60},
    "chronic_lesion": {1.5: 0.80, 3.0: 0.85},
    "meningioma": {1.5: 0.70, 3.0: 0.75},
    "cyst": {1.5: 1.90, 3.0: 2.00},
    "haemorrhage": {1.5: 0.90, 3.0: 0.95},
    "calcification": {1.5: 0.10, 3.0: 0.10},
    "scar": {1.5: 0.60, 3.0: 0.65},
}
MU0_H_PER_M = 4e-7 * 3.141592653589793

# Gadobutrol relaxivities in plasma at 37 C (Rohrer et al. 2005), 1/(s mM).
GD_R1_PER_MM_S = {1.5: 5.2, 3.0: 5.0}
GD_R2_PER_MM_S = {1.5: 6.1, 3.0: 7.1}

# Iron-induced relaxation: R2 and R2* grow linearly with iron (Gelman et al. 1999; Haacke et al.
# 2005); expressed per ppm of iron susceptibility, roughly proportional to B0. Chosen so that
# the globus pallidus (~0.18 ppm) has T2 ~ 46 ms at 3 T and ~ 65 ms at 1.5 T.
IRON_R2_PER_PPM_S = {1.5: 26.0, 3.0: 52.0}
IRON_R2STAR_PER_PPM_S = {1.5: 80.0, 3.0: 160.0}


def check_field_strength(field_strength_t: float) -> float:
    """Return the supported field strength nearest `field_strength_t` (raises if none is close)."""
    for b0 in SUPPORTED_FIELD_STRENGTHS_T:
        if abs(field_strength_t - b0) < 0.05:
            return b0
    raise ValueError(
        f"field_strength_t={field_strength_t}: tissue parameters exist for {SUPPORTED_FIELD_STRENGTHS_T} T"
    )


def relaxation(tissue: str, field_strength_t: float, gd_mm: float | None = None) -> Relaxation:
    """Relaxation times of `tissue` at `field_strength_t`, with gadolinium if `gd_mm` > 0.

    Gadolinium adds r1*C to R1 and r2*C to R2 (fast-exchange, linear relaxivity model).
    `gd_mm=None` means no contrast agent (pre-contrast); pass `ALL_TISSUES[t].gd_mm` post-contrast.
    """
    b0 = check_field_strength(field_strength_t)
    base = ALL_TISSUES[tissue].relax[b0]
    if not gd_mm:
        return base
    r1 = 1000.0 / base.t1_ms + GD_R1_PER_MM_S[b0] * gd_mm
    r2 = 1000.0 / base.t2_ms + GD_R2_PER_MM_S[b0] * gd_mm
    r2s = 1000.0 / base.t2star_ms + GD_R2_PER_MM_S[b0] * gd_mm
    return Relaxation(1000.0 / r1, 1000.0 / r2, 1000.0 / r2s)


def chi_relative_to_air(tissue: str) -> float:
    """Susceptibility of `tissue` relative to air, ppm (what the field solver takes)."""
    return ALL_TISSUES[tissue].chi_ppm - CHI_AIR_PPM
