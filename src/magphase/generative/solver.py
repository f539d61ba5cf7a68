"""ODE integrators for sampling: Euler and Heun (2nd order) from t=0 (noise) to t=1 (data).

The integrator only sees a plain ``velocity(x, t)`` callable (guidance, conditioning and the
network's dtype live in the closure that builds it, see :mod:`magphase.generative.guidance`).
As in EDM2 the state is kept in float64: over K steps the updates ``x += h * v`` would otherwise
accumulate float32 rounding. The velocity may compute in any precision; its output is cast back
to the state dtype.

Heun's method (trapezoidal predictor-corrector) on the uniform grid ``t_i = i / K``::

    d_i   = v(x_i, t_i)
    x'    = x_i + h d_i                               (Euler predictor)
    x_i+1 = x_i + h/2 (d_i + v(x', t_i+1))            (trapezoidal corrector)

With ``final_euler=True`` (EDM's choice) the corrector is skipped on the last step, so K steps
cost ``2K - 1`` velocity evaluations; the global error stays O(h^2) because one O(h^2) local
error adds no more than the accumulated O(h^2) error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

#: ``velocity(x, t) -> dx/dt``: x is the ``(B, ...)`` state, t a ``(B,)`` tensor of flow times.
VelocityFn = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, Tensor, Tensor], None]


def time_grid(
    steps: int,
    *,
    t_start: float = 0.0,
    t_end: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform grid ``(steps + 1,)`` from ``t_start`` (noise) to ``t_end`` (data)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t_start, t_end, steps + 1, dtype=dtype, device=device)


@dataclass
class SolverResult:
    """Final state (``state_dtype``), the number of velocity evaluations, optional trajectory."""

    x: Tensor
    evaluations: int
    trajectory: list[Tensor] = field(default_factory=list)


def _integrate(
    step: Callable[[VelocityFn, Tensor, Tensor, Tensor, bool], tuple[Tensor, int]],
    steps: int,
    state_dtype: torch.dtype,
    velocity: VelocityFn,
    x0: Tensor,
    t_start: float,
    t_end: float,
    keep_trajectory: bool,
    callback: StepCallback | None,
) -> SolverResult:
    """The fixed-grid loop shared by every solver; ``step(v, x, t, t_next, last) -> (x_next, nfe)``."""
    x = x0.to(state_dtype)
    ts = time_grid(steps, t_start=t_start, t_end=t_end, dtype=state_dtype, device=x.device)
    traj = [x] if keep_trajectory else []
    nfe = 0
    for i in range(steps):
        x, n = step(velocity, x, ts[i], ts[i + 1], i == steps - 1)
        nfe += n
        if keep_trajectory:
            traj.append(x)
        if callback is not None:
            callback(i, ts[i + 1], x)
    return SolverResult(x=x, evaluations=nfe, trajectory=traj)


@dataclass(frozen=True)
class EulerSolver:
    """Explicit Euler, first order: ``K`` evaluations for ``K`` steps."""

    steps: int
    state_dtype: torch.dtype = torch.float64

    @property
    def evaluations(self) -> int:
        return self.steps

    def _step(
        self, velocity: VelocityFn, x: Tensor, t: Tensor, t_next: Tensor, last: bool
    ) -> tuple[Tensor, int]:
        return x + (t_next - t) * _call(velocity, x, t), 1

    def solve(
        self,
        velocity: VelocityFn,
        x0: Tensor,
        *,
        t_start: float = 0.0,
        t_end: float = 1.0,
        keep_trajectory: bool = False,
        callback: StepCallback | None = None,
    ) -> SolverResult:
        """Integrate ``dx/dt = velocity(x, t)`` from ``x0`` at ``t_start`` to ``t_end``."""
        return _integrate(
            self._step, self.steps, self.state_dtype, velocity, x0, t_start, t_end, keep_trajectory, callback
        )


@dataclass(frozen=True)
class HeunSolver:
    """Heun's 2nd-order method; ``final_euler`` skips the last corrector (``2K - 1`` evaluations)."""

    steps: int
    final_euler: bool = True
    state_dtype: torch.dtype = torch.float64

    @property
    def evaluations(self) -> int:
        return 2 * self.steps - 1 if self.final_euler else 2 * self.steps

    def _step(
        self, velocity: VelocityFn, x: Tensor, t: Tensor, t_next: Tensor, last: bool
    ) -> tuple[Tensor, int]:
        h = t_next - t
        d_cur = _call(velocity, x, t)
        x_next = x + h * d_cur
        if self.final_euler and last:
            return x_next, 1
        d_next = _call(velocity, x_next, t_next)
        return x + h * (0.5 * d_cur + 0.5 * d_next), 2

    def solve(
        self,
        velocity: VelocityFn,
        x0: Tensor,
        *,
        t_start: float = 0.0,
        t_end: float = 1.0,
        keep_trajectory: bool = False,
        callback: StepCallback | None = None,
    ) -> SolverResult:
        """Integrate ``dx/dt = velocity(x, t)`` from ``x0`` at ``t_start`` to ``t_end``."""
        return _integrate(
            self._step, self.steps, self.state_dtype, velocity, x0, t_start, t_end, keep_trajectory, callback
        )


def _call(velocity: VelocityFn, x: Tensor, t: Tensor) -> Tensor:
    v = velocity(x, t.expand(x.shape[0]))
    if v.shape != x.shape:
        raise ValueError(f"velocity returned shape {tuple(v.shape)} for a state of shape {tuple(x.shape)}")
    return v.to(x.dtype)


def make_solver(method: Literal["heun", "euler"], steps: int, **kwargs) -> EulerSolver | HeunSolver:
    """``HeunSolver(steps)`` or ``EulerSolver(steps)`` by name."""
    if method == "heun":
        return HeunSolver(steps, **kwargs)
    if method == "euler":
        return EulerSolver(steps, **kwargs)
    raise ValueError(f"unknown solver {method!r}; expected 'heun' or 'euler'")


__all__ = ["EulerSolver", "HeunSolver", "SolverResult", "VelocityFn", "make_solver", "time_grid"]
