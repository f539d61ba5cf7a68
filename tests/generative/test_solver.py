"""The integrators against a linear ODE with a closed-form solution."""

import math

import pytest
import torch

from magphase.generative.solver import EulerSolver, HeunSolver, make_solver, time_grid

LAM = -1.7


def _velocity(x, t):
    # dx/dt = lam * x + t   (t broadcast over the state)
    return LAM * x + t.reshape(-1, *([1] * (x.ndim - 1)))


def _exact(x0, t=1.0):
    c = x0 + 1 / LAM**2
    return c * math.exp(LAM * t) - t / LAM - 1 / LAM**2


def _error(solver_cls, steps, **kw):
    x0 = torch.linspace(-2, 2, 6, dtype=torch.float64).reshape(3, 2)
    out = solver_cls(steps, **kw).solve(_velocity, x0)
    return (out.x - _exact(x0)).abs().max().item(), out


@pytest.mark.parametrize("final_euler", [True, False])
def test_heun_is_second_order(final_euler):
    errors = [_error(HeunSolver, k, final_euler=final_euler)[0] for k in (16, 32, 64)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(3.5 < r < 4.5 for r in ratios), ratios
    assert errors[-1] < 1e-3


def test_euler_is_first_order():
    errors = [_error(EulerSolver, k)[0] for k in (16, 32, 64)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(1.8 < r < 2.2 for r in ratios), ratios


def test_evaluation_counts_and_state_dtype():
    _, heun = _error(HeunSolver, 10)
    assert heun.evaluations == 19 == HeunSolver(10).evaluations
    assert HeunSolver(10, final_euler=False).evaluations == 20
    _, euler = _error(EulerSolver, 10)
    assert euler.evaluations == 10
    out = HeunSolver(3).solve(_velocity, torch.zeros(2, 2, dtype=torch.float32))
    assert out.x.dtype == torch.float64


def test_float32_velocity_is_accumulated_in_float64():
    seen = []

    def v(x, t):
        seen.append((x.dtype, t.dtype, t.shape))
        return torch.ones_like(x, dtype=torch.float32)

    out = HeunSolver(4).solve(v, torch.zeros(5, 3))
    assert seen[0] == (torch.float64, torch.float64, (5,))
    torch.testing.assert_close(out.x, torch.ones(5, 3, dtype=torch.float64))


def test_trajectory_grid_and_factory():
    out = HeunSolver(4).solve(_velocity, torch.ones(2, 1), keep_trajectory=True)
    assert len(out.trajectory) == 5
    torch.testing.assert_close(out.trajectory[-1], out.x)
    torch.testing.assert_close(time_grid(4), torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    assert isinstance(make_solver("euler", 3), EulerSolver)
    with pytest.raises(ValueError):
        make_solver("rk4", 3)
    with pytest.raises(ValueError):
        time_grid(0)


def test_wrong_velocity_shape_raises():
    with pytest.raises(ValueError, match="velocity returned shape"):
        HeunSolver(2).solve(lambda x, t: x[:1], torch.zeros(3, 2))
