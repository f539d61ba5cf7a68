"""The training engine every magphase model trains through: :func:`fit`.

A model plugs in as a :class:`TrainTask` (build the network, compute a float32 scalar loss from a batch).
:func:`fit` owns everything else: device and DDP set-up (same code path for 1 process and ``torchrun``),
global-batch sampling, AdamW with warm-up + cosine, mixed precision, gradient clipping, the finite-loss
guard, EMA, atomic checkpoints with RNG state, exact resume, metrics, the loss-curve PNG and the EMA export.

Step convention: ``step`` counts COMPLETED optimiser updates. ``task.loss(model, batch, step)`` is called
with the 0-based index of the update being computed (0 for the first); the metrics row and checkpoint
written after it carry ``step + 1``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from magphase.config.training import TrainSettings
from magphase.errors import ConfigError, DataError, NonFiniteLossError
from magphase.models.weights import EMA_INFO_NAME, EMA_WEIGHTS_NAME
from magphase.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    capture_rng_state,
    export_ema,
    list_snapshots,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint_file,
    save_snapshot,
    seed_everything,
)
from magphase.training.distributed import (
    DistInfo,
    all_reduce_sum_,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
)
from magphase.training.ema import EMA
from magphase.training.metrics import (
    LOSS_PLOT_NAME,
    METRICS_NAME,
    MetricsWriter,
    plot_loss_curves,
    truncate_metrics,
)
from magphase.training.sampling import GlobalBatchSampler
from magphase.training.schedules import build_scheduler
from magphase.utils.faults import fault_point
from magphase.utils.precision import resolve_amp
from magphase.utils.seeds import derive_seed

log = logging.getLogger(__name__)

LossTerms = Mapping[str, torch.Tensor | float]

# The loss-curve PNG is redrawn at a checkpoint at most this often (and always at the end): drawing costs
# ~0.3 s, which matters for runs that checkpoint often.
PLOT_INTERVAL_S = 60.0

# Settings a resumed run may change without changing the trajectory up to the checkpoint.
_RESUME_FREE_FIELDS = frozenset(
    {"steps", "checkpoint_every", "keep_every", "log_every", "num_workers", "device"}
)


# ------------------------------------------------------------------------------------------ contract
@runtime_checkable
class TrainTask(Protocol):
    """What a model provides to :func:`fit`.

    Required:
        build_model(): a fresh ``nn.Module`` (called once, on every rank, after seeding torch with the
            run seed, so every rank builds identical initial weights). Frozen parameters must have
            ``requires_grad=False``; they are neither optimised nor synchronised.
        loss(model, batch, step): ``(loss, terms)`` for one rank's share of the global batch.
            ``model`` is the UNWRAPPED module (call any of its methods: the engine wraps the whole loss
            computation for DDP, so gradient synchronisation covers it). ``batch`` is the collated batch
            moved to the device (tensors inside dicts/lists/tuples are moved). ``loss`` must be a float32
            0-d tensor that is a MEAN over the batch items (so DDP's gradient averaging equals the
            global-batch gradient); under autocast, cast to float32 before reducing. ``terms`` are
            extra values to log (0-d tensors preferred: they are averaged without a GPU sync per step);
            use the same keys every step on every rank. ``loss`` itself is logged as ``"loss"``.

    Optional (looked up with ``getattr``; :class:`TrainTaskBase` supplies defaults):
        param_groups(model) -> list[dict] | None: custom optimiser groups. Each dict has ``params`` and
            may set ``lr`` (absolute), ``lr_scale`` (times ``settings.lr``) or ``weight_decay``; other keys
            are kept. Parameters with ``requires_grad=False`` are dropped. None: default grouping.
        model_config() -> dict: JSON-serialisable description written beside the EMA weights
            (``ema.json``, safetensors metadata) so inference can rebuild the network.
        ddp_find_unused_parameters: bool attribute; True when some trainable parameters get no
            gradient in some steps (e.g. a conditional branch), at a DDP speed cost.
    """

    def build_model(self) -> nn.Module: ...

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, LossTerms]: ...


class TrainTaskBase:
    """Optional base class supplying the optional hooks of :class:`TrainTask`."""

    ddp_find_unused_parameters: bool = False

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, LossTerms]:
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        return None

    def model_config(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to ``progress`` on rank 0: once at the start, then after every update.

    Attributes:
        step: completed updates (the start event carries the resumed step, 0 for a fresh run).
        total_steps: ``settings.steps``.
        metrics: the latest ``metrics.jsonl`` row (loss terms, lr, samples_per_s, ...); empty before the
            first row. It is refreshed every ``log_every`` steps.
        logged: True when ``metrics`` was written at this very step.
    """

    step: int
    total_steps: int
    metrics: dict[str, float]
    logged: bool = False


@dataclass(frozen=True)
class CheckpointEvent:
    """Sent to ``on_checkpoint`` on rank 0 after every checkpoint (and the final one).

    The models are live training objects: evaluate them under ``torch.no_grad()`` and restore
    ``train()`` mode on ``model`` if you change it.
    """

    step: int
    checkpoint_path: Path
    ema_path: Path
    model: nn.Module
    ema_model: nn.Module
    final: bool


@dataclass
class TrainResult:
    """What :func:`fit` returns (on every rank; paths refer to rank 0's files).

    Attributes:
        model: the trained, unwrapped model (on the training device, ``train()`` mode).
        ema_model: the EMA copy (``eval()`` mode).
        step: completed updates.
        out_dir, checkpoint_path, ema_path, ema_info_path, metrics_path, loss_plot_path: run files.
        snapshots: ``{step: path}`` of kept EMA snapshots.
        last_metrics: the last metrics row (empty if no step ran in this call).
        resumed_from: the checkpoint step this call started at (0 for a fresh run).
    """

    model: nn.Module
    ema_model: nn.Module
    step: int
    out_dir: Path
    checkpoint_path: Path
    ema_path: Path
    ema_info_path: Path
    metrics_path: Path
    loss_plot_path: Path
    snapshots: dict[int, Path] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0


# ------------------------------------------------------------------------------------------ helpers
class _TaskLoss(nn.Module):
    """Wraps ``task.loss`` as a module so DDP's forward hook covers the task's whole loss computation."""

    def __init__(self, task: TrainTask, model: nn.Module):
        super().__init__()
        # Not registered as a submodule even if the task is an nn.Module: only the model's parameters
        # belong to DDP and the checkpoint.
        object.__setattr__(self, "task", task)
        self.model = model

    def forward(self, batch: Any, step: int) -> tuple[torch.Tensor, LossTerms]:
        return self.task.loss(self.model, batch, step)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) dicts, lists and tuples to ``device``; other objects pass unchanged."""
    non_blocking = device.type == "cuda"
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def build_optimizer(
    model: nn.Module, settings: TrainSettings, groups: list[dict[str, Any]] | None, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters.

    Default groups: weight decay on tensors with ``ndim >= 2`` (weights), none on biases and norm scales.
    Custom groups (``task.param_groups``): ``lr_scale`` becomes ``lr = settings.lr * lr_scale``; frozen
    parameters are dropped; empty groups are dropped.
    """
    if groups is None:
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
    cleaned: list[dict[str, Any]] = []
    for group in groups:
        g = dict(group)
        g["params"] = [p for p in g["params"] if p.requires_grad]
        if "lr_scale" in g:
            g["lr"] = settings.lr * float(g["lr_scale"])
        if g["params"]:
            cleaned.append(g)
    if not cleaned:
        raise ConfigError("the model has no trainable parameters (all have requires_grad=False)")
    grouped = {id(p) for g in cleaned for p in g["params"]}
    orphans = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in grouped]
    if orphans:
        log.warning(
            "%d trainable parameters are in no optimiser group and stay fixed: %s", len(orphans), orphans[:5]
        )
    return torch.optim.AdamW(
        cleaned,
        lr=settings.lr,
        betas=tuple(settings.betas),
        weight_decay=settings.weight_decay,
        fused=device.type == "cuda",
    )


@contextlib.contextmanager
def numerics_mode(deterministic: bool, device: torch.device) -> Iterator[None]:
    """Set deterministic kernels (or cuDNN autotune + TF32 when not deterministic) and restore after.

    Deterministic mode uses ``torch.use_deterministic_algorithms(True, warn_only=True)``: ops without a
    deterministic kernel warn instead of failing. CPU training is deterministic in either mode.
    """
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
    )
    if deterministic:
        if device.type == "cuda":
            # cuBLAS needs a fixed workspace for reproducible matmuls; harmless when already set.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic = prev[2]
        torch.backends.cudnn.benchmark = prev[3]
        torch.set_float32_matmul_precision(prev[4])


def _check_loss(loss: Any, step: int) -> None:
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or loss.dtype != torch.float32:
        desc = (
            f"{loss.dtype} tensor of shape {tuple(loss.shape)}"
            if isinstance(loss, torch.Tensor)
            else type(loss)
        )
        raise TypeError(
            f"task.loss must return a float32 0-d tensor (step {step}); got {desc}. "
            "Under autocast, cast to float32 before the final reduction."
        )


def _scalar_terms(terms: LossTerms) -> dict[str, float]:
    return {
        k: float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)
        for k, v in terms.items()
    }


def _unlink_stale_outputs(out_dir: Path) -> None:
    """A fresh (non-resumed) run must not inherit the metrics or snapshots of an earlier run."""
    (out_dir / METRICS_NAME).unlink(missing_ok=True)
    for p in list_snapshots(out_dir).values():
        p.unlink()


# ------------------------------------------------------------------------------------------ fit
def _json_plain(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples as lists): configs compare equal across a save/load."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def fit(
    task: TrainTask,
    dataset: Dataset,
    settings: TrainSettings,
    out_dir: str | Path,
    *,
    resume: bool = False,
    sample_weights: np.ndarray | torch.Tensor | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    on_checkpoint: Callable[[CheckpointEvent], None] | None = None,
) -> TrainResult:
    """Train ``task``'s model on ``dataset`` for ``settings.steps`` updates; resumable and DDP-aware.

    Launch the same program with ``python`` (1 process, CPU or one GPU) or with
    ``torchrun --nproc_per_node=G`` (one process per GPU, NCCL; gloo on CPU): the process group is
    created from torchrun's environment variables, and the global batch ``settings.batch_size`` is split
    evenly (rank r gets the items ``r::G`` of each global batch).

    Args:
        task: the model's :class:`TrainTask`.
        dataset: map-style dataset; ``dataset[i]`` items are collated by ``collate_fn`` (default torch's).
        settings: optimisation, precision and checkpoint settings (seed None -> 0, device None -> auto).
        out_dir: the run folder (rank 0 writes ``checkpoint.pt``, ``ema.safetensors``, ``ema.json``,
            ``metrics.jsonl``, ``loss_curves.png``, ``snapshots/``).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (fresh start otherwise). A fresh start
            replaces an existing run's metrics and snapshots.
        sample_weights: per-item weights (length ``len(dataset)``): sample with replacement with
            probability proportional to the weight (class/sequence balancing). None: reshuffled epochs.
        collate_fn: DataLoader collate function.
        progress: called on rank 0 with a :class:`ProgressEvent` at the start and after every update
            (the CLI passes :class:`magphase.training.progress.TqdmProgress`). Library code never prints.
        on_checkpoint: called on rank 0 with a :class:`CheckpointEvent` after each checkpoint.
    Returns:
        :class:`TrainResult`.
    Raises:
        NonFiniteLossError: a NaN/Inf loss on any rank (message: step, per-term values); no update is applied
            and the last checkpoint is intact.
        ConfigError: global batch not divisible by the world size, or nothing to train.
        TypeError: ``task.loss`` returned something other than a float32 0-d tensor.
    """
    seed = settings.seed if settings.seed is not None else 0
    info = init_distributed(settings.device)
    out_dir = Path(out_dir)
    if settings.batch_size % info.world_size != 0:
        raise ConfigError(
            f"batch_size: global batch {settings.batch_size} is not divisible by the {info.world_size} ranks"
        )
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ConfigError("dataset: empty, nothing to train on")
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)

    with numerics_mode(settings.deterministic, info.device):
        return _fit(
            task,
            dataset,
            settings,
            out_dir,
            info,
            seed,
            resume,
            sample_weights,
            collate_fn,
            progress,
            on_checkpoint,
        )


def _fit(
    task: TrainTask,
    dataset: Dataset,
    settings: TrainSettings,
    out_dir: Path,
    info: DistInfo,
    seed: int,
    resume: bool,
    sample_weights: np.ndarray | torch.Tensor | None,
    collate_fn: Callable[[list[Any]], Any] | None,
    progress: Callable[[ProgressEvent], None] | None,
    on_checkpoint: Callable[[CheckpointEvent], None] | None,
) -> TrainResult:
    device = info.device
    ckpt_path = out_dir / CHECKPOINT_NAME
    metrics_path = out_dir / METRICS_NAME
    plot_path = out_dir / LOSS_PLOT_NAME
    model_config: dict[str, Any] = dict(getattr(task, "model_config", dict)() or {})

    # Identical initial weights on every rank (DDP also broadcasts rank 0's, but EMA copies them first).
    seed_everything(seed)
    model = task.build_model().to(device)
    model.train()
    groups_fn = getattr(task, "param_groups", None)
    optimizer = build_optimizer(model, settings, groups_fn(model) if groups_fn else None, device)
    scheduler = build_scheduler(optimizer, settings)
    ema = EMA(model, settings.ema_decay, settings.ema_start_step)
    amp_dtype = resolve_amp(settings.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start_step, elapsed_before = 0, 0.0
    has_checkpoint = broadcast_object(resume and ckpt_path.is_file(), info)
    if has_checkpoint:
        if not ckpt_path.is_file():
            raise ConfigError(
                f"rank {info.rank} cannot see {ckpt_path}: resuming under torchrun needs the run folder on a "
                "filesystem shared by all nodes"
            )
        # CPU first: load_state_dict copies onto the device, RNG states must stay CPU tensors.
        state = load_checkpoint(ckpt_path, map_location="cpu")
        saved_config = _json_plain(state.get("model_config") or {})
        now_config = _json_plain(model_config)
        if saved_config and saved_config != now_config:
            diff = sorted(
                k for k in set(saved_config) | set(now_config) if saved_config.get(k) != now_config.get(k)
            )
            raise DataError(
                ckpt_path,
                "model_config",
                f"checkpoint of another model (differs in {', '.join(diff)}); use "
                "a fresh run folder or delete the checkpoint to train from scratch",
            )
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise DataError(
                ckpt_path,
                "model",
                f"checkpoint weights do not fit this model: {str(exc).splitlines()[0][:200]}",
            ) from exc
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        start_step = int(state["step"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        rng = state["rng"]
        if int(rng["world_size"]) == info.world_size:
            restore_rng_state(rng["per_rank"][info.rank])
        else:
            log.warning(
                "checkpoint written by %d ranks, resuming on %d: RNG streams reseeded",
                rng["world_size"],
                info.world_size,
            )
            seed_everything(derive_seed(seed, info.rank, start_step))
        changed = {
            k: (v, settings.model_dump(mode="json")[k])
            for k, v in state["settings"].items()
            if k not in _RESUME_FREE_FIELDS and settings.model_dump(mode="json").get(k) != v
        }
        if changed and info.is_main:
            log.warning("resuming with settings that differ from the checkpoint's (old, new): %s", changed)
        saved_sampler = state.get("sampler", {})
        now_sampler = {"kind": "uniform" if sample_weights is None else "weighted", "num_items": len(dataset)}
        if info.is_main and any(saved_sampler.get(k) != v for k, v in now_sampler.items()):
            log.warning(
                "resuming on different data (checkpoint %s, now %s): the data order will not match an "
                "uninterrupted run",
                {k: saved_sampler.get(k) for k in now_sampler},
                now_sampler,
            )
        if info.is_main:
            truncate_metrics(metrics_path, start_step)
            log.info("resumed from %s at step %d", ckpt_path, start_step)
        del state
    else:
        if info.is_main:
            if ckpt_path.exists():
                log.warning("%s exists but resume=False: starting afresh and overwriting it", ckpt_path)
            _unlink_stale_outputs(out_dir)
        # Per-rank streams: ranks must draw different noise (e.g. flow-matching t and x0).
        seed_everything(derive_seed(seed, info.rank))
    barrier(info)

    if start_step > settings.steps:
        log.warning(
            "checkpoint step %d is past settings.steps=%d: nothing to train", start_step, settings.steps
        )

    loss_module = _TaskLoss(task, model)
    train_module: nn.Module = loss_module
    if info.is_distributed:
        train_module = DistributedDataParallel(
            loss_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(getattr(task, "ddp_find_unused_parameters", False)),
        )

    sampler = GlobalBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        settings.batch_size,
        seed=seed,
        total_steps=settings.steps,
        start_step=min(start_step, settings.steps),
        rank=info.rank,
        world_size=info.world_size,
        weights=sample_weights,
    )
    # An explicit generator: the loader must not draw its worker base seed from the global torch RNG, which
    # would shift the restored stream on resume.
    loader_gen = torch.Generator().manual_seed(derive_seed(seed, info.rank, start_step, 0x10AD))
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=settings.num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=settings.num_workers > 0,
        generator=loader_gen,
    )

    writer = MetricsWriter(metrics_path) if info.is_main else None
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    clip = settings.grad_clip if settings.grad_clip else None
    ema_path = out_dir / EMA_WEIGHTS_NAME
    ema_info_path = out_dir / EMA_INFO_NAME
    last_metrics: dict[str, float] = {}
    last_plot_time = -math.inf

    def export_ema_weights(step: int) -> None:
        extra = {"ema_decay": ema.decay, "ema_start_step": ema.start_step}
        export_ema(ema.module.state_dict(), out_dir, step=step, model_config=model_config, extra=extra)

    def save_checkpoint(done: int, elapsed: float, final: bool) -> None:
        rng_states = gather_objects(capture_rng_state(), info)  # collective: every rank calls it
        if not info.is_main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "step": done,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": {"world_size": info.world_size, "per_rank": rng_states},
            "sampler": {
                "kind": "weighted" if sampler.weighted else "uniform",
                "seed": seed,
                "num_items": sampler.num_items,
                "global_batch": sampler.global_batch,
            },
            "settings": settings.model_dump(mode="json"),
            "model_config": model_config,
            "elapsed_s": elapsed,
            "torch_version": str(torch.__version__),
        }
        save_checkpoint_file(payload, ckpt_path)
        export_ema_weights(done)
        nonlocal last_plot_time
        if final or time.perf_counter() - last_plot_time >= PLOT_INTERVAL_S:
            plot_loss_curves(metrics_path, plot_path, title=f"{out_dir.name}: step {done}")
            last_plot_time = time.perf_counter()
        log.info("checkpoint at step %d -> %s", done, ckpt_path)
        if on_checkpoint is not None:
            on_checkpoint(CheckpointEvent(done, ckpt_path, ema_path, model, ema.module, final))

    if progress is not None and info.is_main:
        progress(ProgressEvent(step=start_step, total_steps=settings.steps, metrics={}))

    t_start = time.perf_counter()
    t_log, step_log = t_start, start_step
    sums: dict[str, torch.Tensor] = {}
    n_accumulated = 0
    global_batch = settings.batch_size
    data_iter = iter(loader)
    try:
        for step in range(start_step, settings.steps):
            batch = move_to_device(next(data_iter), device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss, terms = train_module(batch, step)
            _check_loss(loss, step)
            scaler.scale(loss).backward()

            # Finite-loss guard after backward (the CPU has queued the backward, so the sync is cheap) and
            # before the update (so the weights and the last checkpoint stay clean). Agreed over ranks, so
            # every rank raises together instead of the healthy ones hanging in the next collective.
            bad = (~torch.isfinite(loss.detach())).to(torch.float32).reshape(1)
            if all_reduce_sum_(bad, info).item() > 0:
                local = _scalar_terms({"loss": loss, **terms})
                err = NonFiniteLossError(
                    f"non-finite loss at step {step + 1} (update index {step}) on "
                    f"{int(bad.item())} of {info.world_size} rank(s); rank {info.rank} terms: {local}. "
                    f"No update applied; the last checkpoint ({ckpt_path}) is intact."
                )
                err.step = step + 1  # type: ignore[attr-defined]
                err.terms = local  # type: ignore[attr-defined]
                raise err

            grad_norm = None
            if clip is not None:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, clip)
            lr_used = float(optimizer.param_groups[0]["lr"])
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            ema.update(model, done)
            fault_point("train.step")

            for key, value in (("loss", loss), *terms.items(), ("grad_norm", grad_norm)):
                if value is None:
                    continue
                v = (
                    value.detach().to(torch.float32)
                    if isinstance(value, torch.Tensor)
                    else torch.tensor(float(value), device=device)
                )
                sums[key] = sums[key] + v if key in sums else v.clone()
            n_accumulated += 1

            if done % settings.log_every == 0 or done == settings.steps:
                keys = sorted(sums)
                totals = torch.stack([sums[k].to(device).reshape(()) for k in keys])
                all_reduce_sum_(totals, info)
                means = (totals / (n_accumulated * info.world_size)).tolist()
                now = time.perf_counter()
                row: dict[str, float] = {
                    "step": done,
                    "epoch": round(sampler.epoch_of(done), 6),
                    "time_s": round(elapsed_before + now - t_start, 3),
                    "lr": lr_used,
                    "samples_per_s": round((done - step_log) * global_batch / max(now - t_log, 1e-9), 2),
                }
                row.update(dict(zip(keys, means, strict=True)))
                last_metrics = row
                if writer is not None:
                    writer.write(row)
                sums, n_accumulated = {}, 0
                t_log, step_log = now, done
                logged = True
            else:
                logged = False
            if progress is not None and info.is_main:
                progress(ProgressEvent(done, settings.steps, last_metrics, logged))

            if info.is_main and settings.keep_every and done % settings.keep_every == 0:
                save_snapshot(ema.module.state_dict(), out_dir, step=done, model_config=model_config)
            if done % settings.checkpoint_every == 0 or done == settings.steps:
                t_ckpt = time.perf_counter()
                save_checkpoint(
                    done, elapsed_before + time.perf_counter() - t_start, final=done == settings.steps
                )
                t_log += time.perf_counter() - t_ckpt  # samples/s measures training, not I/O
    finally:
        del data_iter

    final_step = max(start_step, settings.steps)
    if info.is_main and not ema_path.is_file():
        export_ema_weights(final_step)
    barrier(info)
    return TrainResult(
        model=model,
        ema_model=ema.module,
        step=final_step,
        out_dir=out_dir,
        checkpoint_path=ckpt_path,
        ema_path=ema_path,
        ema_info_path=ema_info_path,
        metrics_path=metrics_path,
        loss_plot_path=plot_path,
        snapshots=list_snapshots(out_dir),
        last_metrics=last_metrics,
        resumed_from=start_step,
    )


__all__ = [
    "CheckpointEvent",
    "ProgressEvent",
    "TrainResult",
    "TrainTask",
    "TrainTaskBase",
    "build_optimizer",
    "fit",
    "move_to_device",
    "numerics_mode",
]
