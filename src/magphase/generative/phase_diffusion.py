"""PhaseGen: a complex-valued diffusion model that draws a phase for a given magnitude (arXiv 2504.07560).

Data. A complex patch ``x = m exp(i phi)`` (a store's ``patches``, ``2 x 96 x 96`` as real/imaginary) is
scaled by the RMS of its magnitude, ``x_0 = x / rms(m)``, so ``|x_0|`` (the condition) has unit RMS and the
scale depends on the magnitude alone: training and sampling see the same condition. (The published code
whitens the complex image for training but the magnitude for sampling; one normalisation for both is
deliberate here.) The absolute phase of a coil-combined image is arbitrary (docs/flow-matching.md), so by
default (``global_phase = canonical``) each training patch is rotated to global phase 0 (the angle of its
complex sum) and every sample is rotated back by a uniform angle seeded per sample: the network never has
to pick a global phase out of noise, the failure that splits samples into phase domains. ``random``
rotates training patches by a uniform angle instead (PhaseGen-like data augmentation), ``keep`` uses
the data as they are.

Forward process over T integer steps (cosine schedule by default, as PhaseGen)::

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n,   n ~ CN(0, 1) or unit-modulus, uniform phase (PhaseGen)

The complex U-Net (:class:`magphase.models.complex_unet.ComplexUNet`) sees ``x_t`` and the magnitude
``|x_0|`` and predicts ``n`` (L1 loss by default, as PhaseGen).

Sampling (:func:`sample_phase`) is DDIM over K of the T steps with stochasticity ``eta`` (``ddpm`` = all T
steps with the posterior variance, PhaseGen's ancestral sampler, the same update at ``eta = 1``). The
output keeps the given magnitude EXACTLY and takes only the phase of the final estimate:
``m exp(i angle(x_0_hat))``. Sample ``i`` draws its noise from its own generator seeded by ``(seed, i)``,
so results do not depend on the batch size.

Training (the task, the engine folder ``RUN/phasegen/``) and the phasegen store are the phasegen stage's:
:mod:`magphase.stages.phasegen`; phase statistics: :mod:`magphase.evaluation.phase`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from magphase.config.phasegen import DiffusionSettings
from magphase.errors import ConfigError
from magphase.mri.complex import channels_to_complex
from magphase.utils.precision import resolve_amp
from magphase.utils.seeds import derive_seed

log = logging.getLogger(__name__)

#: Smallest magnitude RMS a patch may have (an all-zero patch has no phase to learn).
MIN_RMS = 1e-8


# ------------------------------------------------------------------------------------ schedule
def beta_schedule(settings: DiffusionSettings) -> Tensor:
    """float64 ``(T,)`` betas: cosine (Nichol & Dhariwal, clip 0.999) or linear 1e-4 .. 0.02 x 1000/T."""
    T = settings.timesteps
    if settings.schedule == "linear":
        scale = 1000.0 / T
        return torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T, dtype=torch.float64)
    s = settings.cosine_offset
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def alphas_cumprod(settings: DiffusionSettings) -> Tensor:
    """float64 ``(T,)`` ``abar_t = prod_{s <= t} (1 - beta_s)``."""
    return torch.cumprod(1 - beta_schedule(settings), dim=0)


# ----------------------------------------------------------------------------------- data maths


def magnitude_scale(magnitude: Tensor) -> Tensor:
    """RMS of each patch's magnitude, ``B x 1 x 1 x 1`` (at least :data:`MIN_RMS`)."""
    return magnitude.float().pow(2).mean(dim=(-2, -1), keepdim=True).sqrt().clamp(min=MIN_RMS)


def draw_noise(
    kind: str,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """complex64 noise of unit mean power: ``phase`` = ``exp(i U[-pi, pi))``, ``gaussian`` = CN(0, 1).

    ``device`` (default: the generator's, else CPU) is where the numbers are drawn.
    """
    if kind == "phase":
        angle = (torch.rand(shape, generator=generator, device=device) * 2 - 1) * math.pi
        return torch.polar(torch.ones_like(angle), angle)
    if kind == "gaussian":
        re, im = torch.randn((2, *shape), generator=generator, device=device) / math.sqrt(2.0)
        return torch.complex(re, im)
    raise ValueError(f"noise must be 'phase' or 'gaussian', got {kind!r}")


# ------------------------------------------------------------------------------------ training
GLOBAL_PHASE_MODES = ("canonical", "random", "keep")


def training_target(x: Tensor, global_phase: str = "canonical") -> Tensor:
    """Store-layout patches ``B x 2 x H x W`` -> the diffusion's ``x_0``: complex ``B x 1 x H x W`` of unit
    magnitude RMS, rotated to global phase 0 (``canonical``), by a uniform random angle (``random``), or
    not (``keep``)."""
    z = channels_to_complex(x).unsqueeze(1)
    b, device = z.shape[0], z.device
    if global_phase == "canonical":
        z = z * torch.exp(-1j * torch.angle(z.sum(dim=(-2, -1), keepdim=True)))
    elif global_phase == "random":
        z = z * torch.polar(
            torch.ones(b, 1, 1, 1, device=device), torch.rand(b, 1, 1, 1, device=device) * 2 * math.pi
        )
    elif global_phase != "keep":
        raise ConfigError(f"global_phase must be one of {GLOBAL_PHASE_MODES}, got {global_phase!r}")
    return z / magnitude_scale(z.abs())


# ------------------------------------------------------------------------------------ sampling


def sampling_timesteps(sampler: str, steps: int, timesteps: int) -> list[int]:
    """Descending timesteps visited: all T for ``ddpm``; K evenly spaced from T - 1 to 0 for ``ddim``."""
    if sampler == "ddpm":
        return list(range(timesteps - 1, -1, -1))
    if sampler != "ddim":
        raise ConfigError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    k = min(int(steps), timesteps)
    return sorted({round(v) for v in np.linspace(0, timesteps - 1, k)}, reverse=True)


@torch.no_grad()
def sample_phase(
    model: nn.Module,
    magnitude: Tensor,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    start: int = 0,
    batch_size: int = 64,
    amp: str = "none",
    project: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Draw a phase for each magnitude: complex64 CPU ``N x H x W`` with ``|out| == magnitude``.

    Args:
        model: a PhaseGen network (``model.diffusion`` set by :func:`load_phasegen`, or pass one built by
            :class:`PhaseGenTask` after setting it).
        magnitude: real ``N x H x W`` (or ``N x 1 x H x W``), non-negative, finite.
        sampler, steps, eta: see :func:`sampling_timesteps` (``ddpm`` uses ``eta = 1``).
        seed, start: sample ``j`` of this call is sample ``start + j`` of the seed's stream.
        batch_size: magnitudes denoised together.
        amp: autocast of the network (``none``, ``bf16``, ``fp16``, ``auto``).
        project: replace every intermediate estimate ``x_0_hat`` by ``|x_0| exp(i angle(x_0_hat))`` (the
            magnitude is known; the noise estimate is made consistent with it). Beyond PhaseGen, which
            only imposes the magnitude on the final output; it plays the role of DDPM's clipping.
        progress: called with the number of patches finished after each batch.
    """
    diffusion: DiffusionSettings = getattr(model, "diffusion", None) or DiffusionSettings()
    mag = magnitude.float()
    if mag.ndim == 4:
        mag = mag[:, 0]
    if mag.ndim != 3:
        raise ValueError(f"magnitude must be N x H x W, got shape {tuple(magnitude.shape)}")
    if not torch.isfinite(mag).all() or (mag < 0).any():
        raise ValueError("magnitude must be finite and non-negative")
    device = next(model.parameters()).device
    amp_dtype = resolve_amp(amp, device)
    abar = alphas_cumprod(diffusion)
    ts = sampling_timesteps(sampler, steps, diffusion.timesteps)
    eta = 1.0 if sampler == "ddpm" else float(eta)
    canonical = getattr(model, "global_phase", "keep") == "canonical"
    out = torch.empty(mag.shape, dtype=torch.complex64)
    shape = (1, *mag.shape[1:])
    for a in range(0, mag.shape[0], batch_size):
        m = mag[a : a + batch_size]
        b = m.shape[0]
        gens = [torch.Generator().manual_seed(derive_seed(seed, start + a + j)) for j in range(b)]
        cond = (m / magnitude_scale(m)).unsqueeze(1).to(device)
        x = torch.stack([draw_noise(diffusion.noise, shape, g) for g in gens]).to(device).to(torch.complex128)
        x0 = x
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            a_t = float(abar[t])
            a_prev = float(abar[t_prev]) if t_prev >= 0 else 1.0
            tt = torch.full((b,), t, dtype=torch.long, device=device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                eps = model(x.to(torch.complex64), cond, tt)
            eps = eps.to(torch.complex128)
            x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            if project:
                # The magnitude is known: keep only the estimate's phase, and the noise consistent with it.
                x0 = cond.to(torch.float64) * torch.exp(1j * torch.angle(x0))
                eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
            if t_prev < 0:
                break
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                z = torch.stack([draw_noise(diffusion.noise, shape, g) for g in gens]).to(device)
                x = x + sigma * z.to(torch.complex128)
        phase = torch.angle(x0[:, 0]).float().cpu()
        if canonical:
            # A canonical model samples global phase 0; the absolute phase is arbitrary: a seeded uniform one.
            rot = [
                torch.rand(
                    (), generator=torch.Generator().manual_seed(derive_seed(seed, start + a + j, 0x9A))
                )
                for j in range(b)
            ]
            phase = phase + (torch.stack(rot) * 2 * math.pi - math.pi).view(b, 1, 1)
        out[a : a + b] = torch.polar(m, phase)
        if progress is not None:
            progress(b)
    return out


# ------------------------------------------------------------------------------------- metrics


__all__ = [
    "GLOBAL_PHASE_MODES",
    "alphas_cumprod",
    "beta_schedule",
    "draw_noise",
    "magnitude_scale",
    "sample_phase",
    "sampling_timesteps",
    "training_target",
]
