import pytest
import torch

from magphase.conventions import CLASS_TOKEN_INDEX, NULL_CLASS, NULL_SEQUENCE
from magphase.generative.guidance import Condition, conditional_velocity, guidance_conditions, guided_velocity
from magphase.generative.solver import HeunSolver


class CountingModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.batch_sizes = model, 0, []

    def forward(self, x, t, sequence, label=None):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        return self.model(x, t, sequence, label)


def _state(b=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 2, 8, 8, generator=g, dtype=torch.float64), torch.full(
        (b,), 0.4, dtype=torch.float64
    )


def test_guidance_combination_from_one_batched_forward(make_unet):
    model = CountingModel(make_unet())
    cond, null = guidance_conditions(1, torch.tensor([0, 2, 4]))
    x, t = _state()
    v = guided_velocity(model, cond, null, 2.5)(x, t)
    assert model.calls == 1 and model.batch_sizes == [6]
    v_c = conditional_velocity(model, cond)(x, t)
    v_n = conditional_velocity(model, null)(x, t)
    torch.testing.assert_close(v, v_n + 2.5 * (v_c - v_n), atol=1e-5, rtol=1e-5)
    assert v.dtype == torch.float64


def test_w1_is_conditional_and_w0_is_null(make_unet):
    model = make_unet()
    cond, null = guidance_conditions(1, torch.tensor([1, 1, 3]))
    x, t = _state()
    v_c, v_n = conditional_velocity(model, cond)(x, t), conditional_velocity(model, null)(x, t)
    torch.testing.assert_close(guided_velocity(model, cond, null, 1.0)(x, t), v_c, rtol=0, atol=0)
    torch.testing.assert_close(guided_velocity(model, cond, null, 0.0)(x, t), v_n, rtol=0, atol=0)
    # The batched formula (no shortcut) agrees too.
    torch.testing.assert_close(
        guided_velocity(model, cond, null, 1.0, fuse_trivial=False)(x, t), v_c, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        guided_velocity(model, cond, null, 0.0, fuse_trivial=False)(x, t), v_n, atol=1e-5, rtol=1e-5
    )


def test_stage_conditions():
    seq = torch.tensor([0, 4])
    c, n = guidance_conditions(1, seq)
    assert c.label is None and n.label is None and (n.sequence == NULL_SEQUENCE).all()
    lab = torch.tensor([CLASS_TOKEN_INDEX["normal"], CLASS_TOKEN_INDEX["abnormal"]])
    c, n = guidance_conditions(2, seq, lab)
    assert torch.equal(n.sequence, seq) and (n.label == NULL_CLASS).all() and torch.equal(c.label, lab)
    with pytest.raises(ValueError):
        guidance_conditions(2, seq)
    with pytest.raises(ValueError):
        guidance_conditions(1, seq, lab)
    with pytest.raises(ValueError):
        Condition(seq).cat(Condition(seq, lab))


@pytest.mark.parametrize("stage", [1, 2])
def test_changing_the_condition_changes_the_sample(make_unet, stage):
    model = make_unet(class_conditioning=stage == 2)
    if stage == 2:
        with torch.no_grad():
            model.condition.class_embedding.weight.normal_()
    x0 = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    seq = torch.tensor([1, 1])

    def sample(sequence, label):
        c, n = guidance_conditions(stage, sequence, label)
        return HeunSolver(4).solve(guided_velocity(model, c, n, 2.0), x0).x

    if stage == 1:
        a, b = sample(seq, None), sample(torch.tensor([2, 2]), None)
    else:
        a = sample(seq, torch.full((2,), CLASS_TOKEN_INDEX["normal"]))
        b = sample(seq, torch.full((2,), CLASS_TOKEN_INDEX["abnormal"]))
    assert (a - b).abs().mean() > 1e-3
