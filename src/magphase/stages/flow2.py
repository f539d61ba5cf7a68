"""Stage ``flow2``: the stage-2 flow (sequence + normal/abnormal), paper Sec. 2.3.2.

Stage 2 (Sec. 2.3.2) starts from stage-1 EMA weights, adds a zero-initialised class embedding
(normal, abnormal, unknown, null) to the conditioning sum and trains in two phases: phase 1 only the
class embedding (every stage-1 parameter frozen, ``requires_grad=False``); phase 2 everything, the
stage-1 parameters at ``pretrained_lr_scale`` times the learning rate. Samples of the
``unknown_sequences`` (AXT1PRE, AXT2) and unlabeled samples get the ``unknown`` token; the class is
dropped to null with probability ``class_dropout``; weighted sampling balances sequences and, within
a sequence, class tokens (so normal and abnormal are drawn equally often).

After training (and an optional snapshot selection by validation downstream AUROC) the stage probes
what the class condition learned: :func:`magphase.evaluation.probe.class_probe` on val and on as many
train latents, written to ``RUN/flow/stage2/class_probe.json`` for the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from magphase.config import MagphaseConfig
from magphase.config.flow import UNetConfig
from magphase.conventions import NULL_CLASS, NULL_SEQUENCE, UNLABELLED_SEQUENCES
from magphase.data.datasets import LatentFlowDataset, canonical_latents, stage2_sample_weights
from magphase.errors import ConfigError, DataError
from magphase.generative.path import TimeSampler
from magphase.models.unet import CLASS_EMBEDDING_PREFIX, VelocityUNet
from magphase.models.weights import EMA_WEIGHTS_NAME, load_ema_weights, read_weights_metadata
from magphase.rundir import STAGE2_INIT_NAME, RunLayout
from magphase.stages.base import RunContext, Stage, engine_progress
from magphase.stages.flow1 import FlowTask, _drop, _time_sampler
from magphase.training.checkpoint import CHECKPOINT_NAME
from magphase.training.engine import TrainResult, fit
from magphase.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)


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


def stage2_init_weights(cfg: MagphaseConfig, layout: RunLayout) -> Path:
    """The stage-1 weights stage 2 starts from: ``flow.stage2.init``, else the run's stage-1 weights
    (the selected snapshot, if any)."""
    return Path(cfg.flow.stage2.init) if cfg.flow.stage2.init else layout.flow_weights(1)


def train_stage2(
    cfg: MagphaseConfig,
    root: str | Path,
    latents: str | Path,
    init_path: str | Path,
    *,
    resume: bool = False,
    progress: Callable[[int], Callable[..., None] | None] | None = None,
) -> TrainResult:
    """Fine-tune the stage-1 weights ``init_path`` with the class condition: phase 1 then phase 2, in
    ``root/phase1`` and ``root/phase2`` (``RUN/flow/stage2`` in a run).

    Args:
        progress: ``progress(phase)`` returns the engine progress callback of that phase (or None).
    Returns:
        The phase-2 :class:`TrainResult` (its EMA weights are the stage-2 model).
    """
    flow, s2 = cfg.flow, cfg.flow.stage2
    root, init_path = Path(root), Path(init_path)
    meta = read_weights_metadata(init_path)
    if meta.get("model_config", {}).get("unet") != flow.unet.model_dump(mode="json"):
        raise ConfigError(
            f"flow: stage-1 weights {init_path} were trained with network {meta.get('model_config')}, "
            f"but the config asks for {flow.unet.model_dump(mode='json')}"
        )
    dataset = LatentFlowDataset(latents, split="train", unknown_sequences=s2.unknown_sequences)
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
            flow.unet,
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
    return result


def run(ctx: RunContext) -> dict[str, Any]:
    """Train stage 2 (resuming); optional snapshot selection; the class probe."""
    from magphase.stages.selection import select_stage2

    def progress(phase: int) -> Callable[..., None] | None:
        p = ctx.cfg.flow.stage2.phase1 if phase == 1 else ctx.cfg.flow.stage2.phase2
        return engine_progress(ctx.bar(f"flow stage 2 phase {phase}", p.steps))

    layout = ctx.layout
    result = train_stage2(
        ctx.cfg,
        layout.flow(2),
        ctx.latents,
        stage2_init_weights(ctx.cfg, layout),
        resume=True,
        progress=progress,
    )
    info: dict[str, Any] = {"step": result.step, "last_metrics": result.last_metrics}
    snaps = layout.flow_snapshots(2)
    if ctx.cfg.pipeline.select_stage2 and len(snaps) > 1 and not ctx.patches.is_dir():
        # Selection trains downstream classifiers on decoded samples against the real patch store.
        log.warning("flow stage 2: no patch store at %s, snapshot selection skipped", ctx.patches)
    elif ctx.cfg.pipeline.select_stage2 and len(snaps) > 1:
        best = select_stage2(ctx, snaps)
        layout.select_flow_snapshot(
            2, best["step"], criterion="highest val downstream AUROC", value=best["value"]
        )
        info["selected"] = best
    info["class_probe"] = write_class_probe(ctx)
    return info


def write_class_probe(ctx: RunContext) -> dict[str, Any] | None:
    """The stage-2 model used as a classifier on val and on as many train latents, written to
    ``RUN/flow/stage2/class_probe.json``; None (and no file) where the latents hold no labelled class."""
    from magphase.evaluation.probe import class_probe
    from magphase.models.unet import load_flow_model

    layout = ctx.layout
    layout.class_probe.unlink(missing_ok=True)
    weights = layout.flow_weights(2)
    model = load_flow_model(weights, device=ctx.device)
    posterior = ctx.cfg.flow.latents == "posterior"  # probe on the latents the model trained on
    try:
        val = class_probe(
            model, LatentFlowDataset(ctx.latents, split="val"), seed=ctx.cfg.seed, posterior=posterior
        )
        train = class_probe(
            model,
            LatentFlowDataset(ctx.latents, split="train"),
            max_items=max(val.n, 1),
            seed=ctx.cfg.seed,
            posterior=posterior,
        )
    except (DataError, ValueError) as exc:
        log.info("no stage-2 class probe: %s", exc)
        return None
    record = {"weights": str(weights), "train": train.to_dict(), "val": val.to_dict()}
    atomic_write_text(json.dumps(record, indent=2) + "\n", layout.class_probe)
    return record


STAGE = Stage(
    name="flow2",
    description="stage-2 latent flow (sequence + class); optional snapshot selection; class probe",
    run=run,
    config=("flow", "pipeline.select_stage2", "evaluation.downstream"),
    reads=("latents", "flow(1)"),
    writes=("flow(2)", "selection", "class_probe"),
)


__all__ = [
    "STAGE",
    "Stage2Task",
    "is_new_conditioning_parameter",
    "run",
    "stage2_init_weights",
    "train_stage2",
    "weights_digest",
    "write_class_probe",
]
