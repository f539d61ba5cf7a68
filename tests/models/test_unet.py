import pytest
import torch

from magphase.config.flow import FLOW_PRESETS, UNetConfig
from magphase.conventions import CLASS_TOKEN_INDEX, NULL_SEQUENCE
from magphase.models.unet import SelfAttention, VelocityUNet, count_parameters

TINY_UNET = dict(
    base_channels=8,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    num_heads=2,
    emb_dim=16,
    time_features=8,
    groups=4,
    input_size=8,
)


def tiny_unet(seed: int = 0) -> VelocityUNet:
    """An 8 x 8 U-Net with its zero-initialised layers perturbed so outputs depend on inputs."""
    torch.manual_seed(seed)
    model = VelocityUNet(**TINY_UNET)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: intra-op threads only add synchronisation (and spin badly on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(b=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, size, size, generator=g), torch.rand(b, generator=g)


def test_output_shape_dtype_and_scalar_time():
    model = tiny_unet()
    x, t = _inputs()
    seq = torch.tensor([0, 1, 2, NULL_SEQUENCE])
    v = model(x, t, seq)
    assert v.shape == x.shape and v.dtype == torch.float32
    torch.testing.assert_close(model(x, torch.tensor(0.3), seq), model(x, torch.full((4,), 0.3), seq))


def test_paper_latent_size_and_presets_build():
    cfg = UNetConfig(**FLOW_PRESETS["cpu-small"]["unet"])
    model = VelocityUNet(**cfg.model_dump())
    x = torch.randn(2, 2, 48, 48)
    assert model(x, torch.rand(2), torch.tensor([0, 4])).shape == x.shape
    assert any(isinstance(m, SelfAttention) for m in model.down.modules())  # attention at 12 x 12
    assert 0.3e6 < count_parameters(model) < 2e6


def test_condition_and_time_change_output():
    model = tiny_unet()
    x, t = _inputs()
    base = model(x, t, torch.zeros(4, dtype=torch.long))
    assert not torch.allclose(base, model(x, t, torch.ones(4, dtype=torch.long)))
    assert not torch.allclose(base, model(x, t.flip(0) * 0.5, torch.zeros(4, dtype=torch.long)))


def test_batch_independence():
    """Each sample's output depends only on its own input (guidance batches cond + null together)."""
    model = tiny_unet()
    x, t = _inputs(b=6)
    seq = torch.arange(6) % 6
    full = model(x, t, seq)
    torch.testing.assert_close(full[:2], model(x[:2], t[:2], seq[:2]), atol=1e-5, rtol=1e-5)


def test_zero_initialised_class_embedding_keeps_stage1_function():
    stage1 = tiny_unet(seed=3)
    stage2 = VelocityUNet(**TINY_UNET)
    stage2.load_state_dict(stage1.state_dict())
    stage2.add_class_embedding()
    x, t = _inputs()
    seq = torch.tensor([0, 1, 3, 4])
    ref = stage1(x, t, seq)
    for token in CLASS_TOKEN_INDEX.values():
        torch.testing.assert_close(stage2(x, t, seq, torch.full((4,), token)), ref, rtol=0, atol=0)
    assert stage2.condition.class_embedding.weight.requires_grad


def test_wrong_inputs_raise():
    model = tiny_unet()
    with pytest.raises(ValueError, match="expected B x 2 x 8 x 8"):
        model(torch.randn(2, 2, 16, 16), torch.rand(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="without class conditioning"):
        model(
            torch.randn(2, 2, 8, 8),
            torch.rand(2),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(2, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="not divisible"):
        VelocityUNet(channel_mults=(1, 2, 2, 2, 2, 2), input_size=48)


def test_patch_size_folds_space_into_channels():
    torch.manual_seed(0)
    model = VelocityUNet(**{**TINY_UNET, "input_size": 16, "patch_size": 2})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    assert model.in_conv.in_channels == 8 and model.out_conv.out_channels == 8  # 2 x 2 x 2
    x, t = _inputs(b=3, size=16)
    seq = torch.tensor([0, 2, NULL_SEQUENCE])
    v = model(x, t, seq)
    assert v.shape == x.shape
    # Pixels of one 2 x 2 patch get their own outputs (the unfold order matches the fold order).
    blocks = v.reshape(3, 2, 8, 2, 8, 2)
    assert (blocks - blocks.mean(dim=(3, 5), keepdim=True)).abs().amax() > 1e-3
    torch.testing.assert_close(v[:1], model(x[:1], t[:1], seq[:1]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="patch size"):
        VelocityUNet(**{**TINY_UNET, "input_size": 15, "patch_size": 2})
    with pytest.raises(ValueError, match="not divisible"):
        VelocityUNet(**{**TINY_UNET, "input_size": 6, "patch_size": 2})  # 3 x 3 inner, two levels
