"""The conditional VAE: shapes, FiLM conditioning, loss terms, training through the engine, the exported
weights, the patch dataset and the latent store written by ``encode``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from magphase.config import load_config
from magphase.config.autoencoder import AUTOENCODER_PRESETS, AutoencoderConfig
from magphase.conventions import SEQUENCES
from magphase.data.datasets import PatchDataset, random_flips, sequence_indices
from magphase.data.store import Store, StoreWriter
from magphase.errors import DataError
from magphase.evaluation.metrics import patch_phase_coherence
from magphase.models.cvae import (
    AutoencoderSpec,
    ConditionalVAE,
    channel_to_space_shortcut,
    load_autoencoder,
    space_to_channel_shortcut,
)
from magphase.models.losses import finite_differences, gradient_l1, kl_standard_normal, vae_loss
from magphase.stages.autoencoder import AutoencoderTask
from magphase.stages.encode import encode_store
from magphase.training import TrainSettings, fit
from magphase.training.checkpoint import export_ema

TINY = AutoencoderSpec(
    full_res_channels=8, full_res_blocks=0, latent_res_channels=16, latent_res_blocks=1, groups=4
)


def synthetic_patches(n: int, rng: np.random.Generator, noise: float = 0.005) -> np.ndarray:
    """Smooth complex 'anatomy' (Gaussian blobs, max magnitude 0.9) with a linear + bilinear phase."""
    yy, xx = np.mgrid[0:96, 0:96] / 96 - 0.5
    out = np.empty((n, 2, 96, 96), np.float32)
    for i in range(n):
        mag = np.zeros((96, 96))
        for _ in range(5):
            cy, cx = rng.uniform(-0.5, 0.5, 2)
            w = rng.uniform(0.04, 0.2)
            mag += rng.uniform(0.2, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * w * w))
        mag = 0.9 * mag / mag.max()
        a, b, c, d = rng.uniform(-np.pi, np.pi), *rng.uniform(-4, 4, 3)
        z = mag * np.exp(1j * (a + b * xx + c * yy + d * xx * yy))
        z = z + noise * (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape))
        out[i, 0], out[i, 1] = z.real, z.imag
    return out


def make_store(path, rng, counts=(("train", 8), ("val", 2), ("test", 4)), sequences=SEQUENCES):
    with StoreWriter(path, {"patches": (2, 96, 96)}) as w:
        pid = 0
        for split, n in counts:
            rows = [
                dict(
                    patch_id=pid + i,
                    volume=f"vol{(pid + i) // 2}",
                    sequence=sequences[(pid + i) % len(sequences)],
                    label=("normal", "abnormal", "unlabeled")[(pid + i) % 3],
                    split=split,
                    slice=0,
                    row=0,
                    col=0,
                    box_overlap=0.0,
                )
                for i in range(n)
            ]
            w.append(rows, patches=synthetic_patches(n, rng))
            pid += n
    return path


# ------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize(
    "spec",
    [
        TINY,
        AutoencoderSpec(
            full_res_channels=8, full_res_blocks=1, latent_res_channels=16, latent_res_blocks=1, groups=4
        ),
        AutoencoderSpec(latent_res_channels=16, latent_res_blocks=1, groups=4, shortcut=False),
    ],
    ids=["latent-only", "full-res", "no-shortcut"],
)
def test_shapes(spec):
    model = ConditionalVAE(spec)
    x = torch.randn(3, 2, 96, 96)
    seq = torch.tensor([0, 2, 4])
    mu, logvar = model.encode(x, seq)
    assert mu.shape == logvar.shape == (3, 2, 48, 48)
    assert model.decode(mu, seq).shape == (3, 2, 96, 96)
    x_hat, mu2, _ = model(x, seq, sample=False)
    assert x_hat.shape == x.shape and torch.equal(mu, mu2)


def test_presets_build_with_the_paper_latent():
    for name, preset in AUTOENCODER_PRESETS.items():
        model = ConditionalVAE(AutoencoderSpec(**preset["network"]))
        assert model.latent_shape == (2, 48, 48), name


def open_zero_inits(model: ConditionalVAE) -> ConditionalVAE:
    """Give the zero-initialised convolutions (residual branches, trunk outputs) random weights, as training
    would, so that every path of an untrained network contributes."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
                torch.nn.init.normal_(module.weight, std=0.05)
    return model


def test_film_is_live():
    torch.manual_seed(0)
    model = open_zero_inits(ConditionalVAE(TINY)).eval()
    x = torch.randn(2, 2, 96, 96)
    with torch.no_grad():
        mu_a, _ = model.encode(x, torch.tensor([0, 0]))
        mu_b, _ = model.encode(x, torch.tensor([3, 3]))
        out_a = model.decode(mu_a, torch.tensor([0, 0]))
        out_b = model.decode(mu_a, torch.tensor([3, 3]))
    assert (mu_a - mu_b).abs().max() > 1e-4
    assert (out_a - out_b).abs().max() > 1e-4
    # Each sample only sees its own condition.
    with torch.no_grad():
        mixed, _ = model.encode(x, torch.tensor([0, 3]))
    torch.testing.assert_close(mixed[0], mu_a[0])
    torch.testing.assert_close(mixed[1], mu_b[1])


def test_untrained_shortcut_model_is_mean_pool_and_bilinear():
    model = ConditionalVAE(TINY)
    x = torch.randn(2, 2, 96, 96)
    seq = torch.tensor([1, 2])
    mu, logvar = model.encode(x, seq)
    torch.testing.assert_close(mu, torch.nn.functional.avg_pool2d(x, 2))
    torch.testing.assert_close(logvar, torch.full_like(logvar, -10.0))
    up = model.decode(mu, seq)
    torch.testing.assert_close(up, torch.nn.functional.interpolate(mu, scale_factor=2, mode="bilinear"))
    assert space_to_channel_shortcut(x, 4).shape == (2, 4, 48, 48)
    assert channel_to_space_shortcut(mu, 4).shape == (2, 4, 96, 96)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.randn(2, 96, 96), r"input x must have shape \(B, 2, 96, 96\)"),
        (torch.randn(2, 1, 96, 96), r"got \(2, 1, 96, 96\)"),
        (torch.randn(2, 2, 64, 64), r"got \(2, 2, 64, 64\)"),
        (torch.zeros(2, 2, 96, 96, dtype=torch.long), "floating-point"),
    ],
)
def test_wrong_input_raises(bad, match):
    model = ConditionalVAE(TINY)
    with pytest.raises(ValueError, match=match):
        model.encode(bad, torch.tensor([0, 1]))


def test_wrong_condition_or_latent_raises():
    model = ConditionalVAE(TINY)
    x = torch.randn(2, 2, 96, 96)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model.encode(x, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        model.encode(x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="integer"):
        model.encode(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"latent z must have shape \(B, 2, 48, 48\)"):
        model.decode(torch.randn(2, 2, 96, 96), torch.tensor([0, 1]))


# -------------------------------------------------------------------------------------------- loss
def test_loss_terms_analytic():
    x = torch.randn(2, 2, 8, 8)
    # A constant offset has zero finite differences; L1 equals the offset.
    assert gradient_l1(x + 0.3, x).item() == pytest.approx(0.0, abs=1e-6)
    t = vae_loss(x + 0.3, x, torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4), 0.5, 0.1)
    assert t.recon.item() == pytest.approx(0.3, rel=1e-5)
    assert t.kl.item() == pytest.approx(0.0, abs=1e-7)
    assert t.total.dtype == torch.float32
    # KL of N(mu, s^2) vs N(0, 1) per element: 0.5 (mu^2 + s^2 - 1 - log s^2).
    mu, logvar = torch.full((1, 2, 3, 3), 2.0), torch.full((1, 2, 3, 3), math.log(0.25))
    assert kl_standard_normal(mu, logvar).item() == pytest.approx(
        0.5 * (4 + 0.25 - 1 - math.log(0.25)), rel=1e-6
    )
    # A ramp: unit differences along columns only.
    ramp = torch.arange(5.0).repeat(5, 1)[None, None]
    dy, dx = finite_differences(ramp)
    assert dy.abs().sum() == 0 and torch.all(dx == 1)
    assert gradient_l1(ramp, torch.zeros_like(ramp)).item() == pytest.approx(1.0)


def test_loss_is_float32_under_bf16_autocast():
    model = ConditionalVAE(TINY)
    task = AutoencoderTask(TINY, 0.5, 1e-4, "none")
    batch = {"x": torch.randn(2, 2, 96, 96), "sequence": torch.tensor([0, 1])}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, terms = task.loss(model, batch, 0)
    assert loss.dtype == torch.float32 and loss.ndim == 0 and set(terms) == {"recon", "grad", "kl"}


def test_random_flips_keep_pixel_values():
    torch.manual_seed(0)
    x = torch.randn(64, 2, 6, 6)
    y = random_flips(x)
    candidates = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    for i in range(64):
        assert any(torch.equal(y[i], c[i]) for c in candidates)
    assert not torch.equal(x, y)


# ------------------------------------------------------------------------------ training + weights
@pytest.mark.slow
def test_short_overfit_improves_coherence_and_exports_loadable_weights(tmp_path, rng):
    store = make_store(tmp_path / "patches", rng, counts=(("train", 6),))
    dataset = PatchDataset(store, split="train")
    x = torch.from_numpy(Store(store).read("patches", slice(None)))
    seq = torch.from_numpy(dataset.sequences)
    # Without the shortcuts the untrained network reconstructs nothing (gamma near 0): the round trip
    # must be learnt.
    spec = AutoencoderSpec(latent_res_channels=16, latent_res_blocks=1, groups=4, shortcut=False)
    task = AutoencoderTask(spec, lambda_grad=0.5, lambda_kl=1e-4, augmentation="none")

    def round_trip(model: ConditionalVAE) -> torch.Tensor:
        with torch.no_grad():
            return model.decode(model.encode(x, seq)[0], seq)

    torch.manual_seed(0)
    gamma0 = patch_phase_coherence(round_trip(ConditionalVAE(spec)), x).mean()
    settings = TrainSettings(
        steps=40,
        batch_size=6,
        lr=3e-3,
        warmup_steps=5,
        ema_decay=0.0,
        checkpoint_every=40,
        log_every=20,
        seed=0,
        device="cpu",
    )
    result = fit(task, dataset, settings, tmp_path / "run")
    model = load_autoencoder(tmp_path / "run")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x_hat = round_trip(model)
    torch.testing.assert_close(x_hat, round_trip(result.ema_model))
    gamma = patch_phase_coherence(x_hat, x).mean()
    assert gamma > 0.7 and gamma > gamma0 + 0.3  # measured: 0.35 -> 0.76
    info = json.loads((tmp_path / "run" / "ema.json").read_text())
    assert info["model_config"]["kind"] == "magphase.autoencoder/1"


def test_load_autoencoder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_autoencoder(tmp_path)
    export_ema(torch.nn.Linear(2, 2).state_dict(), tmp_path, step=1, model_config={"kind": "other"})
    with pytest.raises(DataError, match="not a magphase autoencoder"):
        load_autoencoder(tmp_path)


# ------------------------------------------------------------------------------------- data, config
def test_patch_dataset_reads_split_and_batches(tmp_path, rng):
    store = make_store(tmp_path / "patches", rng)
    ds = PatchDataset(store, split="test")
    assert len(ds) == 4 and list(ds.indices) == [10, 11, 12, 13]
    one = ds[2]
    batch = ds.__getitems__([2, 0])
    torch.testing.assert_close(batch[0]["x"], one["x"])
    assert batch[0]["sequence"].item() == one["sequence"].item() == SEQUENCES.index(ds.sequence_names[2])
    with pytest.raises(DataError, match="no items in split"):
        PatchDataset(store, split="nope")


def test_store_batched_read_any_order_and_repeats(tmp_path, rng):
    store = Store(make_store(tmp_path / "patches", rng))
    every = store.read("patches", slice(None))
    for idx in ([5, 1, 2, 3, 9], [4, 4, 0, 13, 12, 4], [], [7]):
        np.testing.assert_array_equal(store.read("patches", idx), every[np.asarray(idx, dtype=int)])


def test_patch_dataset_rejects_bad_stores(tmp_path, rng):
    with StoreWriter(tmp_path / "wrong", {"patches": (2, 32, 32)}) as w:
        w.append([dict(patch_id=0, sequence="AXT1", split="train")], patches=np.zeros((1, 2, 32, 32)))
    with pytest.raises(DataError, match=r"expected \(2, 96, 96\)"):
        PatchDataset(tmp_path / "wrong")
    store = make_store(tmp_path / "p", rng, counts=(("train", 2),), sequences=("AXT1", "T2-TIRM"))
    with pytest.raises(DataError, match=r"\[sequence\].*T2-TIRM"):
        PatchDataset(store)
    ds = PatchDataset(store, sequence_aliases={"T2-TIRM": "AXFLAIR"})
    assert list(ds.sequences) == [SEQUENCES.index("AXT1"), SEQUENCES.index("AXFLAIR")]
    assert list(sequence_indices(["AXT2", "axt1post"])) == [4, 2]
    aliases = {"T1-TSE": "AXT1", "T2-TIRM": "AXFLAIR"}
    assert list(sequence_indices(["T2TIRM", "t1_tse"], aliases=aliases)) == [0, 1]


def test_config_presets_and_overrides():
    cfg = AutoencoderConfig()
    assert cfg.train.steps == 800 and cfg.network.latent_res_channels == 32
    paper = AutoencoderConfig(preset="paper", train={"steps": 5000})
    assert paper.train.steps == 5000 and paper.train.batch_size == 64  # explicit wins, preset fills the rest
    full = load_config(overrides=["autoencoder.preset=paper", "autoencoder.loss.lambda_kl=0.01"])
    assert full.autoencoder.network.full_res_blocks == 2 and full.autoencoder.loss.lambda_kl == 0.01


# ------------------------------------------------------------------------------------------ encode
def _exported_tiny_autoencoder(folder):
    """A seeded tiny CVAE exported as EMA weights (step 3) into ``folder`` and loaded back."""
    torch.manual_seed(0)
    model = ConditionalVAE(TINY).eval()
    export_ema(model.state_dict(), folder, step=3, model_config=model.model_config())
    return load_autoencoder(folder)


def test_encode_writes_latent_store_with_same_manifest(tmp_path, rng):
    store = make_store(tmp_path / "patches", rng)
    model = _exported_tiny_autoencoder(tmp_path / "ae")
    seen: list[int] = []
    out = encode_store(
        model, store, tmp_path / "latents", autoencoder=tmp_path / "ae", batch_size=5, progress=seen.append
    )
    src, lat = Store(store), Store(out)
    assert lat.arrays == {"mu": (2, 48, 48), "logvar": (2, 48, 48)} and sum(seen) == len(src) == len(lat)
    assert lat.manifest.equals(src.manifest)
    x = torch.from_numpy(src.read("patches", slice(None)))
    seq = torch.from_numpy(PatchDataset(src, split=None).sequences)
    with torch.no_grad():
        mu, logvar = model.encode(x, seq)
    np.testing.assert_allclose(lat.read("mu", slice(None)), mu.numpy(), atol=1e-6)
    np.testing.assert_allclose(lat.read("logvar", slice(None)), logvar.numpy(), atol=1e-6)
    assert lat.meta["kind"] == "latents" and lat.meta["autoencoder_step"] == 3
    assert len(lat.meta["latent_stats"]["mu_mean"]) == 2
    # Up to date: a second call does not rewrite; different weights do.
    mtime = (out / "arrays.h5").stat().st_mtime_ns
    encode_store(model, store, out, autoencoder=tmp_path / "ae")
    assert (out / "arrays.h5").stat().st_mtime_ns == mtime
    export_ema(ConditionalVAE(TINY).state_dict(), tmp_path / "ae", step=4, model_config=model.model_config())
    encode_store(load_autoencoder(tmp_path / "ae"), store, out, autoencoder=tmp_path / "ae")
    assert Store(out).meta["autoencoder_step"] == 4
    assert not list(tmp_path.glob("latents.tmp-*"))


def test_encode_canonical_phase_rotates_patches_and_records_the_angle(tmp_path, rng):
    from magphase.mri.complex import global_phase, rotate_phase

    store = make_store(tmp_path / "patches", rng)
    model = _exported_tiny_autoencoder(tmp_path / "ae")
    plain = encode_store(model, store, tmp_path / "plain", autoencoder=tmp_path / "ae")
    out = encode_store(model, store, tmp_path / "canon", autoencoder=tmp_path / "ae", canonical_phase=True)
    src, lat = Store(store), Store(out)
    assert lat.meta["canonical_phase"] is True and Store(plain).meta["canonical_phase"] is False
    assert "global_phase" not in Store(plain).manifest.columns
    x = src.read("patches", slice(None))
    phi0 = lat.manifest["global_phase"].to_numpy()
    np.testing.assert_allclose(phi0, global_phase(x), atol=1e-6)
    # The encoded patches are the inputs rotated to global phase 0 (sum real and positive).
    canon = rotate_phase(x, -phi0)
    s = canon.astype(np.float64).sum(axis=(-2, -1))
    assert (s[:, 0] > 0).all() and np.abs(s[:, 1]).max() < 1e-6 * np.abs(s[:, 0]).max()
    seq = torch.from_numpy(PatchDataset(src, split=None).sequences)
    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(canon), seq)
    np.testing.assert_allclose(lat.read("mu", slice(None)), mu.numpy(), atol=1e-5)
    # The flag is part of what makes a store up to date: switching it back re-encodes.
    encode_store(model, store, out, autoencoder=tmp_path / "ae")
    assert Store(out).meta["canonical_phase"] is False
