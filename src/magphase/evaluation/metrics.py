"""Reconstruction metrics of the autoencoder (paper Sec. 2.2, Table 3), one value per patch.

* phase coherence ``gamma = |sum x_hat conj(x)| / sum |x_hat| |x|`` (paper Eq. 2) over the patch:
  :func:`magphase.mri.metrics.phase_coherence` (the project's one implementation).
* magnitude SSIM (Wang et al. 2004): Gaussian window sigma 1.5 truncated at 3.5 sigma (11 x 11), K1 = 0.01,
  K2 = 0.03, population (not sample) covariances, averaged over the window positions that lie fully inside
  the patch. This equals ``skimage.metrics.structural_similarity(a, b, data_range=1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` (tested).
* magnitude PSNR ``10 log10(data_range^2 / MSE)``, data range 1 (magnitudes are slice-normalised to [0, 1]).

Magnitudes are not clipped: a reconstruction that overshoots 1 is scored as it is.
Inputs are ``B x 2 x H x W`` tensors or arrays, channels ``[real, imag]``; computations run in float64.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from magphase.mri.complex import channels_to_complex, magnitude_phase
from magphase.mri.metrics import phase_coherence

log = logging.getLogger(__name__)

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def _batched(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.ndim == 2:
        return x[None]
    if x.ndim != 3:
        raise ValueError(f"{what} must be (B, H, W) or (H, W), got shape {tuple(x.shape)}")
    return x


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, float64, radius ``int(truncate * sigma + 0.5)`` (as scipy.ndimage)."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def ssim(a: ArrayLike, b: ArrayLike, data_range: float = 1.0) -> np.ndarray:
    """SSIM per image of real images ``(B, H, W)`` (or one ``(H, W)``) -> float64 ``(B,)``.

    Symmetric in ``a`` and ``b``. Settings in the module docstring.
    """
    x = _batched(_as_tensor(a), "a").to(torch.float64)[:, None]
    y = _batched(_as_tensor(b), "b").to(torch.float64)[:, None]
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape[2:])} vs {tuple(y.shape[2:])}")
    taps = gaussian_window().to(x.device)
    if min(x.shape[-2:]) < taps.numel():
        raise ValueError(
            f"images must be at least {taps.numel()} pixels on each side, got {tuple(x.shape[-2:])}"
        )
    wy, wx = taps.view(1, 1, -1, 1), taps.view(1, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, 'valid' positions only
        return F.conv2d(F.conv2d(t, wy), wx)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).cpu().numpy()


def psnr(a: ArrayLike, b: ArrayLike, data_range: float = 1.0) -> np.ndarray:
    """PSNR in dB per image of ``(B, H, W)`` (or ``(H, W)``) -> float64 ``(B,)``; ``inf`` when identical."""
    x = _batched(_as_tensor(a), "a").to(torch.float64)
    y = _batched(_as_tensor(b), "b").to(torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = (x - y).square().mean(dim=(1, 2)).cpu().numpy()
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def patch_phase_coherence(x_hat: ArrayLike, x: ArrayLike) -> np.ndarray:
    """Paper Eq. 2 per patch of two-channel ``B x 2 x H x W`` inputs -> float64 ``(B,)``."""
    z_hat = channels_to_complex(_as_tensor(x_hat).to(torch.float64)).to(torch.complex128)
    z = channels_to_complex(_as_tensor(x).to(torch.float64)).to(torch.complex128)
    return phase_coherence(z_hat, z, dim=(-2, -1)).cpu().numpy()


def reconstruction_metrics(x_hat: ArrayLike, x: ArrayLike, with_ssim: bool = True) -> dict[str, np.ndarray]:
    """Table 3 metrics per patch: ``phase_coherence``, ``ssim`` (magnitude), ``psnr`` (magnitude, dB).

    Args:
        x_hat, x: reconstruction and original, ``B x 2 x H x W`` ([real, imag]).
        with_ssim: also compute SSIM (the most expensive of the three).
    Returns:
        dict of float64 arrays of shape ``(B,)``.
    """
    x_hat_t, x_t = _as_tensor(x_hat), _as_tensor(x)
    if x_hat_t.shape != x_t.shape or x_t.ndim != 4 or x_t.shape[1] != 2:
        raise ValueError(
            f"expected two B x 2 x H x W inputs, got {tuple(x_hat_t.shape)} and {tuple(x_t.shape)}"
        )
    z_hat = channels_to_complex(x_hat_t.to(torch.float64)).to(torch.complex128)
    z = channels_to_complex(x_t.to(torch.float64)).to(torch.complex128)
    out = {
        "phase_coherence": phase_coherence(z_hat, z, dim=(-2, -1)).cpu().numpy(),
        "psnr": psnr(z_hat.abs(), z.abs()),
    }
    if with_ssim:
        out["ssim"] = ssim(z_hat.abs(), z.abs())
    return out


def summarize(values: np.ndarray) -> tuple[float, float]:
    """``(mean, std)`` of finite values (population std, as ``np.std``); NaN for none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std())


def class_effect(normal: np.ndarray, abnormal: np.ndarray) -> float:
    """How much the class changes paired samples: mean |x_abnormal - x_normal| / mean |x_normal|.

    Both ``N x 2 x H x W`` (real, imaginary) decoded from the same noise; 0 means the class token
    has no effect, ~1 means the samples differ as much as unrelated patches of the same scale.
    """
    diff = magnitude_phase(abnormal - normal)[0].mean()
    scale = magnitude_phase(normal)[0].mean()
    return float(diff / scale) if scale > 0 else float("nan")


def safe_auroc(
    targets: np.ndarray,
    scores: np.ndarray,
    *,
    warn: bool = True,
    sample_weight: np.ndarray | None = None,
) -> float:
    """The one AUROC of magphase: ``sklearn.metrics.roc_auc_score``; NaN (with a warning unless
    ``warn`` is off) when only one class is present (among the items of positive weight).

    ``sample_weight`` (``(N,)``, >= 0) counts each item that many times: a bootstrap replicate is the
    original items weighted by how often the resample drew them.
    """
    t = np.asarray(targets).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if t.size != s.size:
        raise ValueError(f"{t.size} targets but {s.size} scores")
    w = None
    present = t
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64).ravel()
        if w.size != t.size:
            raise ValueError(f"{t.size} targets but {w.size} sample weights")
        present = t[w > 0]
    if np.unique(present).size < 2:
        if not warn:
            return float("nan")
        log.warning("AUROC undefined: only one class among %d items", present.size)
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(t, s, sample_weight=w))


def weighted_aurocs(targets: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one scoring under many item weightings at once: ``(B,)`` for ``weights`` ``B x N``.

    The Mann-Whitney form of :func:`safe_auroc` with ``sample_weight`` (ties count one half), equal to it
    row by row (tested), but vectorised over the rows: a volume bootstrap scores 1000 weightings of the
    same items, which one ``roc_auc_score`` call per row makes ~100x slower. NaN where a row gives one
    class no weight.
    """
    t = np.asarray(targets).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if t.size != s.size or w.shape[1] != s.size:
        raise ValueError(f"{t.size} targets, {s.size} scores, weights {w.shape}")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # one block per distinct score
    w_sorted = w[:, order]
    pos = np.add.reduceat(w_sorted * t[order], starts, axis=1)
    neg = np.add.reduceat(w_sorted * ~t[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each distinct score
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


__all__ = [
    "gaussian_window",
    "patch_phase_coherence",
    "psnr",
    "reconstruction_metrics",
    "ssim",
    "summarize",
    "weighted_aurocs",
]
