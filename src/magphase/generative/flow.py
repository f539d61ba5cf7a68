"""The two training stages of the latent flow model as :class:`~magphase.training.TrainTask` s.

Stage 1 (paper Sec. 2.3.1) trains the velocity U-Net from scratch on the latent store, conditioned on
the sequence; the sequence is replaced by the null token with probability ``sequence_dropout``.

Stage 2 (Sec. 2.3.2) starts from stage-1 EMA weights, adds a zero-initialised class embedding
(normal, abnormal, unknown, null) to the conditioning sum and trains in two phases: phase 1 only the
class embedding (every stage-1 parameter frozen, ``requires_grad=False``); phase 2 everything, the
stage-1 parameters at ``pretrained_lr_scale`` times the learning rate. Samples of the
``unknown_sequences`` (AXT1PRE, AXT2) and unlabeled samples get the ``unknown`` token; the class is
dropped to null with probability ``class_dropout``; weighted sampling balances sequences and, within
a sequence, class tokens (so normal and abnormal are drawn equally often).

Both stages draw a fresh ``z ~ N(mu, sigma^2)`` from the store's posterior every time a latent is
used (``latents="posterior"``), or use ``mu`` (``latents="mean"``); nothing noisy is cached.

Run layout (``RUN`` = the run directory)::

    RUN/flow/stage1/                  engine run folder: checkpoint.pt, ema.safetensors, snapshots/...
    RUN/flow/stage2/phase1/           engine run folder of phase 1
    RUN/flow/stage2/phase2/           engine run folder of phase 2 (the stage-2 model)
    RUN/flow/stage{1,2}/selected.json optional: the snapshot chosen by model selection
    RUN/flow/stage{1,2}/done.json     completion marker with the config hash
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from magphase.config import MagphaseConfig, config_hash
from magphase.config.flow import FlowConfig, UNetConfig
from magphase.conventions import (
    CLASS_TOKEN_INDEX,
    LATENT_SHAPE,
    NULL_CLASS,
    NULL_SEQUENCE,
    SEQUENCE_INDEX,
    SEQUENCES,
    UNKNOWN_CLASS,
    UNLABELLED_SEQUENCES,
)
from magphase.data.store import MANIFEST_FILE, Store
from magphase.errors import ConfigError, DataError
from magphase.generative.loss import flow_matching_loss
from magphase.generative.path import TimeSampler, sample_path
from magphase.models.unet import CLASS_EMBEDDING_PREFIX, VelocityUNet
from magphase.models.weights import EMA_WEIGHTS_NAME, load_ema_weights, read_weights_metadata
from magphase.training import TrainResult, TrainTaskBase, fit, list_snapshots
from magphase.training.checkpoint import CHECKPOINT_NAME
from magphase.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

SELECTED_NAME = "selected.json"
DONE_NAME = "done.json"
# In RUN/flow/stage2: which stage-1 weights (path, tensor digest) its checkpoints were started from.
STAGE2_INIT_NAME = "init.json"


# ------------------------------------------------------------------------------------------- data
def class_tokens(
    sequences: np.ndarray, labels: np.ndarray, unknown_sequences: tuple[str, ...] = UNLABELLED_SEQUENCES
) -> np.ndarray:
    """Stage-2 class token per sample: normal / abnormal, or unknown for unlabeled samples and for
    samples of ``unknown_sequences`` (whose labels are not used, paper Sec. 2.3.2)."""
    out = np.full(len(labels), UNKNOWN_CLASS, dtype=np.int64)
    labelled = ~np.isin(sequences, list(unknown_sequences))
    for name in ("normal", "abnormal"):
        out[labelled & (labels == name)] = CLASS_TOKEN_INDEX[name]
    return out


class LatentFlowDataset(Dataset):
    """Items of a latent store for flow training, read lazily.

    ``dataset[i]`` is a dict: ``mu`` and ``logvar`` float32 ``C x S x S`` (the posterior; the paper's
    autoencoder gives ``2 x 48 x 48``),
    ``sequence`` (long, ``SEQUENCE_INDEX``) and ``class_token`` (long, ``CLASS_TOKEN_INDEX``;
    see :func:`class_tokens`). The noisy draw ``z`` is made in the task's loss, fresh every step.

    Raises:
        DataError: missing ``mu``/``logvar`` arrays, wrong latent shape, unknown sequence names or
            labels, or no items in ``split``.
    """

    def __init__(
        self,
        store: str | Path | Store,
        split: str | None = "train",
        unknown_sequences: tuple[str, ...] = UNLABELLED_SEQUENCES,
        latent_shape: tuple[int, ...] | None = None,
    ):
        self.store = store if isinstance(store, Store) else Store(store)
        for name in ("mu", "logvar"):
            if name not in self.store.arrays:
                raise DataError(self.store.path, name, "latent store lacks this array")
            shape = self.store.arrays[name]
            if latent_shape is not None and shape != tuple(latent_shape):
                raise DataError(self.store.path, name, f"latents have shape {shape}, expected {latent_shape}")
            if len(shape) != 3 or shape[-1] != shape[-2] or shape != self.store.arrays["mu"]:
                raise DataError(self.store.path, name, f"latents must be C x S x S like mu, got {shape}")
        self.latent_shape: tuple[int, int, int] = tuple(self.store.arrays["mu"])  # type: ignore[assignment]
        manifest = self.store.manifest
        for col in ("sequence", "label", "split"):
            if col not in manifest.columns:
                raise DataError(self.store.path / MANIFEST_FILE, col, "manifest lacks this column")
        self.split = split
        self.indices = self.store.select(split=split) if split is not None else np.arange(len(self.store))
        if self.indices.size == 0:
            raise DataError(self.store.path / MANIFEST_FILE, "split", f"no items in split {split!r}")
        rows = manifest.iloc[self.indices]
        seqs = rows["sequence"].astype(str).to_numpy()
        bad = sorted(set(seqs) - set(SEQUENCES))
        if bad:
            raise DataError(self.store.path / MANIFEST_FILE, "sequence", f"unknown sequence names {bad}")
        labels = rows["label"].astype(str).to_numpy()
        bad = sorted(set(labels) - {"normal", "abnormal", "unlabeled"})
        if bad:
            raise DataError(self.store.path / MANIFEST_FILE, "label", f"unknown labels {bad}")
        self.sequence_names = seqs
        self.labels = labels
        self.sequences = np.array([SEQUENCE_INDEX[s] for s in seqs], dtype=np.int64)
        self.class_tokens = class_tokens(seqs, labels, tuple(unknown_sequences))

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        j = int(self.indices[i])
        return {
            "mu": torch.from_numpy(self.store.read("mu", j)),
            "logvar": torch.from_numpy(self.store.read("logvar", j)),
            "sequence": torch.tensor(self.sequences[i]),
            "class_token": torch.tensor(self.class_tokens[i]),
        }


def balanced_weights(groups: list[np.ndarray], levels: int) -> np.ndarray:
    """Sampling weights making groups equally likely, hierarchically.

    ``groups[0]`` is the outer key (e.g. sequence), ``groups[1]`` the inner key (e.g. class token)
    nested in it. With ``levels = 1`` every outer group gets the same total weight; with
    ``levels = 2`` additionally every inner group present within an outer group gets the same share.
    Weights sum to 1.
    """
    n = len(groups[0])
    w = np.ones(n, dtype=np.float64)
    outer = groups[0]
    outer_vals = np.unique(outer)
    for o in outer_vals:
        sel = outer == o
        if levels >= 2:
            inner = groups[1][sel]
            inner_vals, counts = np.unique(inner, return_counts=True)
            share = {v: 1.0 / (len(inner_vals) * c) for v, c in zip(inner_vals, counts, strict=True)}
            w[sel] = np.array([share[v] for v in inner]) / len(outer_vals)
        else:
            w[sel] = 1.0 / (sel.sum() * len(outer_vals))
    return w / w.sum()


def stage1_sample_weights(dataset: LatentFlowDataset, balance_sequences: bool) -> np.ndarray | None:
    """Stage-1 weights: None (uniform) or every sequence equally often."""
    return balanced_weights([dataset.sequences], 1) if balance_sequences else None


def stage2_sample_weights(
    dataset: LatentFlowDataset, balance_sequences: bool = True, balance_classes: bool = True
) -> np.ndarray | None:
    """Stage-2 weights: sequences equally often and, within each, every class token equally often
    (normal and abnormal balanced in the labelled sequences). None when neither is asked for."""
    if balance_sequences and balance_classes:
        return balanced_weights([dataset.sequences, dataset.class_tokens], 2)
    if balance_sequences:
        return balanced_weights([dataset.sequences], 1)
    if balance_classes:
        return balanced_weights([dataset.class_tokens], 1)
    return None


def estimate_latent_scale(
    dataset: LatentFlowDataset, latents: str = "posterior", max_items: int = 2048, seed: int = 0
) -> float:
    """``1 / std`` of the training latents the flow sees (posterior draws or ``mu``).

    The flow's noise has unit variance; latents of a much smaller scale (a KL-light autoencoder gives
    std ~ 0.1-0.2) would leave the path noise-dominated until t ~ 0.9, wasting most of the time
    range. Estimated from up to ``max_items`` items (seeded subset); for posterior draws the variance
    is ``var(mu) + mean(exp(logvar))``.
    """
    rng = np.random.default_rng([seed, 0x5CA1E])
    n = len(dataset)
    pick = np.sort(rng.choice(n, size=min(n, max_items), replace=False))
    rows = dataset.indices[pick]
    mu = dataset.store.read("mu", rows).astype(np.float64)
    var = mu.var()
    if latents == "posterior":
        var += np.exp(dataset.store.read("logvar", rows).astype(np.float64)).mean()
    if not var > 0:
        raise DataError(dataset.store.path, "mu", "latents have zero variance: cannot scale them")
    return float(1.0 / np.sqrt(var))


# ------------------------------------------------------------------------------------------ tasks
def _drop(tokens: Tensor, p: float, null: int) -> Tensor:
    if p <= 0:
        return tokens
    mask = torch.rand(tokens.shape, device=tokens.device) < p
    return torch.where(mask, torch.full_like(tokens, null), tokens)


class FlowTask(TrainTaskBase):
    """Shared flow-matching loss of both stages (paper Eq. 3-4).

    Per step: ``z = s * (mu + exp(logvar / 2) * n)`` (or ``s * mu``), ``eps ~ N(0, I)``, ``t ~`` the
    time sampler, ``x_t = (1 - t) eps + t z``; regress ``v(x_t, t, c)`` onto ``z - eps`` in float32.
    ``s = latent_scale`` brings the latents to unit variance, the scale of the noise (the sampler
    divides by it again). All draws use the global torch RNG, which the engine seeds per rank and
    checkpoints.
    """

    stage: int = 0

    def __init__(
        self,
        unet: UNetConfig,
        time_sampler: TimeSampler,
        latent_shape: tuple[int, int, int] = LATENT_SHAPE,
        latents: str = "posterior",
        sequence_dropout: float = 0.1,
        class_dropout: float = 0.0,
        latent_scale: float = 1.0,
        canonical_phase: bool = False,
    ):
        if not (latent_scale > 0 and np.isfinite(latent_scale)):
            raise ConfigError(f"flow.latent_scale must be a positive finite number, got {latent_scale}")
        if latents not in ("posterior", "mean"):
            raise ConfigError(f"flow.latents: expected 'posterior' or 'mean', got {latents!r}")
        self.unet = unet
        self.latent_shape = tuple(latent_shape)
        self.time_sampler = time_sampler
        self.latents = latents
        self.sequence_dropout = sequence_dropout
        self.class_dropout = class_dropout
        self.latent_scale = float(latent_scale)
        self.canonical_phase = bool(canonical_phase)

    def model_config(self) -> dict[str, Any]:
        return {
            "kind": "flow_unet",
            "stage": self.stage,
            "unet": self.unet.model_dump(mode="json"),
            "latent_shape": list(self.latent_shape),
            "latent_scale": self.latent_scale,
            "class_conditioning": self.stage == 2,
            # Trained on latents of phase-canonical patches: sampling restores a random global phase.
            "canonical_phase": self.canonical_phase,
        }

    def _new_model(self) -> VelocityUNet:
        c, _, s = self.latent_shape
        model = VelocityUNet(**self.unet.model_dump(), in_channels=c, input_size=s)
        model.latent_scale = self.latent_scale
        model.canonical_phase = self.canonical_phase
        return model

    def condition(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def draw_latents(self, batch: dict[str, Tensor]) -> Tensor:
        """A fresh ``z ~ N(mu, exp(logvar))`` per call (``posterior``), or ``mu`` (``mean``)."""
        mu = batch["mu"]
        if self.latents == "mean":
            return mu
        return mu + torch.exp(0.5 * batch["logvar"]) * torch.randn_like(mu)

    def model_latents(self, batch: dict[str, Tensor]) -> Tensor:
        """The flow's data ``z``: a fresh draw (:meth:`draw_latents`) times ``latent_scale``."""
        return self.draw_latents(batch) * self.latent_scale

    def loss(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.model_latents(batch)
        noise = torch.randn_like(z)
        t = self.time_sampler(z.shape[0], device=z.device)
        path = sample_path(z, noise, t)
        sequence, label = self.condition(batch)
        v = model(path.x_t, path.t, sequence, label)
        return flow_matching_loss(v, path.target_velocity), {}


class Stage1Task(FlowTask):
    """Stage 1: a fresh U-Net conditioned on the sequence (null with p = ``sequence_dropout``)."""

    stage = 1

    def build_model(self) -> VelocityUNet:
        return self._new_model()

    def condition(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        return _drop(batch["sequence"], self.sequence_dropout, NULL_SEQUENCE), None


class Stage2Task(FlowTask):
    """Stage 2, one phase: stage-1 (or phase-1) weights + the class embedding.

    Args:
        init_weights: state dict to start from: stage-1 EMA weights (without class embedding) for
            phase 1, phase-1 EMA weights (with it) for phase 2.
        phase: 1 = train only the class embedding (everything else frozen); 2 = train everything,
            the stage-1 parameters with ``lr_scale = pretrained_lr_scale``.
    """

    stage = 2

    def __init__(
        self,
        unet: UNetConfig,
        time_sampler: TimeSampler,
        latent_shape: tuple[int, int, int],
        init_weights: dict[str, Tensor],
        phase: int,
        pretrained_lr_scale: float = 0.1,
        weight_decay: float = 0.0,
        unknown_sequences: tuple[str, ...] = UNLABELLED_SEQUENCES,
        **kwargs: Any,
    ):
        super().__init__(unet, time_sampler, latent_shape, **kwargs)
        self.unknown_sequences = tuple(unknown_sequences)
        if phase not in (1, 2):
            raise ConfigError(f"stage-2 phase must be 1 or 2, got {phase}")
        self.init_weights = init_weights
        self.phase = phase
        self.pretrained_lr_scale = pretrained_lr_scale
        self.weight_decay = weight_decay

    def model_config(self) -> dict[str, Any]:
        # Sampling refuses normal / abnormal for these sequences: the model only saw them as unknown.
        return {**super().model_config(), "unknown_sequences": list(self.unknown_sequences)}

    def build_model(self) -> VelocityUNet:
        model = self._new_model()
        model.unknown_sequences = self.unknown_sequences
        has_class = any(k.startswith(CLASS_EMBEDDING_PREFIX) for k in self.init_weights)
        if has_class:
            model.add_class_embedding()
            model.load_state_dict(self.init_weights)
        else:
            model.load_state_dict(self.init_weights)
            model.add_class_embedding()  # zero-initialised: the model still computes stage 1
        if self.phase == 1:
            for name, p in model.named_parameters():
                p.requires_grad_(is_new_conditioning_parameter(name))
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = []
        for new in (True, False):
            for decay in (True, False):
                params = [
                    p
                    for n, p in model.named_parameters()
                    if p.requires_grad and is_new_conditioning_parameter(n) == new and (p.ndim >= 2) == decay
                ]
                groups.append(
                    {
                        "params": params,
                        "lr_scale": 1.0 if new else self.pretrained_lr_scale,
                        "weight_decay": self.weight_decay if decay else 0.0,
                        "name": f"{'new' if new else 'pretrained'}{'' if decay else '_no_decay'}",
                    }
                )
        return groups

    def condition(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        return (
            _drop(batch["sequence"], self.sequence_dropout, NULL_SEQUENCE),
            _drop(batch["class_token"], self.class_dropout, NULL_CLASS),
        )


def is_new_conditioning_parameter(name: str) -> bool:
    """Whether a parameter is one that stage 2 introduces (trained alone in phase 1)."""
    return name.startswith(CLASS_EMBEDDING_PREFIX)


# ----------------------------------------------------------------------------------- run layout
def stage_dir(run_dir: str | Path, stage: int) -> Path:
    """``RUN/flow/stage{1,2}``."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    return Path(run_dir) / "flow" / f"stage{stage}"


def training_dir(run_dir: str | Path, stage: int) -> Path:
    """The engine run folder holding the stage's final weights and kept snapshots."""
    return stage_dir(run_dir, 1) if stage == 1 else stage_dir(run_dir, 2) / "phase2"


def list_flow_snapshots(run_dir: str | Path, stage: int) -> dict[int, Path]:
    """``{step: path}`` of the stage's kept EMA snapshots (stage 2: phase 2's), ascending."""
    return list_snapshots(training_dir(run_dir, stage))


def select_flow_snapshot(run_dir: str | Path, stage: int, step: int, **info: Any) -> Path:
    """Record the snapshot chosen by model selection (``info``: criterion, value, ...).

    Later users (stage-2 initialisation, ``magphase sample`` without ``--checkpoint``) then use it
    instead of the final EMA weights. Returns the ``selected.json`` path.
    """
    snaps = list_flow_snapshots(run_dir, stage)
    if step not in snaps:
        raise ConfigError(f"flow stage {stage} has no snapshot at step {step} (kept: {sorted(snaps)})")
    # The path is stored relative to the run directory so a moved run stays valid.
    rel = snaps[step].relative_to(Path(run_dir))
    record = {"stage": stage, "step": step, "path": str(rel), **info}
    return atomic_write_text(
        json.dumps(record, indent=2, default=str) + "\n", stage_dir(run_dir, stage) / SELECTED_NAME
    )


def flow_weights(run_dir: str | Path, stage: int) -> Path:
    """The inference weights of a stage: the selected snapshot if one was recorded, else final EMA.

    Raises:
        DataError: the stage has not produced weights.
    """
    selected = stage_dir(run_dir, stage) / SELECTED_NAME
    if selected.is_file():
        return Path(run_dir) / json.loads(selected.read_text())["path"]
    path = training_dir(run_dir, stage) / EMA_WEIGHTS_NAME
    if not path.is_file():
        raise DataError(path, None, f"flow stage {stage} has no EMA weights (train it first)")
    return path


def canonical_latents(dataset: LatentFlowDataset) -> bool:
    """Whether the latent store holds phase-canonical patches (``meta.json`` ``canonical_phase``)."""
    return bool(dataset.store.meta.get("canonical_phase", False))


def build_flow_model(model_config: dict[str, Any]) -> VelocityUNet:
    """The U-Net described by a weights file's ``model_config`` (random weights)."""
    if model_config.get("kind") != "flow_unet":
        raise ValueError(f"not a flow model config: {model_config}")
    c, _, s = model_config.get("latent_shape", LATENT_SHAPE)
    model = VelocityUNet(**model_config["unet"], in_channels=c, input_size=s)
    model.latent_scale = float(model_config.get("latent_scale", 1.0))
    model.canonical_phase = bool(model_config.get("canonical_phase", False))
    if model_config.get("class_conditioning"):
        model.add_class_embedding()
        # Weights from before this was recorded: None (sampling cannot check the label).
        unknown = model_config.get("unknown_sequences")
        model.unknown_sequences = tuple(unknown) if unknown is not None else None
    return model


def load_flow_model(path: str | Path, device: str | torch.device = "cpu") -> VelocityUNet:
    """Rebuild a flow U-Net from exported EMA weights (``ema.safetensors`` or a snapshot), eval mode.

    Raises:
        DataError: missing file, not safetensors, or no flow model config in its metadata.
    """
    meta = read_weights_metadata(path)
    cfg = meta.get("model_config")
    if not isinstance(cfg, dict) or cfg.get("kind") != "flow_unet":
        raise DataError(path, "model_config", "weights metadata does not describe a flow U-Net")
    model = build_flow_model(cfg)
    model.load_state_dict(load_ema_weights(path))
    return model.to(device).eval()


def flow_stage_of(path: str | Path) -> int:
    """The stage (1 or 2) a flow weights file was trained in."""
    return int(read_weights_metadata(path)["model_config"]["stage"])


# -------------------------------------------------------------------------------------- training
def _time_sampler(cfg: FlowConfig) -> TimeSampler:
    ts = cfg.time_sampling
    return TimeSampler(ts.distribution, ts.loc, ts.scale)


def latent_store_path(cfg: MagphaseConfig, run_dir: str | Path, override: str | Path | None = None) -> Path:
    """The latent store to train on: ``override``, else ``flow.latent_store``, else ``RUN/latents``."""
    if override is not None:
        return Path(override)
    if cfg.flow.latent_store is not None:
        return Path(cfg.flow.latent_store)
    return Path(run_dir) / "latents"


def _mark_done(folder: Path, cfg: MagphaseConfig, stage: int, result: TrainResult) -> None:
    record = {
        "stage": stage,
        "config_hash": config_hash(cfg.flow, cfg.seed),
        "step": result.step,
        "ema": str(result.ema_path),
        "last_metrics": result.last_metrics,
    }
    atomic_write_text(json.dumps(record, indent=2) + "\n", folder / DONE_NAME)


def train_stage1(
    cfg: MagphaseConfig,
    run_dir: str | Path,
    *,
    latents: str | Path | None = None,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
) -> TrainResult:
    """Train stage 1 on the latent store's ``train`` split into ``RUN/flow/stage1``."""
    flow = cfg.flow
    dataset = LatentFlowDataset(latent_store_path(cfg, run_dir, latents), split="train")
    scale = flow.latent_scale or estimate_latent_scale(dataset, flow.latents, seed=cfg.seed)
    task = Stage1Task(
        flow.network(),
        _time_sampler(flow),
        dataset.latent_shape,
        latents=flow.latents,
        sequence_dropout=flow.stage1.sequence_dropout,
        latent_scale=scale,
        canonical_phase=canonical_latents(dataset),
    )
    settings = flow.stage1.train.resolved(cfg.seed, cfg.device)
    out = stage_dir(run_dir, 1)
    log.info("flow stage 1: %d training latents (scale %.4g) -> %s", len(dataset), scale, out)
    result = fit(
        task,
        dataset,
        settings,
        out,
        resume=resume,
        sample_weights=stage1_sample_weights(dataset, flow.stage1.balance_sequences),
        progress=progress,
    )
    _mark_done(out, cfg, 1, result)
    return result


def weights_digest(state: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict's tensors (names, dtypes, shapes and bytes; file metadata ignored)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _stage2_resume(root: Path, init_path: Path, digest: str, resume: bool) -> bool:
    """Whether stage 2 may resume: only if its checkpoints were started from these very stage-1 weights.

    A stage-1 re-selection (another snapshot) or retraining changes the weights stage 2 starts from; its
    old phase checkpoints then belong to another model and are discarded (fresh start), not resumed.
    """
    record = root / STAGE2_INIT_NAME
    if not resume:
        return False
    has_checkpoint = any((root / f"phase{p}" / CHECKPOINT_NAME).is_file() for p in (1, 2))
    if not has_checkpoint:
        return True
    try:
        recorded = json.loads(record.read_text()).get("sha256") if record.is_file() else None
    except (OSError, ValueError):
        recorded = None
    if recorded == digest:
        return True
    log.warning(
        "flow stage 2: its checkpoints in %s were not started from %s (%s); training stage 2 afresh",
        root,
        init_path,
        "no record of their stage-1 weights" if recorded is None else "other stage-1 weights",
    )
    return False


def stage2_init_weights(cfg: MagphaseConfig, run_dir: str | Path) -> Path:
    """The stage-1 weights stage 2 starts from: ``flow.stage2.init``, else :func:`flow_weights` of stage 1."""
    return Path(cfg.flow.stage2.init) if cfg.flow.stage2.init else flow_weights(run_dir, 1)


def train_stage2(
    cfg: MagphaseConfig,
    run_dir: str | Path,
    *,
    latents: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[int], Callable[..., None] | None] | None = None,
) -> TrainResult:
    """Fine-tune stage 1 with the class condition: phase 1 then phase 2 (``RUN/flow/stage2``).

    Args:
        progress: ``progress(phase)`` returns the engine progress callback of that phase (or None).
    Returns:
        The phase-2 :class:`TrainResult` (its EMA weights are the stage-2 model).
    """
    flow, s2 = cfg.flow, cfg.flow.stage2
    init_path = stage2_init_weights(cfg, run_dir)
    meta = read_weights_metadata(init_path)
    if meta.get("model_config", {}).get("unet") != flow.network().model_dump(mode="json"):
        raise ConfigError(
            f"flow: stage-1 weights {init_path} were trained with network {meta.get('model_config')}, "
            f"but the config asks for {flow.network().model_dump(mode='json')}"
        )
    dataset = LatentFlowDataset(
        latent_store_path(cfg, run_dir, latents), split="train", unknown_sequences=s2.unknown_sequences
    )
    weights = stage2_sample_weights(dataset, s2.balance_sequences, s2.balance_classes)
    canonical = canonical_latents(dataset)
    if bool(meta["model_config"].get("canonical_phase", False)) != canonical:
        raise ConfigError(
            f"flow: stage-1 weights {init_path} were trained on latents with canonical_phase="
            f"{not canonical}, but {dataset.store.path} has canonical_phase={canonical} "
            "(re-encode or retrain)"
        )
    common = dict(
        canonical_phase=canonical,
        latent_scale=float(meta["model_config"].get("latent_scale", 1.0)),
        latents=flow.latents,
        sequence_dropout=s2.sequence_dropout,
        class_dropout=s2.class_dropout,
        pretrained_lr_scale=s2.pretrained_lr_scale,
        unknown_sequences=tuple(s2.unknown_sequences),
    )
    root = stage_dir(run_dir, 2)
    log.info("flow stage 2 from %s: %d training latents -> %s", init_path, len(dataset), root)
    stage1_weights = load_ema_weights(init_path)
    digest = weights_digest(stage1_weights)
    resume = _stage2_resume(root, init_path, digest, resume)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        json.dumps({"path": str(init_path), "sha256": digest}, indent=2) + "\n", root / STAGE2_INIT_NAME
    )
    result: TrainResult | None = None
    for phase, settings in ((1, s2.phase1), (2, s2.phase2)):
        out = root / f"phase{phase}"
        init_weights = stage1_weights if phase == 1 else load_ema_weights(root / "phase1" / EMA_WEIGHTS_NAME)
        task = Stage2Task(
            flow.network(),
            _time_sampler(flow),
            dataset.latent_shape,
            init_weights,
            phase,
            weight_decay=settings.weight_decay,
            **common,
        )
        result = fit(
            task,
            dataset,
            settings.resolved(cfg.seed, cfg.device),
            out,
            resume=resume,
            sample_weights=weights,
            progress=progress(phase) if progress is not None else None,
        )
    assert result is not None
    _mark_done(root, cfg, 2, result)
    return result


__all__ = [
    "FlowTask",
    "LatentFlowDataset",
    "Stage1Task",
    "Stage2Task",
    "balanced_weights",
    "build_flow_model",
    "class_tokens",
    "canonical_latents",
    "estimate_latent_scale",
    "flow_stage_of",
    "flow_weights",
    "is_new_conditioning_parameter",
    "latent_store_path",
    "list_flow_snapshots",
    "load_flow_model",
    "select_flow_snapshot",
    "stage1_sample_weights",
    "stage2_init_weights",
    "stage2_sample_weights",
    "stage_dir",
    "train_stage1",
    "train_stage2",
    "training_dir",
    "weights_digest",
]
