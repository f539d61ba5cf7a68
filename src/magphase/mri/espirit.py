"""ESPIRiT coil sensitivity estimation (Uecker et al., MRM 71:990, 2014) in torch.

Batched over slices and run on the device of the input (CUDA when given a CUDA tensor).

Algorithm, per slice (k-space ``(C, H, W)``, last two axes = readout, phase encode):

1. calibration region: the centre ``calib_size x calib_size`` k-space samples (DC at ``N // 2``);
2. calibration (block-Hankel) matrix ``A``: one row per ``kernel_size x kernel_size`` window,
   ``C * kernel_size**2`` columns;
3. the rows ``v_j`` of ``V^H`` with ``s_j > threshold * s_max`` span the signal subspace (every
   calibration window, as a vector over (coil, offset), lies in their span);
4. the ESPIRiT operator in image space is, per pixel ``u``, the ``C x C`` matrix
   ``G(u) = k**-2 * sum_j w_j(u) w_j(u)^H`` with ``w_{j,c}(u) = sum_p v_j[c, p] exp(+2 pi i p.u)``.
   ``G`` is a trigonometric polynomial with only ``(2k - 1)**2`` frequencies, so it is computed
   exactly on a ``(2k-1) x (2k-1)`` grid, transformed to its Fourier coefficients, and evaluated
   exactly at any pixel positions (as BART does with its ``2k`` grid and sinc zero-padding);
5. the sensitivities are the dominant eigenvector of ``G(u)`` (eigenvalue ~1 where the object
   is), found by batched power iteration accelerated by repeated squaring;
6. pixels whose eigenvalue is ``<= crop`` get zero maps.

Speed: step 5 dominates (a ``C x C`` eigenproblem per pixel: BART needs ~3.4 CPU-seconds per
16-coil 640 x 320 slice). ``G`` has only ``2k - 1`` frequencies per axis (in cycles per
FOV, whatever the matrix size), so the sensitivities are smooth on the scale of the FOV: by default
the eigenproblem is solved on ``eig_grid = 64`` samples per axis, and the eigenvectors (after the
smooth phase reference below) and eigenvalues are interpolated to the pixels with separable
periodic cubic convolution (two small matrix products), then renormalised, re-referenced and cropped
pixel by pixel. ``eig_grid=None`` solves at every pixel (the exact result). The accuracy cost is
measured in ``docs/coil-combination.md``.

Phase reference: eigenvectors have an arbitrary per-pixel phase. Maps are rotated so that the
*virtual reference coil* ``r(u) = sum_c conj(a_c) S_c(u)`` is real and non-negative, where ``a`` is
the first principal component of the whole volume's calibration data (Buehrer et al., MRM 57:1131,
2007 "virtual body coil"; also BART's default). The combined image then carries the phase of the
virtual-coil image: spatially smooth, free of the sensitivity holes a single physical coil has, and
identical in definition for every slice of a volume. Pass all slices of a volume in one call, or
compute ``a`` once with :func:`virtual_coil_weights` and pass it as ``reference``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor

# Complex elements of the per-pixel C x C matrices held at once (bounds memory for big volumes).
_MAX_MATRIX_ELEMENTS = 2**23
# Calibration-matrix eigenproblem precision (complex128 changes the combined image by < 1e-6).
_CALIBRATION_DTYPE = torch.complex64


@dataclass(frozen=True)
class EspiritParams:
    """ESPIRiT settings (defaults follow sigpy's ``EspiritCalib``; BART's ``-t`` is ``threshold**2``).

    Attributes:
        calib_size: side of the square calibration region (k-space samples), clipped to the data.
        kernel_size: side of the square k-space kernel.
        threshold: keep singular vectors with ``s > threshold * s_max``.
        crop: zero the maps where the dominant eigenvalue is ``<= crop``.
        max_iter: power iterations after the squaring stage.
        num_squarings: repeated squarings ``G -> G @ G`` before iterating (G**(2**n)).
        eig_grid: solve the eigenproblem on ``eig_grid`` samples per axis (uniform over the FOV,
            capped at the image size) and interpolate; ``None``: at every pixel.
    """

    calib_size: int = 24
    kernel_size: int = 6
    threshold: float = 0.02
    crop: float = 0.95
    max_iter: int = 3
    num_squarings: int = 5
    eig_grid: int | None = 64


def _to_tensor(x: ArrayLike) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.from_numpy(np.ascontiguousarray(x)), True


def _with_batch(kspace: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if kspace.ndim == 3:
        return kspace[None], True
    if kspace.ndim != 4:
        raise ValueError(f"k-space must be (C, H, W) or (S, C, H, W), got shape {tuple(kspace.shape)}")
    return kspace, False


def calibration_region(kspace: torch.Tensor, calib_size: int) -> torch.Tensor:
    """Centre ``calib_size x calib_size`` samples of ``(..., H, W)`` k-space (clipped to H, W)."""
    rows, cols = kspace.shape[-2:]
    cy, cx = min(calib_size, rows), min(calib_size, cols)
    y0, x0 = rows // 2 - cy // 2, cols // 2 - cx // 2
    return kspace[..., y0 : y0 + cy, x0 : x0 + cx]


def virtual_coil_weights(kspace: ArrayLike, calib_size: int = 24) -> ArrayLike:
    """Virtual reference coil: first principal component of the calibration data of a volume.

    Args:
        kspace: complex ``(S, C, H, W)`` (all slices of one volume) or ``(C, H, W)``.
        calib_size: side of the calibration region used.
    Returns:
        complex64 ``(C,)`` unit vector ``a`` (numpy in -> numpy out). The virtual coil image is
        ``sum_c conj(a_c) y_c``. Its global phase is fixed by making the largest entry real > 0.
    """
    k, from_numpy = _to_tensor(kspace)
    k, _ = _with_batch(k)
    calib = calibration_region(k, calib_size).to(torch.complex128)
    coils = calib.shape[1]
    samples = calib.transpose(0, 1).reshape(coils, -1)
    covariance = samples @ samples.conj().T
    _, vectors = torch.linalg.eigh(covariance)
    weights = vectors[:, -1]
    largest = weights[weights.abs().argmax()]
    weights = (weights * largest.conj() / largest.abs()).to(torch.complex64)
    return weights.cpu().numpy() if from_numpy else weights


def _signal_kernels(
    calib: torch.Tensor, kernel_size: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal-subspace kernels of the calibration matrix.

    Args:
        calib: ``(S, C, cy, cx)`` calibration k-space.
    Returns:
        kernels ``(S, J, C, k, k)`` complex128 (rows of ``V^H``: unit-norm vectors spanning the row
        space of ``A``, i.e. the space every calibration window lies in) and weights
        ``(S, J)`` float64 in {0, 1} (1 where ``s_j > threshold * s_max``); ``J`` is the largest
        kept count over the batch, so slices keeping fewer kernels carry zero-weight padding.
    """
    slices, coils = calib.shape[:2]
    k = kernel_size
    if min(calib.shape[-2:]) < k:
        raise ValueError(f"calibration region {tuple(calib.shape[-2:])} smaller than kernel {k}")
    windows = calib.to(_CALIBRATION_DTYPE).unfold(2, k, 1).unfold(3, k, 1)  # (S, C, ny, nx, k, k)
    rows = windows.shape[2] * windows.shape[3]
    matrix = windows.permute(0, 2, 3, 1, 4, 5).reshape(slices, rows, coils * k * k)
    columns = matrix.shape[-1]
    # Right singular vectors via the smaller Gram matrix (its eigh is much cheaper than an SVD).
    if rows < columns:
        eigvals, left = torch.linalg.eigh(matrix @ matrix.mH)
        eigvals, left = eigvals.flip(-1), left.flip(-1)
        singular = eigvals.clamp_min(0).sqrt()
        keep = singular > threshold * singular[:, :1]
        right = matrix.mH @ left / torch.where(keep, singular, 1.0)[:, None, :]
    else:
        eigvals, right = torch.linalg.eigh(matrix.mH @ matrix)
        eigvals, right = eigvals.flip(-1), right.flip(-1)
        singular = eigvals.clamp_min(0).sqrt()
        keep = singular > threshold * singular[:, :1]
    # A slice without signal keeps no kernel: zero weights give G = 0 and hence zero maps.
    count = max(1, int(keep.sum(-1).max()))
    # Rows of A lie in the span of the *conjugated* right singular vectors (rows of V^H).
    kernels = right[..., :count].transpose(1, 2).conj().reshape(slices, count, coils, k, k)
    return kernels, keep[:, :count].to(kernels.real.dtype)


def _operator_coefficients(kernels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Fourier coefficients of the image-space ESPIRiT operator ``G(u)``.

    Returns:
        ``(S, C, C, m, m)`` complex with ``m = 2k - 1``; entry ``[..., t, t']`` is the coefficient of
        ``exp(2 pi i (d_t u_y + d_t' u_x))`` with ``d_t = t`` for ``t < k`` else ``t - m``.
    """
    k = kernels.shape[-1]
    m = 2 * k - 1
    padded = kernels.new_zeros(kernels.shape[:-2] + (m, m))
    padded[..., :k, :k] = kernels
    # w_{j,c}(u_l) = sum_p v_j[c, p] exp(+2 pi i p u_l) on the m x m grid u_l = l / m.
    images = torch.fft.ifft2(padded, norm="forward")
    weighted = images * weights[:, :, None, None, None]
    on_grid = torch.einsum("sjcab,sjdab->scdab", weighted, images.conj()) / (k * k)
    # G has frequencies -(k-1)..(k-1) only, so m samples per axis determine it exactly.
    return torch.fft.fft2(on_grid, norm="forward")


def _frequency_matrix(m: int, positions: torch.Tensor) -> torch.Tensor:
    """``E[i, t] = exp(2 pi i d_t positions[i])`` (positions in fractions of the FOV)."""
    t = torch.arange(m, dtype=torch.float64, device=positions.device)
    k = (m + 1) // 2
    frequency = torch.where(t < k, t, t - m)
    return torch.exp(2j * math.pi * positions[:, None].to(torch.float64) * frequency[None, :])


def _grid_positions(size: int, samples: int, device: torch.device) -> torch.Tensor:
    """FOV-fraction positions of ``samples`` uniformly spaced points covering an axis of ``size`` pixels.

    Fine pixel ``i`` sits at ``(i - size // 2) / size``; coarse sample ``j`` at fine (continuous)
    index ``(j + 0.5) * size / samples - 0.5`` (the cell-centred grid), so ``samples == size`` gives
    the pixels themselves and the grid is periodic with the FOV, like ``G`` itself.
    """
    j = torch.arange(samples, dtype=torch.float64, device=device)
    fine_index = (j + 0.5) * size / samples - 0.5
    return (fine_index - size // 2) / size


def _cubic_blocks(size: int, samples: int, device: torch.device, block: int = 64) -> list[tuple]:
    """Periodic cubic-convolution interpolation (Keys, a = -0.5) as banded blocks.

    Maps values on the :func:`_grid_positions` grid (``samples`` points) to the ``size`` pixels of
    the axis. Keys' kernel with ``a = -1/2`` is third-order accurate. Indices refer to the input
    padded periodically by two samples on each side (``G`` and hence the maps are periodic with the
    FOV), so each block of ``block`` output pixels reads one contiguous input slab.

    Returns:
        ``[(lo, hi, matrix)]``: output pixels ``k*block ...`` are ``matrix @ padded[lo:hi]``,
        ``matrix`` float32 ``(block, hi - lo)``.
    """
    i = torch.arange(size, dtype=torch.float64, device=device)
    t = (i + 0.5) * samples / size - 0.5  # coarse coordinate of each fine pixel
    base = torch.floor(t)
    frac = t - base
    a = -0.5
    full = torch.zeros(size, samples + 4, dtype=torch.float64, device=device)
    for offset in (-1, 0, 1, 2):
        d = (frac - offset).abs()
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        weight = torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))
        full[i.long(), base.long() + offset + 2] = weight
    blocks = []
    for start in range(0, size, block):
        rows = full[start : start + block]
        used = torch.nonzero(rows.abs().sum(0)).flatten()
        lo, hi = int(used.min()), int(used.max()) + 1
        blocks.append((lo, hi, rows[:, lo:hi].to(torch.float32).contiguous()))
    return blocks


def _periodic_pad(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Pad ``x`` periodically by two samples on each side of ``dim``."""
    n = x.shape[dim]
    index = torch.arange(-2, n + 2, device=x.device) % n
    return x.index_select(dim, index)


def _upsample_complex(x: torch.Tensor, rows: list[tuple], cols: list[tuple]) -> torch.Tensor:
    """Separable interpolation of complex ``x (..., h, w)`` with :func:`_cubic_blocks` (real matmuls)."""
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    real = torch.view_as_real(x).reshape(-1, h, w, 2).transpose(-1, -2)  # (B, h, 2, w)
    real = _periodic_pad(real, -1)
    real = torch.cat([real[..., lo:hi] @ matrix.T for lo, hi, matrix in cols], dim=-1)  # (B, h, 2, W)
    width = real.shape[-1]
    real = _periodic_pad(real.reshape(-1, h, 2 * width), -2)
    real = torch.cat([matrix @ real[:, lo:hi] for lo, hi, matrix in rows], dim=-2)  # (B, H, 2W)
    real = real.reshape(-1, real.shape[1], 2, width)
    return torch.complex(real[:, :, 0], real[:, :, 1]).reshape(*lead, real.shape[1], width)


def _upsample_real(x: torch.Tensor, rows: list[tuple], cols: list[tuple]) -> torch.Tensor:
    """Separable interpolation of real ``x (B, h, w)`` with :func:`_cubic_blocks`."""
    x = _periodic_pad(x, -1)
    x = torch.cat([x[..., lo:hi] @ matrix.T for lo, hi, matrix in cols], dim=-1)
    x = _periodic_pad(x, -2)
    return torch.cat([matrix @ x[:, lo:hi] for lo, hi, matrix in rows], dim=-2)


def _coil_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm over ``dim`` of a complex tensor, keepdim (real view: much faster on CPU)."""
    return x.real.square().add(x.imag.square()).sum(dim, keepdim=True).sqrt()


def _dominant_eigenvectors(
    operator: torch.Tensor, num_squarings: int, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dominant eigenpair of Hermitian PSD matrices ``(..., C, C)`` by squaring + power iteration.

    ``n`` squarings give ``G**(2**n)`` (eigenvalue ratio raised to ``2**n``) at ``C**3`` per step,
    far cheaper than ``2**n`` matrix-vector products. The converged power is ~``v v^H``: its
    column with the largest diagonal entry is the start vector; ``max_iter`` power iterations
    with ``G`` polish it.

    Returns:
        eigenvectors ``(..., C)`` (unit norm, arbitrary phase) and eigenvalues ``(...)`` (real).
    """
    power = operator
    for _ in range(num_squarings):
        power = power @ power
        # Divide by the trace (>= the top eigenvalue, <= C times it) so nothing under/overflows.
        trace = torch.diagonal(power, dim1=-2, dim2=-1).real.sum(-1)
        power = power / trace.clamp_min(torch.finfo(torch.float32).tiny)[..., None, None]
    column = torch.diagonal(power, dim1=-2, dim2=-1).real.argmax(-1)
    index = column[..., None, None].expand(*power.shape[:-1], 1)
    vector = torch.gather(power, -1, index)
    for _ in range(max_iter):
        vector = vector / _coil_norm(vector, -2).clamp_min(1e-30)
        vector = operator @ vector
    vector = vector / _coil_norm(vector, -2).clamp_min(1e-30)
    eigenvalue = (vector.conj() * (operator @ vector)).sum(-2).real[..., 0]
    return vector[..., 0], eigenvalue


def _rotate_to_reference(maps: torch.Tensor, reference: torch.Tensor, coil_dim: int) -> torch.Tensor:
    """Rotate per pixel so that ``sum_c conj(reference_c) maps_c`` is real and non-negative."""
    shape = [1] * maps.ndim
    shape[coil_dim] = -1
    virtual = (reference.conj().reshape(shape) * maps).sum(coil_dim, keepdim=True)
    magnitude = virtual.abs()
    phase = torch.where(magnitude > 0, virtual / magnitude.clamp_min(1e-30), torch.ones_like(virtual))
    return maps * phase.conj()


def espirit_maps(
    kspace: ArrayLike,
    *,
    calib_size: int = 24,
    kernel_size: int = 6,
    threshold: float = 0.02,
    crop: float = 0.95,
    max_iter: int = 3,
    num_squarings: int = 5,
    eig_grid: int | None = 64,
    reference: ArrayLike | None = None,
    return_eigenvalues: bool = False,
):
    """ESPIRiT sensitivity maps (one set) for Cartesian k-space with a fully sampled centre.

    Args:
        kspace: complex ``(S, C, H, W)`` or ``(C, H, W)``, rows = readout, cols = phase encode,
            DC at ``(H // 2, W // 2)`` (fastMRI layout). numpy or torch; torch runs on its device.
        calib_size, kernel_size, threshold, crop, max_iter, num_squarings, eig_grid:
            see :class:`EspiritParams`.
        reference: complex ``(C,)`` virtual-coil weights ``a`` defining the phase reference;
            default: :func:`virtual_coil_weights` of this call's k-space (pass it explicitly when a
            volume is processed in several calls, so every slice shares one reference).
        return_eigenvalues: also return the dominant eigenvalue map.
    Returns:
        maps: complex64, same shape and type (numpy/torch, device) as ``kspace``; unit norm over
        coils where the eigenvalue exceeds ``crop``, zero elsewhere;
        ``sum_c conj(a_c) maps_c`` is real and >= 0. With ``return_eigenvalues``:
        ``(maps, eigenvalues)``, eigenvalues float32 ``(S, H, W)`` (or ``(H, W)``).
    """
    k, from_numpy = _to_tensor(kspace)
    k, unbatched = _with_batch(k)
    if not torch.is_complex(k):
        raise TypeError(f"k-space must be complex, got {k.dtype}")
    k = k.to(torch.complex64)
    calib = calibration_region(k, calib_size)
    if reference is None:
        reference = virtual_coil_weights(calib, calib_size)
    maps, eigenvalues = espirit_maps_from_calibration(
        calib,
        k.shape[-2:],
        kernel_size=kernel_size,
        threshold=threshold,
        crop=crop,
        max_iter=max_iter,
        num_squarings=num_squarings,
        eig_grid=eig_grid,
        reference=reference,
    )
    if unbatched:
        maps, eigenvalues = maps[0], eigenvalues[0]
    if from_numpy:
        maps, eigenvalues = maps.cpu().numpy(), eigenvalues.cpu().numpy()
    return (maps, eigenvalues) if return_eigenvalues else maps


def espirit_maps_from_calibration(
    calib: torch.Tensor,
    image_shape: tuple[int, int],
    *,
    reference: ArrayLike,
    kernel_size: int = 6,
    threshold: float = 0.02,
    crop: float = 0.95,
    max_iter: int = 3,
    num_squarings: int = 5,
    eig_grid: int | None = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ESPIRiT maps from the calibration region alone (all ESPIRiT needs from the k-space).

    Args:
        calib: complex ``(S, C, cy, cx)`` centre of the k-space (:func:`calibration_region`), on
            the device to compute on.
        image_shape: ``(H, W)`` of the image grid the maps are wanted on.
        reference: complex ``(C,)`` virtual-coil weights (:func:`virtual_coil_weights`).
        others: see :class:`EspiritParams`.
    Returns:
        maps complex64 ``(S, C, H, W)`` and eigenvalues float32 ``(S, H, W)``, torch on
        ``calib.device``.
    """
    if eig_grid is not None and eig_grid < 1:
        raise ValueError(f"eig_grid must be >= 1 or None, got {eig_grid}")
    device = calib.device
    slices, coils = calib.shape[:2]
    rows, cols = (int(n) for n in image_shape)
    ref = torch.as_tensor(reference).to(device=device, dtype=torch.complex64)
    if ref.shape != (coils,):
        raise ValueError(f"reference must have shape ({coils},), got {tuple(ref.shape)}")

    kernels, weights = _signal_kernels(calib, kernel_size, threshold)
    # (S, m, m, C*C): one C x C coefficient matrix per frequency, so evaluation lands in (y, x, C, C).
    coefficients = _operator_coefficients(kernels, weights).to(torch.complex64)
    m = coefficients.shape[-1]
    coefficients = coefficients.permute(0, 3, 4, 1, 2).reshape(slices, m, m * coils * coils)

    grid_rows = rows if eig_grid is None else min(rows, eig_grid)
    grid_cols = cols if eig_grid is None else min(cols, eig_grid)
    e_y = _frequency_matrix(m, _grid_positions(rows, grid_rows, device)).to(torch.complex64)
    e_x = _frequency_matrix(m, _grid_positions(cols, grid_cols, device)).to(torch.complex64)

    chunk = max(1, _MAX_MATRIX_ELEMENTS // (grid_rows * grid_cols * coils * coils))
    vectors, values = [], []
    for start in range(0, slices, chunk):
        part = (e_y @ coefficients[start : start + chunk]).reshape(-1, grid_rows, m, coils * coils)
        operator = (e_x @ part).reshape(-1, grid_rows, grid_cols, coils, coils)
        vector, value = _dominant_eigenvectors(operator, num_squarings, max_iter)
        # The reference makes the phase smooth across pixels, which the interpolation below needs.
        vectors.append(_rotate_to_reference(vector, ref, coil_dim=-1).permute(0, 3, 1, 2))
        values.append(value)
    maps = torch.cat(vectors)  # (S, C, grid_rows, grid_cols)
    eigenvalues = torch.cat(values)  # (S, grid_rows, grid_cols)

    if (grid_rows, grid_cols) != (rows, cols):
        interp_rows = _cubic_blocks(rows, grid_rows, device)
        interp_cols = _cubic_blocks(cols, grid_cols, device)
        maps = _upsample_complex(maps, interp_rows, interp_cols)
        eigenvalues = _upsample_real(eigenvalues, interp_rows, interp_cols)
        # Interpolated vectors are no longer exactly unit-norm and referenced: one fused rescale.
        virtual = (ref.conj()[:, None, None] * maps).sum(1, keepdim=True)
        magnitude = virtual.abs()
        scale = torch.where(magnitude > 0, virtual.conj() / magnitude.clamp_min(1e-30), 1.0)
        scale = scale / _coil_norm(maps, 1).clamp_min(1e-30)
        maps = maps * (scale * (eigenvalues > crop)[:, None])
    else:
        maps = maps * (eigenvalues > crop)[:, None]
    return maps, eigenvalues.to(torch.float32)
