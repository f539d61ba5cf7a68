"""Stage ``encode``: patch store -> latent store with the trained autoencoder (``magphase encode``).

The latent store has the arrays ``mu`` and ``logvar`` (float32 ``N x 2 x 48 x 48``: the posterior
``N(mu, exp(logvar))`` of every patch) and the SAME manifest as the patch store, row for row, every
split included. No noisy draw is stored: the flow stage samples ``z ~ N(mu, sigma^2)`` fresh every time.

With ``canonical_phase`` every patch is first rotated by ``exp(-i phi0)``, ``phi0`` its global phase
(:func:`magphase.mri.complex.global_phase`), so the latents describe patches whose summed complex value is
real and positive; ``phi0`` goes into the manifest column ``global_phase`` and ``meta.json`` says
``canonical_phase: true``. The absolute phase of a coil-combined image is arbitrary (it is set by the
combination's phase reference), and a flow trained on latents that carry it must decide a random global
rotation from noise: undertrained, it produces patches split into regions of different phase with dark
seams where they meet. Sampling restores a uniformly random global phase after decoding
(:mod:`magphase.generative.sampling`).

``meta.json`` records the source store, the autoencoder weights (path, training step, SHA-256) and latent
statistics over all items (per-channel mean and std of ``mu``, mean posterior std), so a flow stage can
check the scale of its data. A store whose meta matches the same source and weights is up to date and
is not rewritten (unless ``overwrite``). Writes are atomic (:class:`magphase.data.store.StoreWriter`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magphase.data.datasets import PatchDataset
from magphase.data.store import META_FILE, Store, StoreWriter
from magphase.errors import DataError
from magphase.models.cvae import ConditionalVAE
from magphase.models.weights import EMA_WEIGHTS_NAME, read_weights_metadata
from magphase.mri.complex import global_phase, rotate_phase
from magphase.rundir import require_file
from magphase.stages.base import RunContext, Stage
from magphase.utils.integrity import file_sha256

log = logging.getLogger(__name__)

LATENT_KIND = "latents"


def weights_file(autoencoder: str | Path) -> Path:
    """The weights file of an autoencoder run folder (``ema.safetensors``) or the file itself."""
    p = Path(autoencoder)
    return p / EMA_WEIGHTS_NAME if p.is_dir() else p


def provenance(source: str | Path, autoencoder: str | Path, canonical_phase: bool = False) -> dict[str, Any]:
    """What determines a latent store: the source store (path, item count), the weights (path, sha) and
    whether the patches were phase-canonicalised."""
    src = Store(source)
    weights = weights_file(autoencoder)
    if not weights.is_file():
        raise DataError(weights, None, "autoencoder weights not found")
    meta = read_weights_metadata(weights)
    return {
        "source_store": str(Path(source).resolve()),
        "source_count": len(src),
        "autoencoder": str(weights.resolve()),
        "autoencoder_step": meta.get("step"),
        "autoencoder_sha256": file_sha256(weights),
        "canonical_phase": bool(canonical_phase),
    }


def is_up_to_date(out: str | Path, expected: dict[str, Any]) -> bool:
    """True when ``out`` is a latent store written from the same source store and weights."""
    meta_path = Path(out) / META_FILE
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    return meta.get("kind") == LATENT_KIND and all(meta.get(k) == v for k, v in expected.items())


@torch.no_grad()
def encode_store(
    model: ConditionalVAE,
    source: str | Path,
    out: str | Path,
    *,
    autoencoder: str | Path | None = None,
    batch_size: int = 128,
    sequence_aliases: dict[str, str] | None = None,
    canonical_phase: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Encode every patch of ``source`` into the latent store ``out`` (atomic).

    Args:
        model: the trained autoencoder (eval mode; its device is used).
        source: patch store (``patches`` ``N x 2 x 96 x 96``, manifest with ``sequence``).
        out: latent store folder to write.
        autoencoder: where ``model``'s weights came from (run folder or file): recorded in meta.json and
            used to decide whether an existing ``out`` is up to date. None: always rewrite.
        batch_size: patches per forward pass.
        sequence_aliases: manifest sequence names outside the five fastMRI ones -> FiLM token.
        canonical_phase: rotate each patch to global phase 0 before encoding; the removed angle goes
            into the manifest column ``global_phase`` (see the module docstring).
        overwrite: rewrite even an up-to-date store.
        progress: called with the number of patches encoded after each batch.
    Returns:
        ``out``.
    Raises:
        DataError: a source that is not a patch store, or unknown sequence names.
    """
    out = Path(out)
    expected = provenance(source, autoencoder, canonical_phase) if autoencoder is not None else None
    if expected is not None and not overwrite and is_up_to_date(out, expected):
        log.info("%s is up to date (same patch store and autoencoder weights): skipped", out)
        return out
    store = Store(source)
    dataset = PatchDataset(store, split=None, sequence_aliases=sequence_aliases)
    n = len(store)
    latent_shape = tuple(model.latent_shape)
    device = next(model.parameters()).device
    model.eval()
    rows = store.manifest.to_dict("records")
    sum_mu = np.zeros(latent_shape[0], np.float64)
    sum_mu2 = np.zeros(latent_shape[0], np.float64)
    sum_sigma = 0.0
    meta = {
        "source_kind": store.meta.get("kind"),
        **(
            expected
            or {"source_store": str(Path(source).resolve()), "canonical_phase": bool(canonical_phase)}
        ),
    }
    with StoreWriter(
        out, {"mu": latent_shape, "logvar": latent_shape}, kind=LATENT_KIND, meta=meta, overwrite=True
    ) as w:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            patches = store.read("patches", slice(start, stop))
            batch_rows = rows[start:stop]
            if canonical_phase:
                phi0 = global_phase(patches)
                patches = rotate_phase(patches, -phi0)
                batch_rows = [{**r, "global_phase": float(a)} for r, a in zip(batch_rows, phi0, strict=True)]
            x = torch.from_numpy(patches).to(device)
            seq = torch.from_numpy(dataset.sequences[start:stop]).to(device)
            mu, logvar = model.encode(x, seq)
            mu_np = mu.float().cpu().numpy()
            logvar_np = logvar.float().cpu().numpy()
            sum_mu += mu_np.sum(axis=(0, 2, 3), dtype=np.float64)
            sum_mu2 += np.square(mu_np, dtype=np.float64).sum(axis=(0, 2, 3))
            sum_sigma += float(np.exp(0.5 * logvar_np.astype(np.float64)).sum())
            w.append(batch_rows, mu=mu_np, logvar=logvar_np)
            if progress is not None:
                progress(stop - start)
        per_channel = max(n, 1) * latent_shape[1] * latent_shape[2]
        mean = sum_mu / per_channel
        w.meta["latent_stats"] = {
            "mu_mean": mean.tolist(),
            "mu_std": np.sqrt(np.maximum(sum_mu2 / per_channel - mean**2, 0.0)).tolist(),
            "sigma_mean": sum_sigma / max(n * int(np.prod(latent_shape)), 1),
        }
    store.close()
    log.info("encoded %d patches of %s -> %s", n, source, out)
    return out


def run(ctx: RunContext) -> dict[str, Any]:
    """Encode the patch store (and the external store, when there is one) with ``RUN/autoencoder``."""
    from magphase.models.cvae import load_autoencoder

    weights = require_file(
        ctx.layout.autoencoder_weights, "no exported EMA weights: train the autoencoder first"
    )
    model = load_autoencoder(weights, device=ctx.device)
    jobs = [(ctx.patches, ctx.layout.latents)]
    if ctx.external_patches is not None:
        jobs.append((ctx.external_patches, ctx.layout.external_latents))
    out = {}
    for source, target in jobs:
        encode_store(
            model,
            source,
            target,
            autoencoder=ctx.layout.autoencoder,
            batch_size=ctx.cfg.autoencoder.encode_batch_size,
            sequence_aliases=ctx.cfg.autoencoder.sequence_aliases,
            canonical_phase=ctx.cfg.autoencoder.canonical_phase,
            progress=ctx.bar(f"encode {source.parent.name}", len(Store(source))),
        )
        out[str(target)] = len(Store(target))
    return {"stores": out}


STAGE = Stage(
    name="encode",
    description="latent stores (mu, logvar 2x48x48) of the patch and external stores",
    run=run,
    config=("autoencoder.sequence_aliases", "autoencoder.canonical_phase"),
    reads=("autoencoder_weights", "patches", "external_patches"),
    writes=("latents", "external_latents"),
)


__all__ = [
    "LATENT_KIND",
    "STAGE",
    "encode_store",
    "is_up_to_date",
    "provenance",
    "run",
    "weights_file",
]
