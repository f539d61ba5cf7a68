"""Complex-valued residual U-Net of PhaseGen (magnitude-conditioned phase diffusion).

Every feature map is complex. Inside the network a complex map of ``C`` channels is stored as a real
tensor ``B x 2C x H x W``: the ``C`` real parts first, then the ``C`` imaginary parts (:func:`to_split`,
:func:`from_split`). In that layout

* :class:`ComplexConv2d` is complex multiplication of weights and inputs, ``(Wr + i Wi)(xr + i xi)``, run
  as ONE real convolution with the block weight ``[[Wr, -Wi], [Wi, Wr]]`` (tested against torch's
  complex ``conv2d``), so it works under autocast and costs one kernel call;
* :class:`ComplexGroupNorm` normalises real and imaginary parts separately ("naive" complex
  normalisation; PhaseGen used the batch-norm variant, group norm does not depend on the batch);
* activations act on the complex value: ``crelu`` (ReLU on real and imaginary parts, PhaseGen's
  choice) or ``modrelu`` (``relu(|z| + b) z / |z|``: keeps the phase, learns a threshold ``b``);
* :class:`SpectralPool` halves the resolution in k-space: centred FFT, keep the central half of both
  axes, inverse FFT (x 1/2 to keep amplitudes). A band-limited image is exactly resampled
  (tested); up-sampling is nearest-neighbour followed by a complex convolution, as in PhaseGen.
  Spectral pooling treats the patch as periodic, so a patch whose opposite borders differ rings
  along them; ``pooling="mean"`` (2 x 2 complex mean, :class:`ComplexMeanPool`) has no such wrap.

The noise level enters every residual block as a learned complex bias (sinusoidal features of the
timestep, an MLP, one linear map per block). :class:`ComplexUNet` takes the noisy complex image ``x_t``
(``B x 1 x H x W`` complex) and the conditioning magnitude (``B x 1 x H x W`` real, given to the network as
a second complex channel with zero imaginary part) and returns the predicted complex noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magphase.config.phasegen import DiffusionSettings
from magphase.errors import DataError
from magphase.models.unet import SinusoidalTimeFeatures
from magphase.models.weights import load_ema_weights, read_weights_metadata
from magphase.mri.fft import fft2c, ifft2c

ACTIVATIONS = ("crelu", "modrelu")
POOLINGS = ("spectral", "mean")


# -------------------------------------------------------------------------------- split layout
def to_split(z: Tensor) -> Tensor:
    """Complex ``B x C x H x W`` -> real ``B x 2C x H x W`` (real parts, then imaginary parts)."""
    return torch.cat([z.real, z.imag], dim=1)


def from_split(x: Tensor) -> Tensor:
    """Real ``B x 2C x H x W`` (real parts, then imaginary parts) -> complex ``B x C x H x W``."""
    re, im = x.float().chunk(2, dim=1)
    return torch.complex(re.contiguous(), im.contiguous())


def split_cat(*xs: Tensor) -> Tensor:
    """Channel concatenation of complex maps in split layout (keeps all real parts before imaginary)."""
    res, ims = zip(*(x.chunk(2, dim=1) for x in xs), strict=True)
    return torch.cat([*res, *ims], dim=1)


# -------------------------------------------------------------------------------------- layers
class ComplexConv2d(nn.Module):
    """Complex 2-D convolution ``C_in -> C_out`` on split-layout maps (see the module docstring).

    Initialisation: real and imaginary kernels uniform with variance ``1 / (2 fan_in)`` each, so the
    complex weight has variance ``1 / fan_in`` (the complex analogue of LeCun/He scaling).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        bound = math.sqrt(3.0 / (2.0 * in_channels * kernel_size * kernel_size))
        self.weight_re = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.weight_im = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias_re = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.bias_im = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.padding = kernel_size // 2

    def block_weight(self) -> Tensor:
        """The real ``2C_out x 2C_in x k x k`` weight ``[[Wr, -Wi], [Wi, Wr]]``."""
        wr, wi = self.weight_re, self.weight_im
        return torch.cat([torch.cat([wr, -wi], dim=1), torch.cat([wi, wr], dim=1)], dim=0)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias_re is None else torch.cat([self.bias_re, self.bias_im])
        return F.conv2d(x, self.block_weight(), bias, padding=self.padding)


class ComplexGroupNorm(nn.GroupNorm):
    """Group norm of real and imaginary parts separately: ``groups`` groups over each part."""

    def __init__(self, channels: int, groups: int):
        g = math.gcd(groups, channels)
        super().__init__(2 * g, 2 * channels)


class ComplexActivation(nn.Module):
    """``crelu``: ReLU of real and imaginary parts; ``modrelu``: ``relu(|z| + b) z / |z|`` (phase kept)."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        if kind not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")
        self.kind = kind
        self.bias = nn.Parameter(torch.zeros(channels)) if kind == "modrelu" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return F.relu(x)
        re, im = x.chunk(2, dim=1)
        mod = torch.sqrt(re.float() ** 2 + im.float() ** 2 + 1e-8)
        scale = (F.relu(mod + self.bias[None, :, None, None]) / mod).to(x.dtype)
        return torch.cat([re * scale, im * scale], dim=1)


class SpectralPool(nn.Module):
    """Halve both image axes by keeping the central half of the centred k-space (see module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"spectral pooling needs sides divisible by 4, got {h} x {w}")
        k = fft2c(from_split(x))[..., h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
        return to_split(0.5 * ifft2c(k)).to(x.dtype)


class ComplexMeanPool(nn.Module):
    """Halve both image axes by the complex mean of each 2 x 2 block (real and imaginary parts alike)."""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(f"mean pooling needs even sides, got {h} x {w}")
        return F.avg_pool2d(x, 2)


class ComplexUpsample(nn.Module):
    """Nearest-neighbour 2x up-sampling followed by a complex 3 x 3 convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ComplexConv2d(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ComplexResBlock(nn.Module):
    """``act(norm(conv(x))) + bias(t)`` -> ``norm(conv(.))`` + skip(x) -> ``act`` (post-activation)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, activation: str, dropout: float):
        super().__init__()
        self.conv1 = ComplexConv2d(in_ch, out_ch)
        self.norm1 = ComplexGroupNorm(out_ch, groups)
        self.act1 = ComplexActivation(activation, out_ch)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.dropout = nn.Dropout(dropout)
        self.conv2 = ComplexConv2d(out_ch, out_ch)
        self.norm2 = ComplexGroupNorm(out_ch, groups)
        self.act2 = ComplexActivation(activation, out_ch)
        self.skip: nn.Module = nn.Identity()
        if in_ch != out_ch:
            self.skip = ComplexConv2d(in_ch, out_ch, kernel_size=1, bias=False)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.act1(self.norm1(self.conv1(x)))
        h = h + self.emb(emb)[:, :, None, None].to(h.dtype)
        h = self.norm2(self.conv2(self.dropout(h)))
        return self.act2(h + self.skip(x))


# ------------------------------------------------------------------------------------- network
class ComplexUNet(nn.Module):
    """PhaseGen's noise predictor: ``model(x_t, magnitude, t) -> predicted complex noise``.

    Args:
        base_channels: complex channels of the first level.
        channel_mults: per level, ``base_channels x mult``; every level but the last halves the
            resolution (spectral pooling), so a 96 x 96 patch with 3 levels reaches 24 x 24.
        num_res_blocks: residual blocks per level (down and up path alike).
        emb_dim: width of the timestep embedding.
        time_features: sinusoidal features of the timestep.
        groups: group-norm groups per part (real / imaginary).
        activation: ``crelu`` or ``modrelu``.
        dropout: dropout inside the residual blocks.
        pooling: ``spectral`` (k-space truncation) or ``mean`` (2 x 2 complex mean) down-sampling.
        timesteps: the diffusion's number of steps T (timesteps are embedded as ``t / T``).
    """

    def __init__(
        self,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 1,
        emb_dim: int = 128,
        time_features: int = 64,
        groups: int = 8,
        activation: str = "crelu",
        dropout: float = 0.0,
        timesteps: int = 1000,
        pooling: str = "spectral",
    ):
        super().__init__()
        if not channel_mults:
            raise ValueError("channel_mults must name at least one level")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.timesteps = int(timesteps)
        self.time_features = SinusoidalTimeFeatures(time_features)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_features, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        chans = [base_channels * m for m in channel_mults]
        self.stem = ComplexConv2d(2, chans[0])

        def res(i: int, o: int) -> ComplexResBlock:
            return ComplexResBlock(i, o, emb_dim, groups, activation, dropout)

        self.down = nn.ModuleList()
        ch = chans[0]
        for c in chans:
            self.down.append(nn.ModuleList([res(ch if j == 0 else c, c) for j in range(num_res_blocks)]))
            ch = c
        self.pool = SpectralPool() if pooling == "spectral" else ComplexMeanPool()
        self.mid = nn.ModuleList([res(ch, ch), res(ch, ch)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(chans))):
            c = chans[level]
            if level < len(chans) - 1:
                self.upsample.append(ComplexUpsample(ch, c))
                ch = c
            self.up.append(nn.ModuleList([res(ch + c if j == 0 else c, c) for j in range(num_res_blocks)]))
            ch = c
        self.out_norm = ComplexGroupNorm(ch, groups)
        self.out_act = ComplexActivation(activation, ch)
        self.out = ComplexConv2d(ch, 1)
        self.levels = len(chans)

    def forward(self, x_t: Tensor, magnitude: Tensor, t: Tensor) -> Tensor:
        """``x_t``: complex ``B x 1 x H x W``; ``magnitude``: real ``B x 1 x H x W``; ``t``: ``(B,)``
        integer timesteps in ``[0, T)``. Returns complex ``B x 1 x H x W``."""
        if not torch.is_complex(x_t):
            raise TypeError("x_t must be a complex tensor")
        side = 2 ** (self.levels - 1)
        if x_t.shape[-1] % (2 * side) or x_t.shape[-2] % (2 * side):
            raise ValueError(f"image sides must be divisible by {2 * side}, got {tuple(x_t.shape[-2:])}")
        mag = magnitude.to(x_t.real.dtype)
        x = torch.cat([x_t.real, mag, x_t.imag, torch.zeros_like(mag)], dim=1)
        emb = self.time_mlp(self.time_features(t.float() / self.timesteps))
        h = self.stem(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if i < self.levels - 1:
                h = self.pool(h)
        for block in self.mid:
            h = block(h, emb)
        for j, blocks in enumerate(self.up):
            if j > 0:
                h = self.upsample[j - 1](h)
            h = split_cat(h, skips.pop())
            for block in blocks:
                h = block(h, emb)
        return from_split(self.out(self.out_act(self.out_norm(h))))


def complex_unet_config(**sizes: Any) -> dict[str, Any]:
    """The ``model_config`` that :func:`build_complex_unet` reads (written beside exported weights)."""
    return {"kind": "phasegen_unet", "network": dict(sizes)}


def build_complex_unet(model_config: dict[str, Any]) -> ComplexUNet:
    """The network described by a weights file's ``model_config`` (random weights)."""
    if model_config.get("kind") != "phasegen_unet":
        raise ValueError(f"not a PhaseGen model config: {model_config}")
    return ComplexUNet(**model_config["network"])


def load_phasegen(path: str | Path, device: str | torch.device = "cpu") -> ComplexUNet:
    """Rebuild PhaseGen from exported EMA weights (eval mode); ``model.diffusion`` holds its settings.

    Raises:
        DataError: missing file or weights that are not a PhaseGen model.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ema.safetensors"
    meta = read_weights_metadata(path)
    cfg = meta.get("model_config")
    if not isinstance(cfg, dict) or cfg.get("kind") != "phasegen_unet":
        raise DataError(path, "model_config", "weights metadata does not describe a PhaseGen model")
    model = build_complex_unet(cfg)
    model.load_state_dict(load_ema_weights(path))
    model.diffusion = DiffusionSettings(**cfg.get("diffusion", {}))  # type: ignore[assignment]
    model.global_phase = cfg.get("global_phase", "keep")  # type: ignore[assignment]
    return model.to(device).eval()


__all__ = [
    "ACTIVATIONS",
    "ComplexActivation",
    "ComplexConv2d",
    "ComplexGroupNorm",
    "ComplexMeanPool",
    "ComplexResBlock",
    "ComplexUNet",
    "ComplexUpsample",
    "POOLINGS",
    "SpectralPool",
    "build_complex_unet",
    "complex_unet_config",
    "from_split",
    "split_cat",
    "to_split",
]
