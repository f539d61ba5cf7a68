"""Benchmark flow sampling: patches/s (latent sampling + decode) at K = 10, 25, 50 Heun steps with
classifier-free guidance, the sampler's overhead over its network calls, and network evaluations per patch.

Model: the velocity U-Net of a preset (random weights: timing does not depend on training) on 2 x 48 x 48
latents; decoder: the autoencoder preset's decoder (random weights) when ``magphase.models.cvae`` is
importable. Guidance w = 2 (so every evaluation is ONE batched forward of 2B: conditional + null halves).

Overhead ratio = (time of the sampler) / (batched calls x time of one batched 2B forward). Heun with the
final Euler step makes 2K - 1 batched calls, so 2 (2K - 1) network evaluations per patch with guidance
(``calls`` and ``NFE`` in the table); the sampler adds per-sample noise generation, float64 state
updates and the guidance combination. Target: <= 1.10. ``ratio_vs_K_forwards`` (sampler / (K forwards))
is also written: about 2 for Heun by construction (two evaluations per step).

``--amp bf16`` runs the network evaluations under bf16 autocast (``flow.sampling.amp``; the forward of the
overhead ratio is timed the same way); the GPU row uses ``--gpu-amp`` (default bf16).

    .venv/bin/python benchmarks/sampling.py [--preset cpu-small] [--batch 32] [--threads 1] [--repeats 3]
        [--amp none|bf16|fp16]

Prints a table and writes ``benchmarks/results/sampling.json``. CPU always; CUDA too when present.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from magphase.config.flow import FLOW_PRESETS
from magphase.conventions import LATENT_SHAPE
from magphase.generative.guidance import guidance_conditions
from magphase.generative.sampling import SampleGroup, decode_latents, network_evaluations, sample_latents
from magphase.models.unet import VelocityUNet, count_parameters
from magphase.utils.precision import resolve_amp

RESULTS = Path(__file__).resolve().parent / "results" / "sampling.json"
STEPS = (10, 25, 50)
GUIDANCE = 2.0


class UpsampleDecoder(nn.Module):
    """Fallback decoder (used only when the autoencoder module is missing): conv + 2x upsampling."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 2, 3, padding=1)

    def decode(self, z: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.interpolate(torch.relu(self.conv(z)), scale_factor=2.0))


def _decoder(preset: str) -> tuple[nn.Module, str]:
    try:
        from magphase.config.autoencoder import AUTOENCODER_PRESETS
        from magphase.models.cvae import build_autoencoder
    except ImportError:
        return UpsampleDecoder(), "stand-in upsampler (autoencoder module missing)"
    name = "paper" if preset == "paper" else "cpu"
    return build_autoencoder(AUTOENCODER_PRESETS[name]["network"]), f"CVAE decoder preset {name!r}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` runs (after one warm-up run).

    The minimum, not the median: on a shared machine other processes only ever add time.
    """
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_device(device: torch.device, preset: str, batch: int, repeats: int, amp: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model = VelocityUNet(**FLOW_PRESETS[preset]["unet"], input_size=LATENT_SHAPE[-1]).to(device).eval()
    decoder, decoder_name = _decoder(preset)
    decoder = decoder.to(device).eval()
    group = SampleGroup("AXT1", None, batch)
    seq = torch.full((batch,), 1, dtype=torch.long, device=device)
    cond, null = guidance_conditions(1, seq)
    both = cond.cat(null)
    x2 = torch.randn(2 * batch, *LATENT_SHAPE, device=device)
    t2 = torch.full((2 * batch,), 0.5, device=device)

    amp_dtype = resolve_amp(amp, device)

    @torch.no_grad()
    def one_forward() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            model(x2, t2, both.sequence, both.label)

    z = sample_latents(model, stage=1, group=group, guidance=GUIDANCE, steps=2, seed=0)
    t_decode = _time(lambda: decode_latents(decoder, z, "AXT1", batch_size=batch), device, repeats)
    rows = []
    forwards = []
    for k in STEPS:
        # The forward is re-timed beside every K (min over single calls) so that both sides of the
        # overhead ratio see the same machine state.
        t_forward = _time(one_forward, device, 3 * repeats + 2)
        forwards.append(t_forward)
        nfe = network_evaluations(k, "heun")
        t_sample = _time(
            lambda k=k: sample_latents(
                model, stage=1, group=group, guidance=GUIDANCE, steps=k, seed=0, batch_size=batch, amp=amp
            ),
            device,
            repeats,
        )
        rows.append(
            {
                "steps": k,
                # One batched call per solver evaluation holds the conditional and the null pass, so
                # each patch goes through the network twice per call.
                "batched_forwards": nfe,
                "evaluations_per_patch": 2 * nfe,
                "sampler_s": round(t_sample, 4),
                "decode_s": round(t_decode, 4),
                "patches_per_s": round(batch / (t_sample + t_decode), 2),
                "latents_per_s": round(batch / t_sample, 2),
                "one_batched_forward_s": round(t_forward, 5),
                "overhead_ratio": round(t_sample / (nfe * t_forward), 4),
                "ratio_vs_K_forwards": round(t_sample / (k * t_forward), 4),
            }
        )
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "preset": preset,
        "unet_parameters": count_parameters(model),
        "decoder": decoder_name,
        "batch": batch,
        "amp": amp,
        "guidance": GUIDANCE,
        "one_batched_forward_s": round(min(forwards), 5),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-small", choices=sorted(FLOW_PRESETS))
    parser.add_argument("--batch", type=int, default=32, help="latents per batch (the network sees 2x)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: stable on a shared box)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="CPU autocast")
    parser.add_argument("--gpu-preset", default="paper", choices=sorted(FLOW_PRESETS))
    parser.add_argument("--gpu-amp", default="bf16", choices=["none", "bf16", "fp16"])
    parser.add_argument("--gpu-batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = [bench_device(torch.device("cpu"), args.preset, args.batch, args.repeats, args.amp)]
    if torch.cuda.is_available():
        results.append(
            bench_device(torch.device("cuda"), args.gpu_preset, args.gpu_batch, args.repeats, args.gpu_amp)
        )

    header = f"{'device':<8}{'preset':<11}{'amp':<6}{'B':>5}{'K':>5}{'calls':>6}{'NFE':>5}{'sampler s':>11}"
    header += f"{'decode s':>10}{'patch/s':>10}{'overhead':>10}{'vs K fwd':>10}"
    print(header)
    for res in results:
        for r in res["rows"]:
            print(
                f"{res['device']:<8}{res['preset']:<11}{res['amp']:<6}{res['batch']:>5}{r['steps']:>5}"
                f"{r['batched_forwards']:>6}{r['evaluations_per_patch']:>5}{r['sampler_s']:>11.3f}{r['decode_s']:>10.3f}"
                f"{r['patches_per_s']:>10.1f}{r['overhead_ratio']:>10.3f}{r['ratio_vs_K_forwards']:>10.3f}"
            )
        print(
            f"  one batched forward (2 x {res['batch']}): {res['one_batched_forward_s'] * 1e3:.1f} ms; "
            f"{res['unet_parameters'] / 1e6:.2f} M params; decoder: {res['decoder']}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"torch": torch.__version__, "target_overhead_ratio": 1.10, "results": results}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
