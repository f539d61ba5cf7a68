"""Tiny head phantoms in fastMRI format for the prepare tests (known brain and lesion masks).

A slice is an ellipse of brain (textured, with ventricles) inside a dark CSF rim, a dark skull
ring and a bright scalp ring, with a smooth phase; 4 smooth complex coil maps; 2x readout
oversampling as fastMRI stores brain k-space. Everything is seeded and small (192 x 192).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from magphase.io.annotations import array_to_box
from magphase.io.fastmri import write_volume
from magphase.io.ismrmrd import AcquisitionHeader
from magphase.mri.fft import fft2c

RECON = (192, 192)


def head_phantom(
    rng: np.random.Generator,
    n_slices: int = 4,
    shape: tuple[int, int] = RECON,
    lesion: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complex head images with truth masks.

    Args:
        lesion: ``(slice, row, col, radius)`` of a bright disc lesion, or None.
    Returns:
        ``(images complex64 (S, H, W), brain bool (S, H, W), lesion bool (S, H, W))``;
        the brain mask includes the CSF rim and the ventricles (as an anatomical brain mask does).
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3)
    images = np.zeros((n_slices, h, w), np.complex64)
    brains = np.zeros((n_slices, h, w), bool)
    lesions = np.zeros((n_slices, h, w), bool)
    for s in range(n_slices):
        z = (s - (n_slices - 1) / 2) / n_slices
        shrink = np.sqrt(max(0.3, 1 - 1.2 * z * z))
        ry, rx = 0.46 * h * shrink, 0.40 * w * shrink
        r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        texture = ndimage.gaussian_filter(rng.standard_normal((h, w)), 3)
        texture /= np.abs(texture).max() + 1e-9
        mag = np.zeros((h, w))
        mag[r < 1.0] = 0.8  # scalp and fat
        mag[r < 0.90] = 0.03  # skull
        mag[r < 0.84] = 0.15  # CSF rim
        mag[r < 0.80] = 0.55 + 0.12 * texture[r < 0.80]  # brain
        ventricles = ((yy - cy) / (0.18 * ry)) ** 2 + ((xx - cx) / (0.10 * rx)) ** 2 < 1
        mag[ventricles] = 0.12
        brains[s] = r < 0.84
        if lesion is not None and lesion[0] == s:
            _, lr, lc, rad = lesion
            disc = (yy - lr) ** 2 + (xx - lc) ** 2 <= rad * rad
            mag[disc] = 1.0
            lesions[s] = disc
        phase = 0.8 * (xx - cx) / w + 0.5 * ((yy - cy) / h) ** 2 + 0.3 * s / n_slices
        images[s] = (mag * np.exp(1j * 2 * np.pi * phase)).astype(np.complex64)
    return images, brains, lesions


def coil_maps(n_coils: int, shape: tuple[int, int]) -> np.ndarray:
    """Smooth complex Gaussian sensitivities around the head, ``(C, H, W)``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    maps = []
    for c in range(n_coils):
        a = 2 * np.pi * c / n_coils
        py, px = h / 2 + 0.6 * h * np.sin(a), w / 2 + 0.6 * w * np.cos(a)
        amp = np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * (0.55 * h) ** 2))
        maps.append(amp * np.exp(1j * (a + 0.01 * (xx - w / 2))))
    return np.asarray(maps, np.complex64)


def write_phantom_volume(
    path: Path,
    rng: np.random.Generator,
    n_slices: int = 4,
    n_coils: int = 4,
    shape: tuple[int, int] = RECON,
    lesion: tuple[int, int, int, int] | None = None,
    noise: float = 0.002,
    acquisition: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write a phantom as fastMRI multi-coil k-space (2x readout oversampling); return its truth."""
    images, brains, lesions = head_phantom(rng, n_slices, shape, lesion)
    h, w = shape
    maps = coil_maps(n_coils, (2 * h, w))
    padded = np.zeros((n_slices, 2 * h, w), np.complex64)
    padded[:, h // 2 : h // 2 + h] = images
    coils = padded[:, None] * maps[None]
    kspace = fft2c(coils).astype(np.complex64)
    kspace += (noise * (rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape))).astype(
        np.complex64
    )
    header = AcquisitionHeader(
        encoded_matrix=(2 * h, w, 1),
        encoded_fov_mm=(440.0, 220.0, 5.0),
        recon_matrix=(h, w, 1),
        recon_fov_mm=(220.0, 220.0, 5.0),
        field_strength_t=3.0,
        tr_ms=9000.0,
        te_ms=100.0,
    )
    write_volume(path, kspace, header, attrs={"acquisition": acquisition} if acquisition else None)
    return images, brains, lesions


def lesion_box_row(stem: str, lesion: tuple[int, int, int, int], image_height: int, label: str) -> str:
    """A fastMRI+ CSV row boxing a disc lesion (flipped-y convention)."""
    s, r, c, rad = lesion
    x, y, width, height = array_to_box(r - rad, r + rad + 1, c - rad, c + rad + 1, image_height)
    return f"{stem},{s},No,{x},{y},{width},{height},{label}"


def make_dataset(root: Path, rng: np.random.Generator, n_slices: int = 4) -> dict[str, object]:
    """A raw folder with 2 normal, 2 abnormal, 1 excluded, 3 unlabeled volumes and one corrupt file.

    Returns a dict with ``raw``, ``csv``, ``lesions`` ({stem: (slice, row, col, radius)}) and
    ``truth`` ({stem: (brain, lesion masks)}).
    """
    raw = root / "raw"
    raw.mkdir(parents=True)
    rows = ["file,slice,study_level,x,y,width,height,label"]
    lesions: dict[str, tuple[int, int, int, int]] = {}
    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    specs = [
        ("file_brain_AXFLAIR_200_1001", "normal"),
        ("file_brain_AXT1_201_1002", "normal"),
        ("file_brain_AXFLAIR_200_1003", "abnormal"),
        ("file_brain_AXT1POST_201_1004", "abnormal"),
        ("file_brain_AXT1_200_1005", "excluded"),
        ("file_brain_AXT2_200_1006", "unlabeled"),
        ("file_brain_AXT2_201_1007", "unlabeled"),
        ("file_brain_AXT1PRE_202_1008", "unlabeled"),
    ]
    for stem, label in specs:
        lesion = None
        if label == "abnormal":
            lesion = (n_slices // 2, RECON[0] // 2 + 25, RECON[1] // 2 - 20, 6)
            lesions[stem] = lesion
            rows.append(lesion_box_row(stem, lesion, RECON[0], "Nonspecific lesion"))
        elif label == "normal":
            rows.append(f"{stem},0,Yes,,,,,Normal for age")
        elif label == "excluded":
            rows.append(f"{stem},1,No,60,60,10,10,Possible artifact")
        _, brains, lesion_mask = write_phantom_volume(raw / f"{stem}.h5", rng, n_slices, lesion=lesion)
        truth[stem] = (brains, lesion_mask)
    (raw / "file_brain_AXT2_209_1009.h5").write_bytes(b"this is not an HDF5 file")
    csv = root / "brain.csv"
    csv.write_text("\n".join(rows) + "\n")
    return {"raw": raw, "csv": csv, "lesions": lesions, "truth": truth}
