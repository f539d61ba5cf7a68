"""Binary classifier of the evaluation experiments: a ResNet with squeeze-and-excitation (paper 2.4).

Input: float32 ``B x C x H x W`` with ``C = 2`` channels ``[real, imag]`` (latents ``2 x 48 x 48`` for
real-vs-synthetic, decoded patches ``2 x 96 x 96`` downstream; any ``H, W`` works because the head pools
globally). Output: one logit per item, shape ``(B,)``; ``sigmoid(logit)`` is the probability of the
positive class (synthetic, or abnormal).

Layout: a 3x3 stem conv (stride ``stem_stride``: 1 for latents, 2 for patches, so both reach the same
feature-map sizes), then stages of basic residual blocks (two 3x3 convs, batch norm, ReLU) whose residual
branch is recalibrated by a squeeze-and-excitation gate before the skip is added (Hu et al., SE-ResNet).
Each stage after the first halves the resolution. Global pooling, dropout, a linear head. The pooling
is the paper's global average (``avg``), or beyond the paper a global max (``max``) or both concatenated
(``avgmax``): a small lesion covers a few per cent of a patch, and an average over the whole map dilutes
its evidence, while a max keeps the strongest local response.

Beyond the paper, ``canonical_phase`` makes the network invariant to the absolute phase of a complex
item by construction: each item is rotated to global phase 0 (``exp(-i angle(sum of its pixels))``,
:func:`magphase.mri.complex.global_phase`) before the stem, keeping every relative phase. The absolute
phase of an MRI image carries no diagnosis; without this the network has to learn the invariance from
random-phase augmentation, which a small network at a CPU budget does slowly (docs/evaluation.md
"Classifier recipe"). A magnitude-only input ``[|x|, 0]`` has global phase 0, so it is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from magphase.mri.complex import global_phase, rotate_phase

#: Feature-map size the stem aims at: inputs larger than this are downsampled by the stem.
_STEM_TARGET = 48
#: Global pooling of the last feature map before the head.
POOLINGS = ("avg", "max", "avgmax")


class SqueezeExcitation(nn.Module):
    """Channel gate: ``x * sigmoid(W2 relu(W1 mean_hw(x)))``, shape preserving ``B x C x H x W``."""

    def __init__(self, channels: int, reduction: int = 8, min_hidden: int = 4):
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.excite(self.squeeze(x))


class SEBasicBlock(nn.Module):
    """Basic residual block with an SE gate on the residual branch: ``relu(skip(x) + se(f(x)))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, se_reduction: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcitation(out_channels, se_reduction)
        self.relu = nn.ReLU(inplace=True)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.se(self.bn2(self.conv2(h)))
        return self.relu(self.skip(x) + h)


def default_stem_stride(input_size: int) -> int:
    """Stem stride for a square input of side ``input_size``: 1 for 48 x 48 latents, 2 for 96 x 96 patches."""
    return max(1, int(input_size) // _STEM_TARGET)


class ResNetSEClassifier(nn.Module):
    """SE-ResNet for binary classification of 2-channel complex images or latents.

    Args:
        in_channels: input channels (2: ``[real, imag]``; the magnitude-only ablation feeds ``[|x|, 0]``).
        widths: channels of each stage.
        blocks: residual blocks per stage.
        se_reduction: squeeze-excitation bottleneck factor.
        stem_stride: stride of the stem conv.
        dropout: dropout probability before the head.
        pooling: global pooling before the head, one of :data:`POOLINGS`.
        canonical_phase: rotate each 2-channel item to global phase 0 first (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int = 2,
        widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] = (1, 1, 1),
        se_reduction: int = 8,
        stem_stride: int = 1,
        dropout: float = 0.0,
        pooling: str = "avg",
        canonical_phase: bool = False,
    ):
        super().__init__()
        if canonical_phase and in_channels != 2:
            raise ValueError(f"canonical_phase needs [real, imag] input (2 channels), got {in_channels}")
        self.canonical_phase = bool(canonical_phase)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if len(widths) != len(blocks) or not widths:
            raise ValueError(
                f"widths {tuple(widths)} and blocks {tuple(blocks)} need the same non-zero length"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(SEBasicBlock(channels, width, stride, se_reduction))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * (2 if pooling == "avgmax" else 1), 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last norm of each residual branch: every block starts as the identity, which
        # trains deeper nets stably with large learning rates (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, SEBasicBlock):
                nn.init.zeros_(m.bn2.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, x: Tensor) -> Tensor:
        """Pooled features ``B x widths[-1]`` (``B x 2 widths[-1]`` for ``avgmax``: average, then max)."""
        if self.canonical_phase:
            x = rotate_phase(x, -global_phase(x.detach()))
        h = self.stages(self.stem(x))
        if self.pooling == "avg":
            return h.mean(dim=(2, 3))
        if self.pooling == "max":
            return h.amax(dim=(2, 3))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B,)`` for input ``B x C x H x W``."""
        return self.head(self.dropout(self.features(x))).squeeze(1)


def build_classifier(model_config: dict[str, Any]) -> ResNetSEClassifier:
    """Rebuild a classifier from the ``model_config`` dict its training run wrote (``ema.json``).

    Keys: ``in_channels``, ``widths``, ``blocks``, ``se_reduction``, ``stem_stride``, ``dropout``,
    ``pooling`` (``avg`` when absent: weights written before the option), ``canonical_phase`` (False when
    absent) (other keys, e.g. ``input_size``
    or ``input_mode``, are ignored here).
    """
    return ResNetSEClassifier(
        in_channels=int(model_config.get("in_channels", 2)),
        widths=tuple(int(w) for w in model_config["widths"]),
        blocks=tuple(int(b) for b in model_config["blocks"]),
        se_reduction=int(model_config.get("se_reduction", 8)),
        stem_stride=int(model_config.get("stem_stride", 1)),
        dropout=float(model_config.get("dropout", 0.0)),
        pooling=str(model_config.get("pooling", "avg")),
        canonical_phase=bool(model_config.get("canonical_phase", False)),
    )


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "POOLINGS",
    "ResNetSEClassifier",
    "SEBasicBlock",
    "SqueezeExcitation",
    "build_classifier",
    "count_parameters",
    "default_stem_stride",
]
