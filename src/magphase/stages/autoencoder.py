"""Stage ``autoencoder``: train the conditional VAE (paper Sec. 2.2) with the shared engine, then evaluate it.

:class:`~magphase.data.datasets.PatchDataset` reads one split of the patch store lazily.
:class:`AutoencoderTask` is the engine's :class:`~magphase.training.TrainTask`: optional random flips,
a posterior draw ``z ~ N(mu, sigma^2)``, and the float32 loss of paper Eq. 1
(:func:`magphase.models.losses.vae_loss`). :func:`train_autoencoder` trains into any engine folder;
:func:`run` is the pipeline stage (train, then Table 3 and Fig. 3 on the test split).

Run layout (``RUN`` = the run directory)::

    RUN/autoencoder/            engine run folder: checkpoint.pt, ema.safetensors + ema.json (the model
                                :func:`magphase.models.cvae.load_autoencoder` reads), metrics.jsonl,
                                loss_curves.png
    RUN/autoencoder/val.jsonl   validation metrics of the EMA model at every checkpoint
    RUN/autoencoder/config.yaml the resolved config of the run
    RUN/autoencoder/evaluation/ Table 3 (CSV, Markdown), Fig. 3, metrics.json
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from magphase.config import MagphaseConfig, dump_config
from magphase.config.autoencoder import AutoencoderConfig
from magphase.data.datasets import PatchDataset, random_flips
from magphase.data.store import Store
from magphase.errors import ConfigError, DataError
from magphase.models.cvae import AutoencoderSpec, ConditionalVAE, autoencoder_model_config
from magphase.models.losses import vae_loss
from magphase.stages.base import RunContext, Stage, engine_progress, jsonable
from magphase.training import CheckpointEvent, TrainResult, TrainTaskBase, fit
from magphase.training.distributed import is_main_process
from magphase.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

VAL_NAME = "val.jsonl"
#: Validation patches scored at each checkpoint (a fixed, evenly spaced subset of the val split).
VAL_MAX_PATCHES = 256


# -------------------------------------------------------------------------------------------- data


# -------------------------------------------------------------------------------------------- task
def network_spec(cfg: AutoencoderConfig) -> AutoencoderSpec:
    """The :class:`AutoencoderSpec` of a config (preset or explicit ``network``)."""
    net = cfg.network
    return AutoencoderSpec(**net.model_dump())


class AutoencoderTask(TrainTaskBase):
    """The CVAE as a :class:`~magphase.training.TrainTask`: batches ``{"x", "sequence"}``, loss of Eq. 1."""

    def __init__(
        self, spec: AutoencoderSpec, lambda_grad: float, lambda_kl: float, augmentation: str = "flips"
    ):
        if augmentation not in ("none", "flips"):
            raise ConfigError(f"autoencoder.augmentation: expected 'none' or 'flips', got {augmentation!r}")
        self.spec = spec
        self.lambda_grad = lambda_grad
        self.lambda_kl = lambda_kl
        self.augmentation = augmentation

    def build_model(self) -> nn.Module:
        return ConditionalVAE(self.spec)

    def loss(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x, seq = batch["x"], batch["sequence"]
        if self.augmentation == "flips":
            x = random_flips(x)
        x_hat, mu, logvar = model(x, seq, sample=True)
        terms = vae_loss(x_hat, x, mu, logvar, self.lambda_grad, self.lambda_kl)
        return terms.total, {
            "recon": terms.recon.detach(),
            "grad": terms.grad.detach(),
            "kl": terms.kl.detach(),
        }

    def model_config(self) -> dict[str, Any]:
        return autoencoder_model_config(self.spec)


# ------------------------------------------------------------------------------------ validation
@torch.no_grad()
def validation_metrics(
    model: ConditionalVAE, dataset: PatchDataset, max_patches: int = VAL_MAX_PATCHES, batch_size: int = 64
) -> dict[str, float]:
    """Mean L1, magnitude PSNR and phase coherence of ``model`` (decoding ``mu``) on a fixed subset.

    The subset is ``max_patches`` evenly spaced items of ``dataset`` (deterministic, no RNG).
    """
    from magphase.evaluation.metrics import reconstruction_metrics

    n = len(dataset)
    picks = np.unique(np.linspace(0, n - 1, min(n, max_patches)).round().astype(np.int64))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    for start in range(0, picks.size, batch_size):
        items = dataset.__getitems__(picks[start : start + batch_size])
        x = torch.stack([it["x"] for it in items]).to(device)
        seq = torch.stack([it["sequence"] for it in items]).to(device)
        mu, _ = model.encode(x, seq)
        x_hat = model.decode(mu, seq)
        per = reconstruction_metrics(x_hat.float().cpu(), x.float().cpu(), with_ssim=False)
        per["l1"] = (x_hat - x).abs().flatten(1).mean(1).float().cpu().numpy()
        for k, v in per.items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(v))
        count += x.shape[0]
    model.train(was_training)
    return {f"val_{k}": v / count for k, v in sums.items()}


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    rows = path.read_text().splitlines() if path.is_file() else []
    # Drop rows at or past this step: a resumed run rewrites what followed its checkpoint.
    keep = [r for r in rows if r.strip() and json.loads(r).get("step", -1) < row["step"]]
    atomic_write_text("".join(r + "\n" for r in keep) + json.dumps(row) + "\n", path)


# ------------------------------------------------------------------------------------------- stage
def train_autoencoder(
    cfg: MagphaseConfig,
    out: str | Path,
    store_path: str | Path,
    *,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
) -> TrainResult:
    """Train the CVAE on the ``train`` split of the patch store ``store_path`` into the engine folder
    ``out`` (``RUN/autoencoder`` in a run).

    The ``val`` split (when present) is scored at every checkpoint with the EMA model (``out/val.jsonl``).
    """
    ae = cfg.autoencoder
    out = Path(out)
    patches = Store(store_path)
    dataset = PatchDataset(patches, split="train", sequence_aliases=ae.sequence_aliases)
    try:
        val_set: PatchDataset | None = PatchDataset(
            patches, split="val", sequence_aliases=ae.sequence_aliases
        )
    except DataError:
        val_set = None
        log.warning("%s: no val split, training without validation metrics", store_path)
    task = AutoencoderTask(network_spec(ae), ae.loss.lambda_grad, ae.loss.lambda_kl, ae.augmentation)
    settings = ae.train.resolved(cfg.seed, cfg.device)
    # Under torchrun every rank runs this function; only rank 0 writes the stage's own files.
    is_main = is_main_process()
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dump_config(cfg), out / "config.yaml")
        if not resume:
            (out / VAL_NAME).unlink(missing_ok=True)
    log.info("autoencoder: %d training patches from %s -> %s", len(dataset), store_path, out)

    def on_checkpoint(event: CheckpointEvent) -> None:
        if val_set is None:
            return
        row = {"step": event.step, **validation_metrics(event.ema_model, val_set)}  # type: ignore[arg-type]
        _append_jsonl(out / VAL_NAME, row)
        log.info("step %d validation: %s", event.step, {k: round(v, 5) for k, v in row.items()})

    return fit(task, dataset, settings, out, resume=resume, progress=progress, on_checkpoint=on_checkpoint)


def run(ctx: RunContext) -> dict[str, Any]:
    """Train (resuming), then evaluate the EMA model on the test split (Table 3, Fig. 3)."""
    from magphase.evaluation.reconstruction import evaluate_autoencoder
    from magphase.models.cvae import load_autoencoder

    settings = ctx.cfg.autoencoder.train
    bar = ctx.bar("autoencoder", settings.steps)
    store = ctx.patches
    result = train_autoencoder(
        ctx.cfg, ctx.layout.autoencoder, store, resume=True, progress=engine_progress(bar)
    )
    summary = {
        "step": result.step,
        "patch_store": str(store),
        "train_patches": int(len(Store(store).select(split="train"))),
        "train_time_s": result.last_metrics.get("time_s"),
        "last_metrics": result.last_metrics,
    }
    if not is_main_process():  # under torchrun: rank 0 evaluates
        return summary
    model = load_autoencoder(result.ema_path, device=ctx.device)
    evaluation = evaluate_autoencoder(
        model,
        store,
        ctx.layout.autoencoder_eval,
        seed=ctx.cfg.seed,
        sequence_aliases=ctx.cfg.autoencoder.sequence_aliases,
        extra={"weights": str(result.ema_path), "step": result.step},
    )
    return {**summary, "evaluation": jsonable(evaluation)}


STAGE = Stage(
    name="autoencoder",
    description="train the sequence-conditioned VAE, evaluate it (Table 3, Fig. 3)",
    run=run,
    config=("autoencoder",),
    config_exclude=("autoencoder.canonical_phase",),  # changes what encode writes, not the model
    reads=("patches",),
    writes=("autoencoder", "autoencoder_eval"),
)


__all__ = [
    "STAGE",
    "VAL_NAME",
    "AutoencoderTask",
    "network_spec",
    "run",
    "train_autoencoder",
    "validation_metrics",
]
