"""SE-ResNet classifier, its training task through the engine, prediction and the results file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_fixtures import (
    TINY_NET,
    tiny_settings,
    write_latent_store,
)

from magphase.config.evaluation import EVALUATION_PRESETS, ClassifierConfig, EvaluationConfig
from magphase.data.store import Store
from magphase.errors import DataError
from magphase.evaluation.classifier_train import (
    ArraySource,
    ClassifierDataset,
    ClassifierTask,
    ResultsFile,
    class_balanced_weights,
    constant_items,
    load_trained_classifier,
    mean_std,
    mixup,
    open_source,
    predict_probabilities,
    prepare_input,
    train_classifier,
)
from magphase.evaluation.metrics import safe_auroc
from magphase.models.classifier import (
    ResNetSEClassifier,
    SqueezeExcitation,
    build_classifier,
    count_parameters,
    default_stem_stride,
)
from magphase.mri.complex import channels_to_complex, complex_to_channels, rotate_phase


def test_squeeze_excitation_gates_channels_in_unit_interval():
    se = SqueezeExcitation(16, reduction=4)
    x = torch.rand(3, 16, 5, 7) + 0.1
    y = se(x)
    assert y.shape == x.shape
    gate = y / x
    # one gate per (item, channel), constant over space, in (0, 1)
    assert torch.allclose(gate, gate[..., :1, :1].expand_as(gate), atol=1e-6)
    assert (gate > 0).all() and (gate < 1).all()


@pytest.mark.parametrize(("size", "stride"), [(48, 1), (96, 2)])
def test_classifier_shapes_for_latents_and_patches(size, stride):
    assert default_stem_stride(size) == stride
    model = ResNetSEClassifier(2, widths=(8, 16, 32), blocks=(1, 2, 1), stem_stride=stride).eval()
    x = torch.randn(4, 2, size, size)
    logits = model(x)
    assert logits.shape == (4,) and logits.dtype == torch.float32
    # both inputs reach the same feature size before the head: 48 / 1 / 2 / 2 = 96 / 2 / 2 / 2 = 12
    assert model.stages(model.stem(x)).shape[-1] == 12


def test_presets_and_model_config_round_trip():
    small = ResNetSEClassifier(2, **EVALUATION_PRESETS["cpu-small"]["classifier"])
    assert 50_000 < count_parameters(small) < 150_000
    task = ClassifierTask(TINY_NET, (2, 96, 96))
    cfg = task.model_config()
    assert cfg["stem_stride"] == 2 and cfg["input_shape"] == [2, 96, 96]
    a, b = task.build_model(), build_classifier(cfg)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    with pytest.raises(ValueError):
        ClassifierConfig(widths=(8, 16), blocks=(1,))


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_pooling_options_and_their_model_config(pooling):
    net = TINY_NET.model_copy(update={"pooling": pooling})
    task = ClassifierTask(net, (2, 32, 32))
    cfg = task.model_config()
    assert cfg["pooling"] == pooling
    model = build_classifier(cfg).eval()
    x = torch.randn(3, 2, 32, 32)
    h = model.stages(model.stem(x))
    feats = model.features(x)
    avg, mx = h.mean(dim=(2, 3)), h.amax(dim=(2, 3))
    want = {"avg": avg, "max": mx, "avgmax": torch.cat([avg, mx], 1)}[pooling]
    torch.testing.assert_close(feats, want)
    assert model(x).shape == (3,)
    # a single hot spot moves a max-pooled feature, an average over the map barely
    y = x.clone()
    y[:, :, 10:13, 10:13] += 25.0
    if pooling == "max":
        assert (model.features(y) - feats).abs().max() > 0.5


def test_weights_written_before_the_pooling_option_load_as_average():
    cfg = ClassifierTask(TINY_NET, (2, 32, 32)).model_config()
    del cfg["pooling"]
    assert build_classifier(cfg).pooling == "avg"
    with pytest.raises(ValueError, match="pooling"):
        ResNetSEClassifier(2, widths=(8,), blocks=(1,), pooling="median")


def test_canonical_phase_makes_the_classifier_invariant_to_a_global_phase_only():
    net = TINY_NET.model_copy(update={"canonical_phase": True})
    cfg = ClassifierTask(net, (2, 32, 32)).model_config()
    assert cfg["canonical_phase"] is True
    model = build_classifier(cfg).eval()
    plain = build_classifier({**cfg, "canonical_phase": False}).eval()
    plain.load_state_dict(model.state_dict())  # the option adds no parameters
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 32, 32, generator=g) + 1.0
    theta = torch.tensor([0.3, -2.0, 3.0, 1.1])
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(model(rotate_phase(x, theta)), out, atol=1e-4, rtol=1e-4)
        assert (plain(rotate_phase(x, theta)) - plain(x)).abs().max() > 1e-3  # without it: not invariant
        # a relative phase (here a phase ramp) still changes the output
        ramp = torch.polar(torch.ones(32), torch.linspace(0, 2.0, 32))
        y = complex_to_channels(channels_to_complex(x) * ramp).float()
        assert (model(y) - out).abs().max() > 1e-3
    # old weights (no key) load without it; it needs [real, imag] input
    del cfg["canonical_phase"]
    assert build_classifier(cfg).canonical_phase is False
    with pytest.raises(ValueError, match="canonical_phase"):
        ResNetSEClassifier(1, widths=(8,), blocks=(1,), canonical_phase=True)


def test_magnitude_input_discards_phase_only():
    rng = np.random.default_rng(0)
    mag = rng.uniform(0.1, 1.0, (2, 8, 8))
    a = complex_to_channels(mag * np.exp(1j * rng.uniform(-np.pi, np.pi, mag.shape)))
    b = complex_to_channels(mag * np.exp(1j * rng.uniform(-np.pi, np.pi, mag.shape)))
    pa, pb = prepare_input(torch.from_numpy(a), "magnitude"), prepare_input(torch.from_numpy(b), "magnitude")
    torch.testing.assert_close(pa, pb)
    torch.testing.assert_close(pa[:, 0], torch.from_numpy(mag).float())
    assert (pa[:, 1] == 0).all()
    assert torch.equal(prepare_input(torch.from_numpy(a), "complex"), torch.from_numpy(a))
    with pytest.raises(ValueError):
        prepare_input(torch.from_numpy(a), "phase")


def test_mixup_mixes_inputs_and_targets_with_one_weight():
    torch.manual_seed(0)
    x = torch.stack([torch.zeros(2, 4, 4), torch.ones(2, 4, 4)])
    y = torch.tensor([0.0, 1.0])
    xm, ym = mixup(x, y, alpha=0.4)
    # each mixed item's mean equals its mixed target: the same lambda is used for inputs and targets
    torch.testing.assert_close(xm.mean(dim=(1, 2, 3)), ym)
    assert ((ym >= 0) & (ym <= 1)).all()
    assert mixup(x, y, 0.0)[0] is x


def test_class_balanced_weights_give_equal_class_mass():
    t = np.array([0, 0, 0, 0, 1], dtype=np.float32)
    w = class_balanced_weights(t)
    assert w[t == 0].sum() == pytest.approx(w[t == 1].sum())
    with pytest.raises(DataError, match="one class"):
        class_balanced_weights(np.zeros(3))


def test_train_then_predict_separates_shifted_latents(tmp_path):
    rng = np.random.default_rng(1)
    counts = {"AXT1": {"train": 96, "val": 0, "test": 48}}
    real = write_latent_store(tmp_path / "real", rng, counts)
    fake = write_latent_store(tmp_path / "fake", rng, counts, offset=1.0, synthetic=True)
    rs, fs = Store(real), Store(fake)
    tr = [
        constant_items(open_source(rs, "mu", np.arange(96), 1 << 30), np.arange(96), 0.0),
        constant_items(ArraySource(fs, "z"), np.arange(96), 1.0),
    ]
    result = train_classifier(
        tr, tmp_path / "run", network=TINY_NET, settings=tiny_settings(40), mixup_alpha=0.2
    )
    assert (tmp_path / "run" / "ema.safetensors").is_file()
    test = [
        constant_items(ArraySource(rs, "mu"), np.arange(96, 144), 0.0),
        constant_items(ArraySource(fs, "z"), np.arange(96, 144), 1.0),
    ]
    p = predict_probabilities(result.ema_model, test, batch_size=20)
    assert p.shape == (96,) and ((p >= 0) & (p <= 1)).all()
    assert safe_auroc(np.r_[np.zeros(48), np.ones(48)], p) > 0.95
    # the saved EMA weights rebuild the same predictor
    model, config = load_trained_classifier(tmp_path / "run")
    np.testing.assert_allclose(predict_probabilities(model, test), p, rtol=1e-5, atol=1e-6)
    assert config["input_mode"] == "complex"
    # resuming a finished run trains nothing and returns the same EMA weights
    again = train_classifier(
        tr, tmp_path / "run", network=TINY_NET, settings=tiny_settings(40), mixup_alpha=0.2
    )
    assert again.resumed_from == 40
    np.testing.assert_allclose(predict_probabilities(again.ema_model, test), p, rtol=1e-5, atol=1e-6)


def test_dataset_posterior_std_and_shapes(tmp_path):
    rng = np.random.default_rng(2)
    real = Store(write_latent_store(tmp_path / "r", rng, {"AXT1": {"train": 5}}))
    fake = Store(write_latent_store(tmp_path / "f", rng, {"AXT1": {"train": 3}}, synthetic=True))
    ds = ClassifierDataset(
        [
            constant_items(ArraySource(real, "mu"), np.arange(5), 0.0, ArraySource(real, "logvar")),
            constant_items(ArraySource(fake, "z"), np.arange(3), 1.0),
        ]
    )
    assert len(ds) == 8
    item = ds[0]
    assert item["x"].shape == (2, 8, 8) and item["y"] == 0
    torch.testing.assert_close(item["std"], torch.full((2, 8, 8), 0.05), atol=1e-6, rtol=1e-5)
    assert (ds[7]["std"] == 0).all() and ds[7]["y"] == 1
    # evaluation draws one fixed posterior sample: same seed, same probabilities
    model = ResNetSEClassifier(2, widths=(4,), blocks=(1,))
    items = constant_items(ArraySource(real, "mu"), np.arange(5), 0.0, ArraySource(real, "logvar"))
    a = predict_probabilities(model, items, posterior_seed=3)
    b = predict_probabilities(model, items, posterior_seed=3)
    np.testing.assert_array_equal(a, b)


def test_results_file_resumes_and_replaces_by_key(tmp_path):
    path = tmp_path / "results.csv"
    rf = ResultsFile(path, ("config", "run"))
    assert not rf.has(config="real100", run=0)
    rf.append([{"config": "real100", "run": 0, "auroc": 0.8}, {"config": "add010", "run": 0, "auroc": 0.7}])
    again = ResultsFile(path, ("config", "run"))
    assert again.has(config="real100", run=0) and not again.has(config="real100", run=1)
    again.append([{"config": "real100", "run": 0, "auroc": 0.9}])
    frame = ResultsFile(path, ("config", "run")).frame()
    assert len(frame) == 2
    assert float(frame[frame["config"] == "real100"]["auroc"].iloc[0]) == 0.9


def test_mean_std_is_sample_std_and_ignores_nan():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0, 3))
    assert mean_std([0.5]) == (0.5, 0.0, 1)
    m, s, n = mean_std([float("nan"), 1.0, 3.0])
    assert (m, n) == (2.0, 2) and s == pytest.approx(np.sqrt(2))


def test_evaluation_config_defaults_are_the_paper_protocol():
    cfg = EvaluationConfig()
    assert cfg.realfake.runs == 5 and cfg.realfake.n_test_sets == 4 and cfg.realfake.guidance == 1.0
    assert cfg.downstream.runs == 5 and cfg.downstream.guidance == 2.0
    assert cfg.downstream.real_fractions == tuple(round(1 - 0.1 * k, 1) for k in range(11))
    assert cfg.downstream.additive_fractions == tuple(round(0.1 * k, 1) for k in range(1, 11))
    assert cfg.augment.zoom == (1.0, 1.2)
    assert cfg.downstream.external_top_fraction == 0.05
    with pytest.raises(ValueError):
        EvaluationConfig(downstream={"additive_fractions": (0.0, 0.5)})
    # a partial `train` mapping keeps the section's defaults for the keys it does not name
    partial = EvaluationConfig(downstream={"train": {"steps": 70}}).downstream.train
    assert partial.steps == 70 and partial.batch_size == cfg.downstream.train.batch_size
    assert partial.lr == cfg.downstream.train.lr


def test_results_rows_from_other_settings_are_dropped(tmp_path):
    path = tmp_path / "results.csv"
    ResultsFile(path, ("config", "run"), settings_hash="aaa").append(
        [{"config": "x", "run": 0, "auroc": 0.8}]
    )
    assert ResultsFile(path, ("config", "run"), settings_hash="aaa").has(config="x", run=0)
    other = ResultsFile(path, ("config", "run"), settings_hash="bbb")
    assert not other.has(config="x", run=0) and other.frame().empty


def test_settings_hash_ignores_bookkeeping_but_not_the_recipe():
    from magphase.evaluation.classifier_train import settings_hash

    base = tiny_settings(30)
    assert settings_hash(base) == settings_hash(base.model_copy(update={"device": "cuda", "log_every": 1}))
    assert settings_hash(base) != settings_hash(base.model_copy(update={"lr": 1e-2}))
    assert settings_hash(base, 0.2) != settings_hash(base, 0.4)
