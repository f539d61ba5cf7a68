"""Training the conditional VAE (paper Sec. 2.2) through the shared engine (:func:`magphase.training.fit`).

:class:`PatchDataset` reads one split of the patch store lazily (``patches`` ``N x 2 x 96 x 96``, the
sequence index as condition). :class:`AutoencoderTask` is the engine's :class:`TrainTask`: optional
random flips, a posterior draw ``z ~ N(mu, sigma^2)``, and the float32 loss of paper Eq. 1
(:func:`magphase.models.losses.vae_loss`). :func:`train_autoencoder` runs the stage.

Run layout (``RUN`` = the run directory)::

    RUN/autoencoder/            engine run folder: checkpoint.pt, ema.safetensors + ema.json (the model
                                :func:`magphase.models.autoencoder.load_autoencoder` reads), metrics.jsonl,
                                loss_curves.png
    RUN/autoencoder/val.jsonl   validation metrics of the EMA model at every checkpoint
    RUN/autoencoder/config.yaml the resolved config of the run
    RUN/autoencoder/done.json   completion marker with the config hash
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from magphase.config import MagphaseConfig, config_hash, dump_config
from magphase.config.autoencoder import AutoencoderConfig
from magphase.conventions import PATCH_SIZE, SEQUENCE_INDEX, SEQUENCES
from magphase.data.store import MANIFEST_FILE, Store
from magphase.errors import ConfigError, DataError
from magphase.models.autoencoder import AutoencoderSpec, ConditionalVAE, autoencoder_model_config
from magphase.models.losses import vae_loss
from magphase.training import CheckpointEvent, TrainResult, TrainTaskBase, fit
from magphase.training.distributed import is_main_process
from magphase.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

STAGE_DIR = "autoencoder"
DONE_NAME = "done.json"
VAL_NAME = "val.jsonl"
#: Validation patches scored at each checkpoint (a fixed, evenly spaced subset of the val split).
VAL_MAX_PATCHES = 256


# ------------------------------------------------------------------------------------------- paths
def stage_dir(run_dir: str | Path) -> Path:
    """``RUN/autoencoder``."""
    return Path(run_dir) / STAGE_DIR


def patch_store_path(
    cfg: MagphaseConfig, run_dir: str | Path | None, override: str | Path | None = None
) -> Path:
    """The patch store: ``override``, else ``autoencoder.patch_store``, else ``RUN/prepare/patches``
    (or ``RUN/patches`` when only that exists).

    Raises:
        ConfigError: nothing given and no run directory to look in.
    """
    if override is not None:
        return Path(override)
    if cfg.autoencoder.patch_store is not None:
        return Path(cfg.autoencoder.patch_store)
    if run_dir is None:
        raise ConfigError("autoencoder.patch_store: not set and no run directory given (use --store)")
    candidates = [Path(run_dir) / "prepare" / "patches", Path(run_dir) / "patches"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def external_store_path(cfg: MagphaseConfig, run_dir: str | Path | None) -> Path | None:
    """The external test patch store to encode, or None: ``autoencoder.external_store``, else
    ``RUN/prepare-external/patches`` when it exists."""
    if cfg.autoencoder.external_store is not None:
        return Path(cfg.autoencoder.external_store)
    if run_dir is not None:
        default = Path(run_dir) / "prepare-external" / "patches"
        if default.is_dir():
            return default
    return None


# -------------------------------------------------------------------------------------------- data
def _sequence_key(name: str) -> str:
    # "T2-TIRM", "t2_tirm" and "T2TIRM" are one name: case and separators do not matter.
    return "".join(ch for ch in str(name).upper() if ch.isalnum())


def sequence_indices(
    names: Sequence[str], source: Path | None = None, aliases: dict[str, str] | None = None
) -> np.ndarray:
    """FiLM token per manifest sequence name (``SEQUENCE_INDEX``); other names go through ``aliases``.

    Names are compared ignoring case and separators (``T2-TIRM`` matches ``T2TIRM``).

    Raises:
        DataError: a name that is neither a fastMRI sequence nor an alias (names the manifest column).
    """
    known = {_sequence_key(s): SEQUENCE_INDEX[s] for s in SEQUENCES}
    for alias, target in (aliases or {}).items():
        known.setdefault(_sequence_key(alias), SEQUENCE_INDEX[target])
    keys = [_sequence_key(n) for n in names]
    bad = sorted({str(n) for n, k in zip(names, keys, strict=True) if k not in known})
    if bad:
        raise DataError(
            source,
            "sequence",
            f"unknown sequence names {bad}; expected {SEQUENCES} or an alias in autoencoder.sequence_aliases",
        )
    return np.array([known[k] for k in keys], dtype=np.int64)


class PatchDataset(Dataset):
    """One split of a patch store, read lazily: ``dataset[i] = {"x": 2x96x96 float32, "sequence": long}``.

    ``split=None`` takes every item. Batched reads go through :meth:`__getitems__` (one sorted HDF5
    read per batch instead of one per item), which torch's DataLoader uses when present.

    Raises:
        DataError: no ``patches`` array, a wrong patch shape, a manifest without ``sequence``/``split``,
            unknown sequence names, or an empty split.
    """

    def __init__(
        self,
        store: str | Path | Store,
        split: str | None = "train",
        sequence_aliases: dict[str, str] | None = None,
    ):
        self.store = store if isinstance(store, Store) else Store(store)
        shape = self.store.arrays.get("patches")
        if shape is None:
            raise DataError(self.store.path, "patches", "patch store lacks this array")
        if tuple(shape) != (2, PATCH_SIZE, PATCH_SIZE):
            raise DataError(self.store.path, "patches", f"patches have shape {shape}, expected (2, 96, 96)")
        manifest = self.store.manifest
        for col in ("sequence", "split"):
            if col not in manifest.columns:
                raise DataError(self.store.path / MANIFEST_FILE, col, "manifest lacks this column")
        self.indices = self.store.select(split=split) if split is not None else np.arange(len(self.store))
        if self.indices.size == 0:
            raise DataError(self.store.path / MANIFEST_FILE, "split", f"no items in split {split!r}")
        names = manifest["sequence"].astype(str).to_numpy()[self.indices]
        self.sequence_names = names
        self.sequences = sequence_indices(names, self.store.path / MANIFEST_FILE, sequence_aliases)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "x": torch.from_numpy(self.store.read("patches", int(self.indices[i]))),
            "sequence": torch.tensor(self.sequences[i]),
        }

    def __getitems__(self, items: Sequence[int]) -> list[dict[str, Tensor]]:
        items = np.asarray(items, dtype=np.int64)
        patches = torch.from_numpy(self.store.read("patches", self.indices[items]))
        seqs = torch.from_numpy(self.sequences[items])
        return [{"x": patches[k], "sequence": seqs[k]} for k in range(len(items))]


def random_flips(x: Tensor) -> Tensor:
    """Flip each ``B x C x H x W`` item up/down and left/right, each with probability 1/2 (torch RNG).

    Flips move pixels, not values, so magnitude and phase of every pixel are kept.
    """
    b = x.shape[0]
    flip_rows = torch.rand(b, device=x.device) < 0.5
    flip_cols = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip_rows[:, None, None, None], x.flip(-2), x)
    return torch.where(flip_cols[:, None, None, None], x.flip(-1), x)


# -------------------------------------------------------------------------------------------- task
def network_spec(cfg: AutoencoderConfig) -> AutoencoderSpec:
    """The :class:`AutoencoderSpec` of a config (preset or explicit ``network``)."""
    net = cfg.network_sizes()
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
    run_dir: str | Path,
    *,
    store: str | Path | None = None,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
) -> TrainResult:
    """Train the CVAE on the patch store's ``train`` split into ``RUN/autoencoder``.

    The ``val`` split (when present) is scored at every checkpoint with the EMA model
    (``RUN/autoencoder/val.jsonl``).
    """
    ae = cfg.autoencoder
    store_path = patch_store_path(cfg, run_dir, store)
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
    out = stage_dir(run_dir)
    # Under torchrun every rank runs this function; only rank 0 writes the stage's own files.
    is_main = is_main_process()
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dump_config(cfg), out / "config.yaml")
        (out / DONE_NAME).unlink(missing_ok=True)
        if not resume:
            (out / VAL_NAME).unlink(missing_ok=True)
    log.info("autoencoder: %d training patches from %s -> %s", len(dataset), store_path, out)

    def on_checkpoint(event: CheckpointEvent) -> None:
        if val_set is None:
            return
        row = {"step": event.step, **validation_metrics(event.ema_model, val_set)}  # type: ignore[arg-type]
        _append_jsonl(out / VAL_NAME, row)
        log.info("step %d validation: %s", event.step, {k: round(v, 5) for k, v in row.items()})

    result = fit(task, dataset, settings, out, resume=resume, progress=progress, on_checkpoint=on_checkpoint)
    record = {
        "stage": "autoencoder",
        "config_hash": config_hash(cfg.autoencoder, cfg.seed),
        "step": result.step,
        "ema": str(result.ema_path),
        "patch_store": str(store_path),
        "train_patches": len(dataset),
        "last_metrics": result.last_metrics,
        "train_time_s": result.last_metrics.get("time_s"),
    }
    if is_main:
        atomic_write_text(json.dumps(record, indent=2) + "\n", out / DONE_NAME)
    return result


__all__ = [
    "DONE_NAME",
    "STAGE_DIR",
    "VAL_NAME",
    "AutoencoderTask",
    "PatchDataset",
    "external_store_path",
    "network_spec",
    "patch_store_path",
    "random_flips",
    "sequence_indices",
    "stage_dir",
    "train_autoencoder",
    "validation_metrics",
]
