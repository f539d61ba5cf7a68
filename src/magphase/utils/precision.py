"""Mixed precision: which autocast dtype an ``amp`` setting means on a device (training and sampling)."""

from __future__ import annotations

import torch


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device`` (None: full float32). ``auto`` is bf16/fp16 on CUDA only."""
    if amp == "none":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
