"""Conditioning and classifier-free guidance as closures ``velocity(x, t)`` for the solvers.

Guidance (paper Eq. 5): ``v = v(x, t, null) + w * (v(x, t, c) - v(x, t, null))``. The conditional
and the null pass run as ONE forward over a batch of ``2B`` (conditional half first), so guidance
costs one network call per evaluation, not two. ``w = 1`` is the conditional model and ``w = 0``
the null model; for those two the unneeded half is skipped (exactly equal, half the work).

Stage 1 guides on the sequence (null = null sequence token); stage 2 guides on the class with the
sequence fixed (null = same sequence, null class token): see :func:`guidance_conditions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from magphase.conventions import NULL_CLASS, NULL_SEQUENCE
from magphase.generative.solver import VelocityFn


@dataclass(frozen=True)
class Condition:
    """Per-sample tokens: ``sequence`` ``(B,)`` long; ``label`` ``(B,)`` long class tokens or None."""

    sequence: Tensor
    label: Tensor | None = None

    def __len__(self) -> int:
        return int(self.sequence.shape[0])

    def to(self, device: torch.device | str) -> Condition:
        return Condition(self.sequence.to(device), None if self.label is None else self.label.to(device))

    def cat(self, other: Condition) -> Condition:
        """This condition followed by ``other`` (both with or both without labels)."""
        if (self.label is None) != (other.label is None):
            raise ValueError("cannot concatenate a condition with labels and one without")
        label = None if self.label is None else torch.cat([self.label, other.label])
        return Condition(torch.cat([self.sequence, other.sequence]), label)


def guidance_conditions(
    stage: int, sequence: Tensor, label: Tensor | None = None
) -> tuple[Condition, Condition]:
    """The conditional and null conditions guidance contrasts at ``stage``.

    Stage 1: ``(sequence)`` vs ``(null sequence)``. Stage 2: ``(sequence, class)`` vs
    ``(sequence, null class)`` — guidance acts on the class only.
    """
    if stage == 1:
        if label is not None:
            raise ValueError("stage 1 takes no class label")
        return Condition(sequence), Condition(torch.full_like(sequence, NULL_SEQUENCE))
    if stage == 2:
        if label is None:
            raise ValueError("stage 2 needs class labels")
        return Condition(sequence, label), Condition(sequence, torch.full_like(label, NULL_CLASS))
    raise ValueError(f"stage must be 1 or 2, got {stage}")


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def conditional_velocity(model: nn.Module, condition: Condition) -> VelocityFn:
    """``velocity(x, t) = model(x, t, condition)`` with the state cast to the model's dtype and back."""
    dtype = _model_dtype(model)

    @torch.no_grad()
    def velocity(x: Tensor, t: Tensor) -> Tensor:
        v = model(x.to(dtype), t.to(dtype), condition.sequence, condition.label)
        return v.to(x.dtype)

    return velocity


def guided_velocity(
    model: nn.Module,
    condition: Condition,
    null_condition: Condition,
    guidance: float,
    *,
    fuse_trivial: bool = True,
) -> VelocityFn:
    """Classifier-free guided velocity ``v_null + w (v_cond - v_null)`` from one batched forward.

    Args:
        model: velocity network ``model(x, t, sequence, label)``.
        condition: the condition to sample, ``B`` entries (matching the state's batch).
        null_condition: the dropped condition, ``B`` entries.
        guidance: the scale ``w`` (1: conditional model, 0: null model, > 1: stronger condition).
        fuse_trivial: for ``w`` of exactly 1 or 0 run only the half that is needed.
    Returns:
        ``velocity(x, t)`` for :meth:`HeunSolver.solve`; the combination is done in the state dtype.
    """
    if len(condition) != len(null_condition):
        raise ValueError(f"condition has {len(condition)} entries, null condition {len(null_condition)}")
    if fuse_trivial and guidance == 1.0:
        return conditional_velocity(model, condition)
    if fuse_trivial and guidance == 0.0:
        return conditional_velocity(model, null_condition)
    dtype = _model_dtype(model)
    both = condition.cat(null_condition)
    w = float(guidance)

    @torch.no_grad()
    def velocity(x: Tensor, t: Tensor) -> Tensor:
        xx = torch.cat([x, x]).to(dtype)
        tt = torch.cat([t, t]).to(dtype)
        v_cond, v_null = model(xx, tt, both.sequence, both.label).to(x.dtype).chunk(2)
        return v_null + w * (v_cond - v_null)

    return velocity


__all__ = ["Condition", "conditional_velocity", "guidance_conditions", "guided_velocity"]
