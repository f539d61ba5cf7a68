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

Run layout: ``RUN/phasegen/`` is an engine run folder (checkpoint.pt, ema.safetensors + ema.json, metrics,
loss curves) plus ``done.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from magphase.config import MagphaseConfig, config_hash
from magphase.config.phasegen import DiffusionSettings, PhaseGenConfig
from magphase.data.store import Store, StoreWriter
from magphase.errors import ConfigError, DataError
from magphase.generative.autoencoder import PatchDataset
from magphase.models.complex_unet import ComplexUNet, build_complex_unet, complex_unet_config
from magphase.models.weights import load_ema_weights, read_weights_metadata
from magphase.training import TrainResult, TrainTaskBase, fit
from magphase.utils.atomic import atomic_write_text
from magphase.utils.precision import resolve_amp
from magphase.utils.seeds import derive_seed

log = logging.getLogger(__name__)

STAGE_DIR = "phasegen"
DONE_NAME = "done.json"
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
def to_complex(x: Tensor) -> Tensor:
    """Store layout ``B x 2 x H x W`` (real, imaginary) -> complex ``B x 1 x H x W``."""
    return torch.complex(x[:, :1].float(), x[:, 1:2].float())


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
    z = to_complex(x)
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


class PhaseGenTask(TrainTaskBase):
    """The engine task: noise-prediction loss of the complex diffusion on magnitude-scaled patches."""

    def __init__(
        self, network: dict[str, Any], diffusion: DiffusionSettings, global_phase: str = "canonical"
    ):
        if global_phase not in GLOBAL_PHASE_MODES:
            raise ConfigError(
                f"phasegen.global_phase must be one of {GLOBAL_PHASE_MODES}, got {global_phase!r}"
            )
        self.network = dict(network)
        self.diffusion = diffusion
        self.global_phase = global_phase
        self.abar = alphas_cumprod(diffusion).float()

    def build_model(self) -> nn.Module:
        return ComplexUNet(**self.network, timesteps=self.diffusion.timesteps)

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = training_target(batch["x"], self.global_phase)
        b, device = x0.shape[0], x0.device
        t = torch.randint(0, self.diffusion.timesteps, (b,), device=device)
        noise = draw_noise(self.diffusion.noise, tuple(x0.shape), device=device)
        abar = self.abar.to(device)[t].view(b, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        pred = model(x_t, x0.abs(), t)
        diff = torch.view_as_real(pred.to(torch.complex64)) - torch.view_as_real(noise)
        loss = diff.abs().mean() if self.diffusion.loss == "l1" else diff.pow(2).mean()
        return loss.float(), {}

    def model_config(self) -> dict[str, Any]:
        cfg = complex_unet_config(**self.network, timesteps=self.diffusion.timesteps)
        cfg["diffusion"] = self.diffusion.model_dump(mode="json")
        cfg["global_phase"] = self.global_phase
        return cfg


def stage_dir(run_dir: str | Path) -> Path:
    """``RUN/phasegen``."""
    return Path(run_dir) / STAGE_DIR


def patch_store_path(cfg: MagphaseConfig, run_dir: str | Path, override: str | Path | None = None) -> Path:
    """The patch store to train on: ``override``, ``phasegen.patch_store`` or ``RUN/prepare/patches``."""
    if override is not None:
        return Path(override)
    if cfg.phasegen.patch_store is not None:
        return Path(cfg.phasegen.patch_store)
    return Path(run_dir) / "prepare" / "patches"


def train_phasegen(
    cfg: MagphaseConfig,
    run_dir: str | Path,
    *,
    store: str | Path | None = None,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
) -> TrainResult:
    """Train PhaseGen on the ``train`` split of a patch store into ``RUN/phasegen``."""
    pg: PhaseGenConfig = cfg.phasegen
    dataset = PatchDataset(patch_store_path(cfg, run_dir, store), split="train")
    task = PhaseGenTask(pg.resolved_network().model_dump(mode="json"), pg.diffusion, pg.global_phase)
    out = stage_dir(run_dir)
    log.info("PhaseGen: %d training patches -> %s", len(dataset), out)
    result = fit(
        task, dataset, pg.train.resolved(cfg.seed, cfg.device), out, resume=resume, progress=progress
    )
    record = {
        "config_hash": config_hash(pg, cfg.seed),
        "step": result.step,
        "ema": str(result.ema_path),
        "last_metrics": result.last_metrics,
    }
    atomic_write_text(json.dumps(record, indent=2) + "\n", out / DONE_NAME)
    return result


# ------------------------------------------------------------------------------------ sampling
def load_phasegen(path: str | Path, device: str | torch.device = "cpu") -> ComplexUNet:
    """Rebuild PhaseGen from exported EMA weights (eval mode); ``model.diffusion`` holds its settings.

    Raises:
        DataError: missing file or weights that are not a PhaseGen model.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ema.safetensors"
    meta = read_weights_metadata(path)
    cfg = meta.get("model_config")
    if not isinstance(cfg, dict) or cfg.get("kind") != "phasegen_unet":
        raise DataError(path, "model_config", "weights metadata does not describe a PhaseGen model")
    model = build_complex_unet(cfg)
    model.load_state_dict(load_ema_weights(path))
    model.diffusion = DiffusionSettings(**cfg.get("diffusion", {}))  # type: ignore[assignment]
    model.global_phase = cfg.get("global_phase", "keep")  # type: ignore[assignment]
    return model.to(device).eval()


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


def generate_phasegen_store(
    model: nn.Module,
    source: str | Path | Store,
    out: str | Path,
    *,
    split: str | list[str] | None = None,
    limit: int | None = None,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    amp: str = "none",
    project: bool = True,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Give every patch of ``source`` (one split; at most ``limit``, evenly spaced) a PhaseGen phase.

    The new store has the source's manifest rows (sequence, label, split, slice, ...) with ``patch_id``
    prefixed ``pg-``, ``synthetic = 1`` and ``source_patch_id``; its ``patches`` keep the source magnitude
    exactly. ``meta.json``: kind ``synthetic``, ``generator = phasegen`` and the sampler settings.
    """
    src = source if isinstance(source, Store) else Store(source)
    if "patches" not in src.arrays:
        raise DataError(src.path, "patches", "source store lacks this array")
    idx = src.select(split=split) if split is not None else np.arange(len(src))
    if limit is not None and limit < idx.size:
        # Evenly spaced over the split (stores are in volume order): every sequence keeps its share.
        idx = idx[np.unique(np.linspace(0, idx.size - 1, limit).round().astype(np.int64))]
    if idx.size == 0:
        raise DataError(src.path, "split", f"no patches in split {split!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: store already exists (pass overwrite)")
    manifest = src.manifest
    meta = {
        "synthetic": True,
        "generator": "phasegen",
        "source": str(src.path),
        "split": split,
        "sampler": sampler,
        "steps": steps,
        "eta": eta,
        "seed": seed,
        "amp": amp,
        "project": project,
        **(provenance or {}),
    }
    with StoreWriter(
        out, {"patches": tuple(src.arrays["patches"])}, kind="synthetic", meta=meta, overwrite=True
    ) as w:
        for a in range(0, idx.size, batch_size):
            sel = idx[a : a + batch_size]
            x = torch.from_numpy(src.read("patches", sel))
            z = sample_phase(
                model,
                to_complex(x).abs()[:, 0],
                sampler=sampler,
                steps=steps,
                eta=eta,
                seed=seed,
                start=a,
                batch_size=batch_size,
                amp=amp,
                project=project,
            )
            rows = []
            for k, r in enumerate(manifest.iloc[sel].to_dict("records")):
                rows.append(
                    {
                        **r,
                        "patch_id": f"pg-{r['patch_id']}",
                        "synthetic": 1,
                        "source_patch_id": r["patch_id"],
                        "sample_index": a + k,
                    }
                )
            w.append(rows, patches=torch.stack([z.real, z.imag], dim=1).numpy())
            if progress is not None:
                progress(len(sel))
    log.info("PhaseGen store %s: %d patches (%s, K=%d)", out, idx.size, sampler, steps)
    return out


# ------------------------------------------------------------------------------------- metrics
def patch_phase_smoothness(patches: np.ndarray, border: int | None = None) -> np.ndarray:
    """Per patch, the magnitude-weighted coherence of neighbouring phase differences, in [0, 1].

    ``R = |sum w exp(i (phi(r + d) - phi(r)))| / sum w`` over horizontal and vertical neighbours, with
    ``w = m(r) m(r + d)``: ``x(r + d) conj(x(r))`` carries both weight and phase difference. 1: locally flat
    phase; ~0: phase unrelated between neighbours. ``border=b`` counts only the neighbour pairs with both
    pixels within ``b`` pixels of the patch edge (where a network's padding or pooling shows).
    """
    z = patches[:, 0] + 1j * patches[:, 1]
    h, w = z.shape[-2:]
    band = None
    if border is not None:
        if border < 1 or 2 * border >= min(h, w):
            raise ValueError(f"border must be in [1, {min(h, w) // 2 - 1}], got {border}")
        band = np.ones((h, w), dtype=bool)
        band[border:-border, border:-border] = False
    num = den = 0.0
    for a, b, pairs in (
        (z[:, :, 1:], z[:, :, :-1], (np.s_[:, 1:], np.s_[:, :-1])),
        (z[:, 1:, :], z[:, :-1, :], (np.s_[1:, :], np.s_[:-1, :])),
    ):
        prod = a * np.conj(b)
        if band is not None:
            prod = prod * (band[pairs[0]] & band[pairs[1]])
        num += prod.sum(axis=(1, 2))
        den += np.abs(prod).sum(axis=(1, 2))
    return np.abs(num) / np.maximum(den, 1e-12)


def phase_smoothness(patches: np.ndarray) -> float:
    """Mean of :func:`patch_phase_smoothness` over the patches."""
    return float(np.mean(patch_phase_smoothness(patches)))


def phase_agreement(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per patch, how well two phases of the same magnitude agree, up to a global offset: in [0, 1].

    ``|sum m^2 exp(i (phi_g - phi_r))| / sum m^2``: 1 when the phases differ by a constant, ~0 when unrelated.
    ``generated`` and ``real`` are ``N x 2 x H x W`` (real, imaginary) with the same magnitudes.
    """
    g = generated[:, 0] + 1j * generated[:, 1]
    r = real[:, 0] + 1j * real[:, 1]
    prod = g * np.conj(r)  # |g||r| = m^2, angle = phi_g - phi_r
    return np.abs(prod.sum(axis=(1, 2))) / np.maximum(np.abs(prod).sum(axis=(1, 2)), 1e-12)


def constant_phase(real: np.ndarray) -> np.ndarray:
    """The baseline "no phase model": the real magnitudes with phase 0 (``N x 2 x H x W``)."""
    return np.stack([np.hypot(real[:, 0], real[:, 1]), np.zeros_like(real[:, 0])], axis=1)


def random_phase(real: np.ndarray, seed: int = 0, start: int = 0) -> np.ndarray:
    """The baseline "noise phase": the real magnitudes with i.i.d. uniform phase per pixel.

    Patch ``j`` draws from a generator seeded by ``(seed, start + j)`` (independent of chunking).
    """
    m = np.hypot(real[:, 0], real[:, 1])
    phi = np.stack(
        [
            np.random.default_rng([seed, start + j]).uniform(-np.pi, np.pi, size=m.shape[1:])
            for j in range(len(m))
        ]
    )
    return np.stack([m * np.cos(phi), m * np.sin(phi)], axis=1).astype(np.float32)


#: Width (pixels) of the edge band of ``border_smoothness_*`` in :func:`evaluate_phasegen`.
BORDER = 2

_PHASE_STATS = (
    "smoothness_real",
    "smoothness_phasegen",
    "smoothness_random",
    "border_smoothness_real",
    "border_smoothness_phasegen",
    "agreement_phasegen",
    "agreement_constant",
)


def evaluate_phasegen(
    synthetic: str | Path | Store, real: str | Path | Store | None = None, *, chunk: int = 256
) -> pd.DataFrame:
    """Phase statistics of a PhaseGen store against the real patches it took its magnitudes from.

    Per sequence (and ``all``): ``n``; ``smoothness`` (:func:`phase_smoothness`) of the real, PhaseGen, and
    random-phase patches, and of the real and PhaseGen patches within :data:`BORDER` pixels of the edge
    (``border_smoothness_*``); ``agreement`` (:func:`phase_agreement`, mean over patches) of PhaseGen and of
    the constant-phase baseline with the real phase. A good phase model is as smooth as the real phase
    and agrees with it better than a constant phase (which only captures the mean phase).

    Raises:
        DataError: the synthetic store has no ``source_patch_id`` or names patches the real store lacks.
    """
    syn = synthetic if isinstance(synthetic, Store) else Store(synthetic)
    src = real if real is not None else syn.meta.get("source")
    if src is None:
        raise DataError(syn.path, "source", "no real store given and none recorded in meta.json")
    src = src if isinstance(src, Store) else Store(src)
    if "source_patch_id" not in syn.manifest.columns:
        raise DataError(syn.path, "source_patch_id", "not a PhaseGen store (manifest lacks this column)")
    pos = pd.Series(np.arange(len(src)), index=src.manifest["patch_id"].astype(str))
    ids = syn.manifest["source_patch_id"].astype(str)
    missing = sorted(set(ids) - set(pos.index))
    if missing:
        raise DataError(src.path, "patch_id", f"{len(missing)} source patches missing, e.g. {missing[:3]}")
    # Per-patch values in chunks (a real-data store does not fit in memory twice), then means per sequence.
    cols: dict[str, list[np.ndarray]] = {k: [] for k in _PHASE_STATS}
    src_idx = pos[ids].to_numpy()
    for a in range(0, len(syn), chunk):
        g = syn.read("patches", np.arange(a, min(a + chunk, len(syn))))
        r = src.read("patches", src_idx[a : a + chunk])
        cols["smoothness_real"].append(patch_phase_smoothness(r))
        cols["smoothness_phasegen"].append(patch_phase_smoothness(g))
        cols["smoothness_random"].append(patch_phase_smoothness(random_phase(r, start=a)))
        cols["border_smoothness_real"].append(patch_phase_smoothness(r, border=BORDER))
        cols["border_smoothness_phasegen"].append(patch_phase_smoothness(g, border=BORDER))
        cols["agreement_phasegen"].append(phase_agreement(g, r))
        cols["agreement_constant"].append(phase_agreement(constant_phase(r), r))
    per_patch = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    per_patch.insert(0, "sequence", syn.manifest["sequence"].astype(str).to_numpy())
    rows = []
    for seq in [*sorted(set(per_patch["sequence"])), "all"]:
        part = per_patch if seq == "all" else per_patch[per_patch["sequence"] == seq]
        rows.append({"sequence": seq, "n": len(part), **{k: float(part[k].mean()) for k in _PHASE_STATS}})
    return pd.DataFrame(rows)


def phasegen_markdown(table: pd.DataFrame) -> str:
    """The :func:`evaluate_phasegen` table as Markdown."""
    lines = [
        "| Sequence | n | smoothness real | smoothness PhaseGen | smoothness random | border real "
        "| border PhaseGen | agreement PhaseGen | agreement constant |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.sequence} | {r.n} | {r.smoothness_real:.3f} | {r.smoothness_phasegen:.3f} "
            f"| {r.smoothness_random:.3f} | {r.border_smoothness_real:.3f} "
            f"| {r.border_smoothness_phasegen:.3f} "
            f"| {r.agreement_phasegen:.3f} | {r.agreement_constant:.3f} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "BORDER",
    "GLOBAL_PHASE_MODES",
    "PhaseGenTask",
    "alphas_cumprod",
    "beta_schedule",
    "constant_phase",
    "draw_noise",
    "evaluate_phasegen",
    "generate_phasegen_store",
    "load_phasegen",
    "magnitude_scale",
    "patch_store_path",
    "phase_agreement",
    "patch_phase_smoothness",
    "phase_smoothness",
    "phasegen_markdown",
    "random_phase",
    "sample_phase",
    "sampling_timesteps",
    "stage_dir",
    "to_complex",
    "train_phasegen",
    "training_target",
]
