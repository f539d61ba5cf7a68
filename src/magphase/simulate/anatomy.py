"""Digital head anatomy from the MNI152 2009a templates shipped with nilearn, and subject warps.

The templates (T1, GM, WM probability maps, brain mask; 1 mm, skull stripped) come from nilearn's
package data, so nothing is downloaded. Around the brain this module builds what a head scan
shows: CSF (sulci, cisterns, ventricles, subarachnoid layer), dura and falx, skull (inner table,
diploe, outer table) of regionally varying thickness, scalp (skin, subcutaneous fat, galea and
temporalis muscle), eyes, orbital fat and optic nerves, air sinuses (frontal, ethmoid, sphenoid,
maxillary, mastoid), external ear canals, nasal cavity and pharynx, skull base bone, deep grey
nuclei with their iron, dural venous sinuses, deep and cortical veins and the choroid plexus.
Positions of the structures that the templates lack are approximate MNI coordinates (documented
in docs/simulated-data.md).

Everything lives on one 1 mm "anatomy grid" indexed (z, y, x) in MNI millimetres (RAS: +x patient
left->right is *patient right*, +y anterior, +z superior). Tissue fractions are stored as uint8
(fraction * 255) to keep the cached model small (~150 MB); it is built once per process
(`load_head_anatomy`, ~10 s) and sampled at a subject's warped slice coordinates.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from magphase.simulate.tissue import CONDUCTIVITY_S_PER_M, SUPPORTED_FIELD_STRENGTHS_T, chi_relative_to_air
from magphase.utils.atomic import atomic_path

log = logging.getLogger(__name__)

# Anatomy grid: MNI mm of index 0 along (z, y, x), 1 mm spacing.
GRID_ORIGIN_MM = np.array([-120.0, -134.0, -98.0])
GRID_SHAPE = (226, 263, 197)
_TEMPLATE_OFFSET = (48, 0, 0)  # template index (0,0,0) = MNI (-72,-134,-98) in (z,y,x) -> grid index

TISSUE_MAPS = (
    "gm",
    "wm",
    "deep_gm",
    "csf",
    "vein",
    "dura",
    "choroid",
    "fat",
    "bone",
    "muscle",
    "vitreous",
    "air",
)
"""Tissue fraction maps (air = air inside the head: sinuses, airways; outside air is the rest)."""

EXTRA_MAPS = ("brain", "head", "facial")
"""brain: brain-tissue indicator (template brain mask, incl. ventricles); head: sum of all tissue
fractions except internal air (what is not air); facial: orbits, ethmoid/maxillary sinuses, nose."""

IRON_SCALE_PPM = 0.25 / 255.0
CHI_GRID_SPACING_MM = 2.0

# Head reference point (MNI, z y x) placed at the scanner isocentre (before the subject's shift).
HEAD_REFERENCE_MNI = np.array([15.0, -18.0, 0.0])

# Deep grey nuclei: (name, centre MNI (x, y, z), radii (x, y, z) mm, iron susceptibility ppm).
# Centres/extents approximate the Harvard-Oxford subcortical atlas; iron chi from QSM studies
# (Deistung et al. 2013; Li et al. 2011): pallidum > substantia nigra/red nucleus > putamen >
# caudate > thalamus.
DEEP_NUCLEI = (
    ("putamen", (25.0, 2.0, 1.0), (6.0, 15.0, 10.0), 0.08),
    ("pallidum", (19.0, -3.0, -1.0), (4.0, 8.0, 5.0), 0.18),
    ("caudate", (13.0, 12.0, 10.0), (5.0, 10.0, 9.0), 0.06),
    ("caudate_body", (15.0, -8.0, 20.0), (4.0, 12.0, 4.0), 0.05),
    ("thalamus", (11.0, -18.0, 7.0), (8.0, 13.0, 9.0), 0.02),
    ("red_nucleus", (5.0, -20.0, -9.0), (3.0, 3.5, 3.5), 0.13),
    ("substantia_nigra", (11.0, -17.0, -11.0), (3.5, 7.0, 2.5), 0.15),
    ("dentate", (15.0, -58.0, -35.0), (6.0, 7.0, 5.0), 0.10),
)

# Labels of the non-brain structures (hard labels at 1 mm, smoothed into fractions).
_L_AIR, _L_BRAIN, _L_CSF, _L_DURA, _L_BONE, _L_DIPLOE, _L_FAT, _L_MUSCLE = range(8)
_L_SOFT, _L_VITREOUS, _L_AIRIN, _L_NERVE, _L_MASTOID, _L_ETHMOID = range(8, 14)
_N_LABELS = 14
# Composition of each label in tissue fractions (brain label handled from the templates).
_LABEL_COMPOSITION: dict[int, dict[str, float]] = {
    _L_CSF: {"csf": 1.0},
    _L_DURA: {"dura": 1.0},
    _L_BONE: {"bone": 1.0},
    _L_DIPLOE: {"fat": 0.6, "bone": 0.4},  # yellow marrow between the tables
    _L_FAT: {"fat": 1.0},
    _L_MUSCLE: {"muscle": 1.0},
    _L_SOFT: {"muscle": 0.7, "fat": 0.3},
    _L_VITREOUS: {"vitreous": 1.0},
    _L_AIRIN: {"air": 1.0},
    _L_NERVE: {"wm": 1.0},
    _L_MASTOID: {"air": 0.55, "bone": 0.45},
    _L_ETHMOID: {"air": 0.7, "bone": 0.3},
}


@dataclass
class HeadAnatomy:
    """The cached head model on the anatomy grid (see module docstring).

    maps: name -> uint8 (Z, Y, X) fraction * 255 for TISSUE_MAPS and EXTRA_MAPS, plus "iron"
        (ppm / IRON_SCALE_PPM, the iron susceptibility of deep grey nuclei).
    chi_coarse: float32 susceptibility relative to air (ppm), block-averaged to
        CHI_GRID_SPACING_MM, origin `chi_origin_mm` (z, y, x).
    sigma_coarse: field strength (T) -> float32 electrical conductivity (S/m) at its Larmor
        frequency, on the same coarse grid.
    sites: lesion site name -> float32 (N, 3) candidate centres (MNI mm, z y x).
    surface_normals: float32 (N, 3) outward normals for sites["surface"].
    ventricle_centre_mm: centroid of the lateral ventricles (MNI mm, z y x).
    """

    maps: dict[str, np.ndarray]
    chi_coarse: np.ndarray
    chi_origin_mm: np.ndarray
    sigma_coarse: dict[float, np.ndarray]
    sites: dict[str, np.ndarray]
    surface_normals: np.ndarray
    ventricle_centre_mm: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def grid_coordinates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-mesh MNI mm coordinates (z, y, x) of the anatomy grid."""
    z = GRID_ORIGIN_MM[0] + np.arange(GRID_SHAPE[0], dtype=np.float32)
    y = GRID_ORIGIN_MM[1] + np.arange(GRID_SHAPE[1], dtype=np.float32)
    x = GRID_ORIGIN_MM[2] + np.arange(GRID_SHAPE[2], dtype=np.float32)
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _load_templates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GM, WM probability and brain mask from nilearn's package data, on the anatomy grid."""
    from nilearn import datasets

    def to_grid(img) -> np.ndarray:
        data = np.asarray(img.get_fdata(), dtype=np.float32).transpose(2, 1, 0)  # (x,y,z) -> (z,y,x)
        affine = img.affine
        if not np.allclose(np.diag(affine)[:3], 1.0) or not np.allclose(affine[:3, 3], (-98, -134, -72)):
            raise RuntimeError(f"unexpected MNI152 template affine {affine.tolist()}")
        out = np.zeros(GRID_SHAPE, np.float32)
        oz, oy, ox = _TEMPLATE_OFFSET
        nz = GRID_SHAPE[0] - oz  # the templates' top (z > 105 mm) is empty: crop it
        if data[nz:].max(initial=0.0) > 0.05:
            raise RuntimeError("MNI152 template has content above the anatomy grid")
        out[oz:, oy : oy + data.shape[1], ox : ox + data.shape[2]] = data[:nz]
        return out

    gm = to_grid(datasets.load_mni152_gm_template(resolution=1))
    wm = to_grid(datasets.load_mni152_wm_template(resolution=1))
    brain = to_grid(datasets.load_mni152_brain_mask(resolution=1))
    return gm, wm, brain > 0.5


def _ellipsoid(z, y, x, centre_zyx, radii_zyx) -> np.ndarray:
    """Normalised ellipsoidal radius rho (rho < 1 inside) on an open mesh."""
    cz, cy, cx = centre_zyx
    rz, ry, rx = radii_zyx
    return np.sqrt(((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)


def _bbox(centre_zyx, radii_zyx, margin: float = 2.0) -> tuple[slice, slice, slice]:
    """Index box of the anatomy grid around an ellipsoid (clipped to the grid)."""
    return tuple(
        slice(int(max(0, math.floor(c - r - margin - o))), int(min(n, math.ceil(c + r + margin - o) + 1)))
        for c, r, o, n in zip(centre_zyx, radii_zyx, GRID_ORIGIN_MM, GRID_SHAPE, strict=True)
    )


def _ellipsoid_mask(centre_zyx, radii_zyx) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """(box, bool mask inside the box) of an ellipsoid on the anatomy grid."""
    box = _bbox(centre_zyx, radii_zyx)
    z, y, x = grid_coordinates()
    rho = _ellipsoid(z[box[0]], y[:, box[1]], x[:, :, box[2]], centre_zyx, radii_zyx)
    return box, rho < 1.0


def _mask_box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Bounding box (with `margin` voxels) of a boolean volume, None if empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.nonzero(mask.any(axis=other))[0]
        if hits.size == 0:
            return None
        box.append(slice(max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + margin + 1)))
    return tuple(box)


def _upsample2(volume: np.ndarray) -> np.ndarray:
    """Linear 2x upsampling of cell-centred data (each coarse voxel = 2 fine ones), per axis."""
    out = volume
    for axis in range(volume.ndim):
        a = np.moveaxis(out, axis, 0)
        prev = np.concatenate([a[:1], a[:-1]])
        nxt = np.concatenate([a[1:], a[-1:]])
        up = np.empty((2 * a.shape[0], *a.shape[1:]), np.float32)
        up[0::2] = 0.75 * a + 0.25 * prev
        up[1::2] = 0.75 * a + 0.25 * nxt
        out = np.moveaxis(up, 0, axis)
    return np.ascontiguousarray(out)


def _distance(mask: np.ndarray) -> np.ndarray:
    """Approximate Euclidean distance (mm) of each voxel to the nearest voxel outside `mask`.

    Computed on a 2 mm grid and linearly upsampled (errors < ~0.7 mm), 8x faster than at 1 mm;
    the layer thresholds it feeds (CSF, dura, skull, scalp) are millimetres thick.
    """
    pad = [(0, n % 2) for n in mask.shape]
    m = np.pad(mask, pad, mode="edge")
    coarse = m.reshape(m.shape[0] // 2, 2, m.shape[1] // 2, 2, m.shape[2] // 2, 2).mean(axis=(1, 3, 5)) > 0.5
    d2 = ndi.distance_transform_edt(coarse, sampling=2.0).astype(np.float32)
    d1 = _upsample2(d2)[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    d1 = np.maximum(d1 - 0.5, 0.0)
    d1[~mask] = 0.0
    return d1


def _soft_inside(rho: np.ndarray, radius_mm: float) -> np.ndarray:
    """Partial-volume indicator of rho < 1 with a ~1 mm edge for an object of size radius_mm."""
    return np.clip((1.0 - rho) * radius_mm + 0.5, 0.0, 1.0)


def _draw_tube(target: np.ndarray, points_zyx: np.ndarray, radii: np.ndarray) -> None:
    """Max-accumulate the partial-volume fraction of a tube along a polyline into `target`.

    points_zyx: (N, 3) MNI mm; radii: (N,) mm (linearly interpolated along each segment).
    """
    for p0, p1, r0, r1 in zip(points_zyx[:-1], points_zyx[1:], radii[:-1], radii[1:], strict=True):
        rmax = max(r0, r1) + 1.5
        lo = np.floor(np.minimum(p0, p1) - rmax - GRID_ORIGIN_MM).astype(int)
        hi = np.ceil(np.maximum(p0, p1) + rmax - GRID_ORIGIN_MM).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, GRID_SHAPE)
        if np.any(hi <= lo):
            continue
        zz = (GRID_ORIGIN_MM[0] + np.arange(lo[0], hi[0]))[:, None, None]
        yy = (GRID_ORIGIN_MM[1] + np.arange(lo[1], hi[1]))[None, :, None]
        xx = (GRID_ORIGIN_MM[2] + np.arange(lo[2], hi[2]))[None, None, :]
        seg = p1 - p0
        seg_len2 = float(seg @ seg) + 1e-9
        t = ((zz - p0[0]) * seg[0] + (yy - p0[1]) * seg[1] + (xx - p0[2]) * seg[2]) / seg_len2
        t = np.clip(t, 0.0, 1.0)
        d = np.sqrt(
            (zz - p0[0] - t * seg[0]) ** 2 + (yy - p0[1] - t * seg[1]) ** 2 + (xx - p0[2] - t * seg[2]) ** 2
        )
        radius = r0 + t * (r1 - r0)
        frac = np.clip(radius - d + 0.5, 0.0, 1.0).astype(np.float32)
        view = target[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        np.maximum(view, frac, out=view)


def _ray_surface(
    mask: np.ndarray, origin_zyx: np.ndarray, direction_zyx: np.ndarray, r_max: float = 140.0
) -> float:
    """Distance (mm) along a ray from `origin` to the last voxel of `mask` (0 if none)."""
    steps = np.arange(0.0, r_max, 0.5)
    pts = origin_zyx[None, :] + steps[:, None] * direction_zyx[None, :]
    idx = np.round(pts - GRID_ORIGIN_MM).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(GRID_SHAPE)), axis=1)
    inside = np.zeros(len(steps), bool)
    inside[ok] = mask[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
    hits = np.nonzero(inside)[0]
    return float(steps[hits[-1]]) if hits.size else 0.0


def _venous_system(cavity: np.ndarray) -> np.ndarray:
    """Fraction map of dural venous sinuses, deep veins and a fixed set of cortical veins."""
    veins = np.zeros(GRID_SHAPE, np.float32)
    # Superior sagittal sinus: in the midline along the inner skull surface, frontal -> torcular.
    origin = np.array([5.0, -20.0, 0.0])
    sss = []
    for theta in np.linspace(math.radians(25), math.radians(198), 60):
        direction = np.array([math.sin(theta), math.cos(theta), 0.0])
        r = _ray_surface(cavity, origin, direction)
        sss.append(origin + (r + 0.5) * direction)
    sss = np.array(sss)
    sss_radius = np.linspace(1.8, 4.5, len(sss))
    _draw_tube(veins, sss, sss_radius)
    torcular = sss[-1]
    # Transverse sinuses along the inner occipital surface, then sigmoid sinuses to the jugular.
    for side in (-1.0, 1.0):
        pts = []
        centre = np.array([torcular[0], -30.0, 0.0])
        for phi in np.linspace(0.0, math.radians(75), 16):
            z = torcular[0] - 14.0 * phi / math.radians(75)
            direction = np.array([0.0, -math.cos(phi), side * math.sin(phi)])
            o = np.array([z, centre[1], 0.0])
            r = _ray_surface(cavity, o, direction)
            pts.append(o + (r + 0.5) * direction)
        end = pts[-1]
        sigmoid = [
            end + np.array([-12.0, 12.0, -side * 3.0]),
            np.array([-45.0, -38.0, side * 44.0]),
            np.array([-62.0, -30.0, side * 40.0]),
            np.array([-85.0, -26.0, side * 38.0]),
        ]
        path = np.array(pts + sigmoid)
        _draw_tube(veins, path, np.full(len(path), 3.5))
    # Straight sinus (vein of Galen -> torcular) and internal cerebral veins.
    galen = np.array([6.0, -46.0, 0.0])
    _draw_tube(veins, np.array([galen, torcular]), np.array([2.2, 3.0]))
    for side in (-1.0, 1.0):
        _draw_tube(
            veins,
            np.array([[18.0, -4.0, side * 2.5], [14.0, -30.0, side * 2.0], galen]),
            np.array([1.1, 1.3, 1.5]),
        )
    # Cortical veins: a fixed pool climbing the convexity to the sagittal sinus.
    rng = np.random.default_rng(20090)
    centre = np.array([15.0, -20.0, 0.0])
    for _ in range(18):
        side = rng.choice([-1.0, 1.0])
        az = rng.uniform(math.radians(-75), math.radians(75))  # around the y axis, 0 = lateral
        elev = rng.uniform(math.radians(5), math.radians(35))
        y_dir = math.sin(az) * math.cos(elev)
        path = []
        for frac in np.linspace(0.0, 1.0, 14):
            e = elev + frac * (math.radians(86) - elev)
            direction = np.array([math.sin(e), y_dir * math.cos(e) / max(math.cos(elev), 1e-3), 0.0])
            direction[2] = side * math.sqrt(max(1.0 - direction[0] ** 2 - direction[1] ** 2, 0.0))
            direction /= np.linalg.norm(direction)
            r = _ray_surface(cavity, centre, direction)
            path.append(centre + (r - 0.8) * direction)
        radius = rng.uniform(0.7, 1.5)
        _draw_tube(veins, np.array(path), np.linspace(radius * 0.7, radius * 1.3, len(path)))
    return veins


def anatomy_cache_path() -> Path | None:
    """Disk cache of the built head model, or None when caching is off.

    `MAGPHASE_CACHE_DIR` picks the folder (default `~/.cache/magphase`); set it to "off" to
    disable. The file name carries a hash of this module's source and nilearn's version, so a
    changed model (this module or the tissue table) never loads a stale cache.
    """
    root = os.environ.get("MAGPHASE_CACHE_DIR", str(Path.home() / ".cache" / "magphase"))
    if root.strip().lower() in ("", "off", "none", "0"):
        return None
    import nilearn

    from magphase.simulate import tissue

    sources = Path(__file__).read_bytes() + Path(tissue.__file__).read_bytes()
    digest = hashlib.sha256(sources + nilearn.__version__.encode()).hexdigest()[:16]
    return Path(root) / f"head_anatomy_{digest}.npz"


@functools.lru_cache(maxsize=1)
def load_head_anatomy() -> HeadAnatomy:
    """The head model: loaded from the disk cache, else built (~20 s, ~2 GB peak) and cached.

    Cached once per process (lru_cache); read-only by convention (maps are shared by renders).
    """
    path = anatomy_cache_path()
    if path is not None and path.exists():
        try:
            return _load_cached(path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring unreadable anatomy cache %s (%s); rebuilding", path, err)
    anatomy = build_head_anatomy()
    if path is not None:
        try:
            _save_cached(anatomy, path)
        except OSError as err:
            log.warning("could not write the anatomy cache %s (%s)", path, err)
    return anatomy


def _save_cached(anatomy: HeadAnatomy, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"map_{k}": v for k, v in anatomy.maps.items()}
    arrays |= {f"site_{k}": v for k, v in anatomy.sites.items()}
    arrays |= {
        "chi_coarse": anatomy.chi_coarse,
        "sigma_coarse_15": anatomy.sigma_coarse[1.5],
        "sigma_coarse_30": anatomy.sigma_coarse[3.0],
        "chi_origin_mm": anatomy.chi_origin_mm,
        "surface_normals": anatomy.surface_normals,
        "ventricle_centre_mm": anatomy.ventricle_centre_mm,
    }
    # Written through a file handle: given a name, np.savez would append ".npz" to the temp name.
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        np.savez_compressed(fh, **arrays)


def _load_cached(path: Path) -> HeadAnatomy:
    with np.load(path) as data:
        maps = {k[4:]: data[k] for k in data.files if k.startswith("map_")}
        sites = {k[5:]: data[k] for k in data.files if k.startswith("site_")}
        missing = set(TISSUE_MAPS + EXTRA_MAPS + ("iron",)) - set(maps)
        if missing:
            raise KeyError(f"maps {sorted(missing)}")
        return HeadAnatomy(
            maps=maps,
            chi_coarse=data["chi_coarse"],
            sigma_coarse={1.5: data["sigma_coarse_15"], 3.0: data["sigma_coarse_30"]},
            chi_origin_mm=data["chi_origin_mm"],
            sites=sites,
            surface_normals=data["surface_normals"],
            ventricle_centre_mm=data["ventricle_centre_mm"],
        )


def build_head_anatomy() -> HeadAnatomy:
    """Build the head model on the anatomy grid from the templates (see module docstring)."""
    log.info("building head anatomy from the MNI152 templates")
    gm, wm, brain = _load_templates()
    z, y, x = grid_coordinates()

    # Brainstem -> cervical cord below the template's lower edge (z = -72).
    z_bottom = _TEMPLATE_OFFSET[0]
    bottom = brain[z_bottom + 1]
    cy, cx = ndi.center_of_mass(bottom)
    for k in range(z_bottom + 1):
        zz = GRID_ORIGIN_MM[0] + k
        radius = 5.0 + 2.0 * (zz + 120.0) / 48.0
        cyl = (y[0] - (GRID_ORIGIN_MM[1] + cy) - 0.25 * (zz + 72.0)) ** 2 + (
            x[0] - (GRID_ORIGIN_MM[2] + cx)
        ) ** 2 < radius**2
        brain[k] |= cyl
        wm[k] = np.where(cyl, 0.8, wm[k])
        gm[k] = np.where(cyl, 0.15, gm[k])

    # Template fractions are probabilities; keep gm + wm <= 1 inside the brain.
    total = gm + wm
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0)
    gm *= scale
    wm *= scale
    gm[~brain] = 0.0
    wm[~brain] = 0.0
    gm, wm = _sharpen_tissue_classes(gm, wm)

    # Deep grey nuclei and their iron (taken from the GM probability they overlap).
    deep = np.zeros(GRID_SHAPE, np.float32)
    iron = np.zeros(GRID_SHAPE, np.float32)
    for _name, (cxm, cym, czm), (rx, ry, rz), iron_ppm in DEEP_NUCLEI:
        for sx in (-1.0, 1.0):
            sl = tuple(
                slice(int(max(0, c - r - 3 - o)), int(min(n, c + r + 4 - o)))
                for c, r, o, n in zip(
                    (czm, cym, sx * cxm), (rz, ry, rx), GRID_ORIGIN_MM, GRID_SHAPE, strict=True
                )
            )
            rho = _ellipsoid(z[sl[0]], y[:, sl[1]], x[:, :, sl[2]], (czm, cym, sx * cxm), (rz, ry, rx))
            inside = _soft_inside(rho, min(rx, ry, rz)) * np.clip(gm[sl] + 0.5 * wm[sl], 0.0, 1.0)
            np.maximum(deep[sl], inside, out=deep[sl])
            iron[sl] = np.where(inside > 0.3, np.maximum(iron[sl], iron_ppm), iron[sl])
    deep = np.minimum(deep, gm + wm)
    take_gm = np.minimum(deep, gm)
    gm -= take_gm
    wm -= deep - take_gm

    # Distances used for CSF/skull/scalp layering.
    depth = _distance(brain)
    dilated = _distance(~brain) <= 6.0
    cavity = (_distance(dilated) > 6.0) | brain  # morphological closing, radius 6
    del dilated
    d_cav = ndi.distance_transform_edt(~cavity).astype(np.float32)  # thin layers: full resolution

    csf_in_brain = np.clip(1.0 - gm - wm - deep, 0.0, 1.0) * brain
    ventricles = (csf_in_brain > 0.5) & (depth > 8.0) & (np.abs(x) < 40) & (z > -10) & (z < 40)
    # Keep the ventricular system (largest connected CSF bodies), not deep sulcal CSF.
    components, n_comp = ndi.label(ventricles)
    if n_comp > 1:
        sizes = np.bincount(components.ravel())[1:]
        keep_ids = np.nonzero(sizes >= 0.1 * sizes.max())[0] + 1
        ventricles = np.isin(components, keep_ids)
    del components
    vz, vy, vx = ndi.center_of_mass(ventricles)
    ventricle_centre = np.array([vz, vy, vx]) + GRID_ORIGIN_MM

    # Skull thickness varies: thin temporal squama, thicker frontal/occipital bone.
    lateral = x**2 / (x**2 + (y + 18.0) ** 2 + 1.0)
    skull_t = 7.0 - 3.5 * lateral * np.exp(-(((z + 5.0) / 25.0) ** 2))
    inner = 2.0  # CSF layer; then 0.8 mm dura
    labels = np.full(GRID_SHAPE, _L_AIR, np.uint8)

    # Head envelope: the vault follows the cranial cavity; below the skull base a soft-tissue
    # column (the union of the cavity's sections up to 45 mm above) holds face and neck.
    low = ndi.maximum_filter1d(cavity, size=45, axis=0, origin=-22, mode="constant")
    low &= z < -12
    neck = ((y + 22.0) / 58.0) ** 2 + (x / 52.0) ** 2 < 1.0
    low |= neck & (z < -60)
    for centre, radii in (
        ((-48.0, 45.0, 0.0), (36.0, 42.0, 50.0)),  # maxilla / cheeks
        ((-50.0, 92.0, 0.0), (20.0, 16.0, 11.0)),  # nose
        ((-34.0, 62.0, 0.0), (20.0, 22.0, 48.0)),  # orbital rims, eyelids
    ):
        box, inside = _ellipsoid_mask(centre, radii)
        low[box] |= inside
    scalp_t = 6.0 + 4.0 * lateral * np.exp(-(((z - 5.0) / 28.0) ** 2) - ((y + 5.0) / 40.0) ** 4)
    head_core = cavity | low
    head = (d_cav <= inner + 0.8 + skull_t + scalp_t) | head_core
    d_surface = ndi.distance_transform_edt(head).astype(np.float32)

    labels[head] = _L_SOFT
    labels[head & (d_surface > 1.5) & (d_surface <= 5.5)] = _L_FAT
    labels[head & (d_surface <= 1.5)] = _L_MUSCLE
    vault = ~low | (d_cav <= inner + 0.8 + skull_t)
    galea = head & vault & (d_cav > inner + 0.8 + skull_t) & (d_surface > 5.5)
    labels[galea] = _L_MUSCLE
    dd = d_cav - inner - 0.8
    skull = (d_cav > inner + 0.8) & (dd <= skull_t) & head
    labels[skull] = _L_BONE
    labels[skull & (dd > 1.4) & (dd < skull_t - 1.4)] = _L_DIPLOE
    labels[(d_cav > inner) & (d_cav <= inner + 0.8) & head] = _L_DURA
    labels[(d_cav <= inner) & head] = _L_CSF
    labels[cavity] = _L_CSF
    labels[brain] = _L_BRAIN
    falx = (np.abs(x) < 0.7) & (labels == _L_CSF) & (z > -5) & (y > -100) & (y < 55) & cavity
    labels[falx] = _L_DURA

    # Skull base: clivus and petrous bones; airways and sinuses with bony walls; orbits.
    not_cavity = ~cavity
    clivus_pts = np.array([[-28.0, 4.0, 0.0], [-62.0, -22.0, 0.0]])
    bone_extra = np.zeros(GRID_SHAPE, np.float32)
    _draw_tube(bone_extra, clivus_pts, np.array([7.0, 8.0]))
    for side in (-1.0, 1.0):
        _draw_tube(
            bone_extra,
            np.array([[-36.0, -8.0, side * 22.0], [-38.0, -32.0, side * 42.0]]),
            np.array([6.0, 8.0]),
        )
    labels[(bone_extra > 0.5) & not_cavity & head] = _L_BONE

    def carve(mask: np.ndarray, label: int, wall_mm: float = 0.0) -> None:
        """Assign `label` inside `mask` (outside the cranial cavity), with a bony wall."""
        zs, ys, xs = np.nonzero(mask)
        if zs.size == 0:
            return
        m = 3
        box = tuple(
            slice(max(0, int(a.min()) - m), min(n, int(a.max()) + m + 1))
            for a, n in zip((zs, ys, xs), GRID_SHAPE, strict=True)
        )
        allowed = not_cavity[box] & head[box]
        inside = mask[box] & allowed
        sub = labels[box]
        if wall_mm > 0:
            wall = ndi.binary_dilation(inside, iterations=int(round(wall_mm))) & ~inside & allowed
            sub[wall & (sub != _L_VITREOUS)] = _L_BONE
        sub[inside] = label

    facial = np.zeros(GRID_SHAPE, bool)
    # Orbits: globe, retro-bulbar fat cone, optic nerve, bony orbit.
    for side in (-1.0, 1.0):
        globe_c = np.array([-38.0, 56.0, side * 31.0])
        apex = np.array([-30.0, 20.0, side * 14.0])
        cone = np.zeros(GRID_SHAPE, np.float32)
        _draw_tube(cone, np.array([globe_c, apex]), np.array([15.0, 4.0]))
        cone_mask = cone > 0.5
        carve(cone_mask, _L_FAT, wall_mm=2.0)
        nerve = np.zeros(GRID_SHAPE, np.float32)
        _draw_tube(nerve, np.array([globe_c - np.array([0.0, 8.0, 0.0]), apex]), np.array([2.2, 2.0]))
        carve(nerve > 0.5, _L_NERVE)
        box, inside = _ellipsoid_mask(globe_c, (11.5, 12.0, 11.5))
        globe = np.zeros(GRID_SHAPE, bool)
        globe[box] = inside
        carve(globe, _L_VITREOUS)
        facial |= globe
    sinus_specs = (
        # (centre z y x, radii, label, wall mm, facial?)
        ((-2.0, 78.0, 0.0), (11.0, 6.0, 15.0), _L_AIRIN, 1.5, False),  # frontal
        ((-34.0, 44.0, 0.0), (11.0, 16.0, 10.0), _L_ETHMOID, 1.0, True),  # ethmoid
        ((-32.0, 14.0, 0.0), (10.0, 11.0, 13.0), _L_AIRIN, 1.5, False),  # sphenoid
        ((-64.0, 42.0, -28.0), (15.0, 17.0, 13.0), _L_AIRIN, 1.5, True),  # maxillary right
        ((-64.0, 42.0, 28.0), (15.0, 17.0, 13.0), _L_AIRIN, 1.5, True),  # maxillary left
        ((-60.0, 52.0, 0.0), (18.0, 32.0, 9.0), _L_AIRIN, 1.5, True),  # nasal cavity
        ((-40.0, -28.0, -50.0), (9.0, 10.0, 8.0), _L_MASTOID, 0.0, False),
        ((-40.0, -28.0, 50.0), (9.0, 10.0, 8.0), _L_MASTOID, 0.0, False),
    )
    for centre, radii, label, wall, is_facial in sinus_specs:
        box, inside = _ellipsoid_mask(centre, radii)
        mask = np.zeros(GRID_SHAPE, bool)
        mask[box] = inside
        carve(mask, label, wall_mm=wall)
        if is_facial:
            facial |= mask
    # External auditory canals: air tubes (~25 mm inside the head, 6-8 mm wide) from the concha
    # medially to the tympanic membrane, in front of and below the mastoid air cells.
    for side in (-1.0, 1.0):
        canal = np.zeros(GRID_SHAPE, np.float32)
        path = np.array(
            [[-42.0, -20.0, side * 50.0], [-40.0, -17.0, side * 66.0], [-38.0, -15.0, side * 92.0]]
        )
        _draw_tube(canal, path, np.array([3.0, 3.5, 4.0]))
        carve(canal > 0.5, _L_AIRIN)
    septum = (np.abs(x) < 1.2) & (labels == _L_AIRIN) & (y > 25) & (z < -40)
    labels[septum] = _L_BONE
    pharynx = (((y - 8.0) / 9.0) ** 2 + (x / 13.0) ** 2 < 1.0) & (z < -64)
    labels[pharynx & head] = _L_AIRIN
    facial &= head

    # Labels -> partial-volume fractions (Gaussian, sigma 0.5 mm, keeps the sum at 1).
    fractions = {name: np.zeros(GRID_SHAPE, np.float32) for name in TISSUE_MAPS}
    smooth_brain = ndi.gaussian_filter((labels == _L_BRAIN).astype(np.float32), 0.5, truncate=3.0)
    fractions["gm"] += gm * smooth_brain
    fractions["wm"] += wm * smooth_brain
    fractions["deep_gm"] += deep * smooth_brain
    fractions["csf"] += csf_in_brain * smooth_brain
    for label, composition in _LABEL_COMPOSITION.items():
        ind = labels == label
        box = _mask_box(ind, margin=3)
        if box is None:
            continue
        smooth = ndi.gaussian_filter(ind[box].astype(np.float32), 0.5, truncate=3.0)
        for tissue, weight in composition.items():
            fractions[tissue][box] += weight * smooth
    # Choroid plexus in the ventricular atria; veins override whatever they cross.
    for side in (-1.0, 1.0):
        centre, radii = (16.0, -40.0, side * 27.0), (6.0, 9.0, 6.0)
        box = _bbox(centre, radii)
        rho = _ellipsoid(z[box[0]], y[:, box[1]], x[:, :, box[2]], centre, radii)
        ch = 0.7 * _soft_inside(rho, 5.0) * fractions["csf"][box] * (depth[box] > 4.0)
        fractions["choroid"][box] += ch
        fractions["csf"][box] -= ch
    veins = _venous_system(cavity)
    keep = 1.0 - veins
    for name in TISSUE_MAPS:
        fractions[name] *= keep
    fractions["vein"] += veins

    # Susceptibility relative to air, then block-averaged to the field grid.
    chi = np.zeros(GRID_SHAPE, np.float32)
    head_fraction = np.zeros(GRID_SHAPE, np.float32)
    for name in TISSUE_MAPS:
        chi += fractions[name] * chi_relative_to_air(name)
        head_fraction += fractions[name]
    chi += iron * fractions["deep_gm"]
    chi_coarse, chi_origin = _block_average(chi, int(CHI_GRID_SPACING_MM))
    del chi
    sigma_coarse = {}
    for b0 in SUPPORTED_FIELD_STRENGTHS_T:
        sigma = np.zeros(GRID_SHAPE, np.float32)
        for name in TISSUE_MAPS:
            sigma += fractions[name] * np.float32(CONDUCTIVITY_S_PER_M[name][b0])
        sigma_coarse[b0], _ = _block_average(sigma, int(CHI_GRID_SPACING_MM))
        del sigma

    maps: dict[str, np.ndarray] = {}
    for name in TISSUE_MAPS:
        maps[name] = _to_uint8(fractions[name])
    maps["brain"] = _to_uint8(smooth_brain)
    maps["head"] = _to_uint8(head_fraction - fractions["air"])
    maps["facial"] = _to_uint8(ndi.gaussian_filter(facial.astype(np.float32), 0.5))
    maps["iron"] = np.clip(np.round(iron / IRON_SCALE_PPM), 0, 255).astype(np.uint8)

    sites, normals = _lesion_sites(fractions, depth, d_cav, ventricles, brain, z, y, x)
    log.info("head anatomy ready")
    return HeadAnatomy(
        maps=maps,
        chi_coarse=chi_coarse,
        chi_origin_mm=chi_origin,
        sigma_coarse=sigma_coarse,
        sites=sites,
        surface_normals=normals,
        ventricle_centre_mm=ventricle_centre.astype(np.float32),
    )


SHARPEN_GAMMA = 1.8
"""Exponent of the sharpening of template tissue probabilities (1 = the template's own blur)."""


def _sharpen(p: np.ndarray) -> np.ndarray:
    """Steepen a probability towards 0/1 about 0.5: p^g / (p^g + (1 - p)^g)."""
    p = np.clip(p, 0.0, 1.0)
    a = p**SHARPEN_GAMMA
    return a / np.maximum(a + (1.0 - p) ** SHARPEN_GAMMA, 1e-12)


def _sharpen_tissue_classes(gm: np.ndarray, wm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sharpen the WM / GM / CSF partition of the MNI average towards an individual's contrast.

    The 2009a template is an average of 152 brains: its tissue probabilities are blurred over a few
    millimetres, so a rendered slice looks smoother than one person's scan. WM is sharpened against
    the rest, then GM against CSF within the rest; fractions still sum to the brain's total.
    """
    total = np.clip(gm + wm, 0.0, 1.0)
    inside = total > 0
    wm_s = np.where(inside, _sharpen(wm), 0.0)
    rest = 1.0 - wm_s
    gm_share = np.where(total - wm > 1e-6, _sharpen(gm / np.maximum(1.0 - wm, 1e-6)), 0.0)
    gm_s = np.where(inside, rest * gm_share, 0.0)
    return gm_s.astype(np.float32), wm_s.astype(np.float32)


def _to_uint8(fraction: np.ndarray) -> np.ndarray:
    return np.clip(np.round(fraction * 255.0), 0, 255).astype(np.uint8)


def _block_average(volume: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Average `factor`^3 blocks; returns (coarse volume, MNI mm of coarse voxel 0's centre)."""
    shape = [n // factor for n in volume.shape]
    v = volume[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor]
    v = v.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))
    origin = GRID_ORIGIN_MM + (factor - 1) / 2.0
    return v.astype(np.float32), origin


def _lesion_sites(fractions, depth, d_cav, ventricles, brain, z, y, x):
    """Candidate lesion centres (MNI mm, z y x) per site kind, subsampled to <= 20000 each."""
    rng = np.random.default_rng(7)
    wm, gm, deep, csf = fractions["wm"], fractions["gm"], fractions["deep_gm"], fractions["csf"]
    cerebrum = (z > -25) | (y > -40)
    d_vent = _distance(~ventricles)
    masks = {
        "deep_wm": (wm > 0.85) & (depth > 12) & cerebrum,
        "periventricular": (wm > 0.6) & (d_vent > 2) & (d_vent < 10) & cerebrum,
        "juxtacortical": (wm > 0.3) & (gm > 0.3) & (depth > 4) & cerebrum,
        "deep_gm": (deep > 0.5) & (np.abs(z) < 25),
        "hemisphere": ((wm + gm + deep) > 0.85) & (depth > 15) & cerebrum & (z > -20),
        "parenchyma": ((wm + gm + deep) > 0.8) & (depth > 6) & cerebrum,
        "ventricle": ventricles & (csf > 0.8),
    }

    def points(idx: np.ndarray) -> np.ndarray:
        return (np.stack(np.unravel_index(idx, GRID_SHAPE), axis=1) + GRID_ORIGIN_MM).astype(np.float32)

    sites = {}
    for name, mask in masks.items():
        idx = np.flatnonzero(mask)
        if idx.size > 20000:
            idx = rng.choice(idx, 20000, replace=False)
        sites[name] = points(idx)
    # Brain-surface points of the convexity, with outward normals (gradient of a smoothed
    # signed distance, by central differences at the chosen points only).
    surface = brain & (depth <= 1.0) & (z > -15)
    idx = np.flatnonzero(surface)
    idx = rng.choice(idx, min(20000, idx.size), replace=False)
    signed = ndi.gaussian_filter(d_cav - depth, 2.0)
    ijk = np.stack(np.unravel_index(idx, GRID_SHAPE), axis=1)
    normals = np.zeros((len(idx), 3), np.float32)
    for axis in range(3):
        hi = ijk.copy()
        lo = ijk.copy()
        hi[:, axis] = np.minimum(hi[:, axis] + 1, GRID_SHAPE[axis] - 1)
        lo[:, axis] = np.maximum(lo[:, axis] - 1, 0)
        normals[:, axis] = signed[tuple(hi.T)] - signed[tuple(lo.T)]
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-6)
    sites["surface"] = points(idx)
    return sites, normals


# ---------------------------------------------------------------------------------------------
# Subject geometry: scanner (patient) mm -> anatomy (MNI) mm.


@dataclass(frozen=True)
class LocalScaling:
    """A smooth local expansion about `centre_mm` (anatomy space): factor > 1 enlarges.

    Points sample the anatomy at centre + (m - centre) * factor ** -w(m), w a Gaussian of width
    `sigma_mm` (z, y, x). Used for ventricle size and lesion mass effect.
    """

    centre_mm: np.ndarray
    sigma_mm: np.ndarray
    factor: float


@dataclass(frozen=True)
class SubjectGeometry:
    """Random head pose, size and shape of one subject.

    scanner -> anatomy:  m = ref + diag(1/scale) R^T (p - shift);  m += elastic(m);
    then each LocalScaling in order. Vectors are (z, y, x) mm; R rotates anatomy into the scanner.
    """

    rotation: np.ndarray
    scale: np.ndarray
    shift_mm: np.ndarray
    elastic_mm: np.ndarray  # (3, gz, gy, gx) displacement on a 6 mm grid over the anatomy grid
    scalings: tuple[LocalScaling, ...]

    def with_scalings(self, extra: tuple[LocalScaling, ...]) -> SubjectGeometry:
        return SubjectGeometry(
            self.rotation, self.scale, self.shift_mm, self.elastic_mm, self.scalings + extra
        )


ELASTIC_SPACING_MM = 6.0
# Gaussian reach (z, y, x) of the ventricular expansion of the subject (age) and of enlarged ventricles.
VENTRICLE_SCALING_SIGMA_MM = np.array([16.0, 30.0, 20.0], np.float32)


def _rotation_zyx(pitch: float, roll: float, yaw: float) -> np.ndarray:
    """Rotation (acting on (z, y, x) vectors): pitch about x (nodding), roll about y, yaw about z."""
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    cy, sy = math.cos(yaw), math.sin(yaw)
    about_x = np.array([[cp, sp, 0.0], [-sp, cp, 0.0], [0.0, 0.0, 1.0]])  # mixes z and y
    about_y = np.array([[cr, 0.0, sr], [0.0, 1.0, 0.0], [-sr, 0.0, cr]])  # mixes z and x
    about_z = np.array([[1.0, 0.0, 0.0], [0.0, cy, sy], [0.0, -sy, cy]])  # mixes y and x
    return about_z @ about_y @ about_x


def sample_subject_geometry(rng: np.random.Generator, anatomy: HeadAnatomy) -> SubjectGeometry:
    """Draw a subject: head size/shape, pose in the coil, elastic shape change, ventricle size."""
    global_scale = rng.normal(1.0, 0.04)
    scale = np.clip(global_scale * rng.normal(1.0, 0.03, size=3), 0.86, 1.14)
    rotation = _rotation_zyx(
        math.radians(rng.normal(0.0, 3.0)),
        math.radians(rng.normal(0.0, 2.0)),
        math.radians(rng.normal(0.0, 3.0)),
    )
    shift = rng.normal(0.0, 1.0, size=3) * np.array([3.0, 6.0, 3.0])
    # Smooth elastic displacement: white noise on a 30 mm lattice, cubic-interpolated to 6 mm.
    ctrl_shape = tuple(int(math.ceil(n / 30.0)) + 1 for n in GRID_SHAPE)
    ctrl = rng.normal(0.0, 2.2, size=(3, *ctrl_shape))
    fine_shape = tuple(int(math.ceil(n / ELASTIC_SPACING_MM)) + 1 for n in GRID_SHAPE)
    elastic = np.stack(
        [ndi.zoom(c, [f / s for f, s in zip(fine_shape, ctrl_shape, strict=True)], order=3) for c in ctrl]
    ).astype(np.float32)
    ventricle = LocalScaling(
        centre_mm=anatomy.ventricle_centre_mm,
        sigma_mm=VENTRICLE_SCALING_SIGMA_MM.copy(),
        factor=float(np.exp(rng.normal(0.12, 0.22))),
    )
    return SubjectGeometry(rotation, scale, shift, elastic, (ventricle,))


def _apply_scaling(m: np.ndarray, s: LocalScaling) -> np.ndarray:
    d = m - s.centre_mm
    w = np.exp(-0.5 * np.sum((d / s.sigma_mm) ** 2, axis=-1, keepdims=True))
    return s.centre_mm + d * np.power(s.factor, -w)


def scanner_to_anatomy(points_mm: np.ndarray, geometry: SubjectGeometry, *, local: bool = True) -> np.ndarray:
    """Map scanner points (..., 3) (z, y, x mm) to anatomy (MNI) mm for sampling the head model."""
    p = np.asarray(points_mm, dtype=np.float32)
    linear = (geometry.rotation / geometry.scale[:, None]).T.astype(np.float32)  # diag(1/s) R^T, row form
    m = (p - geometry.shift_mm.astype(np.float32)) @ linear.T + HEAD_REFERENCE_MNI.astype(np.float32)
    flat = m.reshape(-1, 3)
    idx = ((flat - GRID_ORIGIN_MM.astype(np.float32)) / ELASTIC_SPACING_MM).T
    disp = np.stack(
        [ndi.map_coordinates(geometry.elastic_mm[c], idx, order=1, mode="nearest") for c in range(3)], 1
    )
    m = (flat + disp).reshape(m.shape)
    if local:
        for s in geometry.scalings:
            m = _apply_scaling(m, s)
    return m


def anatomy_to_scanner(points_mm: np.ndarray, geometry: SubjectGeometry, iterations: int = 6) -> np.ndarray:
    """Inverse of `scanner_to_anatomy` without local scalings (fixed-point iteration), (N, 3)."""
    target = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
    forward = geometry.rotation * geometry.scale[None, :]  # R diag(s)
    p = (target - HEAD_REFERENCE_MNI) @ forward.T + geometry.shift_mm
    for _ in range(iterations):
        err = target - scanner_to_anatomy(p, geometry, local=False)
        p = p + err @ forward.T
    return p


def map_slices(
    z_mm: np.ndarray, y_mm: np.ndarray, x_mm: np.ndarray, geometry: SubjectGeometry, step: int = 4
) -> np.ndarray:
    """Anatomy (MNI) mm of the scanner grid z_mm x y_mm x x_mm, float32 (len z, len y, len x, 3).

    The warp is smooth, so it is evaluated every `step` points along y and x (and z when the
    axis is long, as for the field grid) and linearly interpolated in between (corner-aligned).
    """
    axes = [np.asarray(a, np.float64) for a in (z_mm, y_mm, x_mm)]
    steps = [step if len(a) > 3 * step else 1 for a in axes]
    steps[0] = steps[0] if len(axes[0]) > 40 else 1  # slices are few: map each exactly
    coarse_axes = []
    for a, st in zip(axes, steps, strict=True):
        n = len(a)
        m = max(2, int(math.ceil((n - 1) / st)) + 1) if n > 1 else 1
        coarse_axes.append(np.interp(np.linspace(0, n - 1, m), np.arange(n), a) if n > 1 else a)
    grid = np.stack(np.meshgrid(*coarse_axes, indexing="ij"), axis=-1).astype(np.float32)
    coarse = scanner_to_anatomy(grid, geometry)
    shape = tuple(len(a) for a in axes)
    if coarse.shape[:3] == shape:
        return coarse
    factors = [n / c for n, c in zip(shape, coarse.shape[:3], strict=True)]
    out = np.empty((*shape, 3), np.float32)
    for k in range(3):
        out[..., k] = ndi.zoom(coarse[..., k], factors, order=1, grid_mode=False, mode="nearest")
    return out


def sample_maps(
    anatomy: HeadAnatomy, anatomy_points_mm: np.ndarray, names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Trilinearly sample uint8 maps at anatomy points (..., 3); returns float32 in [0, 1]."""
    shape = anatomy_points_mm.shape[:-1]
    idx = (anatomy_points_mm.reshape(-1, 3) - GRID_ORIGIN_MM.astype(np.float32)).T
    out = {}
    for name in names:
        values = ndi.map_coordinates(
            anatomy.maps[name], idx, order=1, mode="constant", cval=0, output=np.float32
        )
        scale = IRON_SCALE_PPM if name == "iron" else 1.0 / 255.0
        out[name] = (values * scale).reshape(shape)
    return out


def sample_coarse(volume: np.ndarray, anatomy: HeadAnatomy, anatomy_points_mm: np.ndarray) -> np.ndarray:
    """Trilinear sample (0 outside) of a volume on the coarse chi grid at anatomy points (..., 3)."""
    shape = anatomy_points_mm.shape[:-1]
    idx = (
        (anatomy_points_mm.reshape(-1, 3) - anatomy.chi_origin_mm.astype(np.float32)) / CHI_GRID_SPACING_MM
    ).T
    values = ndi.map_coordinates(volume, idx, order=1, mode="constant", cval=0.0, output=np.float32)
    return values.reshape(shape)


def sample_chi(anatomy: HeadAnatomy, anatomy_points_mm: np.ndarray) -> np.ndarray:
    """Susceptibility relative to air (ppm) at anatomy points (..., 3), trilinear on the coarse map."""
    shape = anatomy_points_mm.shape[:-1]
    idx = (
        (anatomy_points_mm.reshape(-1, 3) - anatomy.chi_origin_mm.astype(np.float32)) / CHI_GRID_SPACING_MM
    ).T
    values = ndi.map_coordinates(
        anatomy.chi_coarse, idx, order=1, mode="constant", cval=0.0, output=np.float32
    )
    return values.reshape(shape)
