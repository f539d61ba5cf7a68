"""Config section `evaluation` (owned by the evaluation stage): paper Sec. 2.4.

Two classifier experiments share one network family (:class:`ClassifierConfig`, a ResNet with
squeeze-and-excitation) and one training recipe (class-balanced sampling, mixup, cosine learning rate,
EMA weights for evaluation):

- ``realfake`` (2.4.1, Table 4): real vs stage-1 synthetic LATENTS per sequence.
- ``downstream`` (2.4.2, Figs. 6-8): normal vs abnormal on decoded PATCHES, trained on real / real +
  synthetic compositions (substitution and additive experiments), tested on the real test split and
  the external test set.

The defaults are the paper's protocol (5 runs, 4 synthetic test sets, 10 % steps, w = 1 / w = 2) with
network sizes from ``preset``; a demo shrinks ``runs``, the fraction lists and ``train.steps``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from magphase.config.presets import PresetTable, Section
from magphase.config.training import TrainSettings
from magphase.conventions import SEQUENCES


class ClassifierConfig(Section):
    """Sizes of :class:`magphase.models.classifier.ResNetSEClassifier`."""

    widths: tuple[int, ...] = Field((16, 32, 64), description="channels of each residual stage")
    blocks: tuple[int, ...] = Field((1, 1, 1), description="residual blocks per stage")
    se_reduction: int = Field(8, ge=1, description="squeeze-excitation bottleneck = channels / this")
    stem_stride: int | None = Field(
        None,
        ge=1,
        description="stride of the first conv; None: max(1, input size // 48) (1 latents, 2 patches)",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the linear head")
    pooling: Literal["avg", "max", "avgmax"] = Field(
        "avg",
        description="global pooling before the head: avg (paper), max, or both concatenated (avgmax)",
    )
    canonical_phase: bool = Field(
        False,
        description="beyond the paper: rotate each complex item to global phase 0 before the network, "
        "so the classifier is invariant to the (diagnostically meaningless) absolute phase by construction",
    )

    @model_validator(mode="after")
    def _stages_match(self) -> ClassifierConfig:
        if not self.widths or len(self.widths) != len(self.blocks):
            raise ValueError(f"widths {self.widths} and blocks {self.blocks} need the same non-zero length")
        if min(self.widths) < 1 or min(self.blocks) < 1:
            raise ValueError("widths and blocks must be >= 1")
        return self


#: Classifier sizes of the evaluation presets. Parameter counts for 2-channel input:
_CLASSIFIER_SIZES: dict[str, dict[str, Any]] = {
    # 0.08 M parameters. Global max pooling and phase-canonical input: chosen by
    # benchmarks/classifier_recipe.py on a 320-volume reproduce-geometry set (docs/evaluation.md
    # "Classifier recipe"): max pooling val AUROC 0.590 vs 0.476 for the average (external 0.868 vs 0.710);
    # canonical phase on top (2026-12-07 set) train 0.681 vs 0.626, val 0.660 vs 0.588 at the same steps.
    "cpu-small": dict(
        widths=(16, 32, 64),
        blocks=(1, 1, 1),
        se_reduction=8,
        dropout=0.0,
        pooling="max",
        canonical_phase=True,
    ),
    # 11.3 M parameters: ResNet-18 widths and depths with SE (the paper names ResNet + SE, no sizes).
    "paper": dict(
        widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), se_reduction=16, dropout=0.1, pooling="avg"
    ),
}

#: The evaluation section's presets: each sets the classifier sizes.
EVALUATION_PRESETS = PresetTable(
    "evaluation", {name: {"classifier": sizes} for name, sizes in _CLASSIFIER_SIZES.items()}
)


class AugmentConfig(Section):
    """Patch augmentation (paper 2.4.2), identical for every training configuration.

    Per item: horizontal / vertical flip (each with p = 0.5), a rotation by k * 90 degrees with k uniform
    in {0, 1, 2, 3}, a zoom by a factor uniform in ``zoom`` with a centre crop back to the input size, and
    an intensity scaling by a factor uniform in ``intensity`` that multiplies real and imaginary channels
    alike (so the phase is unchanged), and optionally (``global_phase``) a random constant phase offset.
    """

    flips: bool = True
    rot90: bool = True
    zoom: tuple[float, float] = Field((1.0, 1.2), description="zoom factor range (>= 1: centre crop)")
    intensity: tuple[float, float] = Field((0.8, 1.2), description="intensity factor range (> 0)")
    global_phase: bool = Field(
        False,
        description="beyond the paper: multiply each complex patch by exp(i theta), theta uniform in "
        "[-pi, pi) (needs [real, imag] items; the absolute phase of an MRI image carries no diagnosis)",
    )

    @field_validator("zoom")
    @classmethod
    def _zoom_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 1.0 <= v[0] <= v[1]:
            raise ValueError(f"zoom must be (lo, hi) with 1 <= lo <= hi, got {v}")
        return v

    @field_validator("intensity")
    @classmethod
    def _intensity_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1]:
            raise ValueError(f"intensity must be (lo, hi) with 0 < lo <= hi, got {v}")
        return v


def _realfake_train() -> TrainSettings:
    return TrainSettings(
        steps=600,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.05,
        warmup_steps=30,
        ema_decay=0.99,
        checkpoint_every=200,
        log_every=25,
    )


def _downstream_train() -> TrainSettings:
    return TrainSettings(
        steps=800,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.05,
        warmup_steps=40,
        ema_decay=0.99,
        checkpoint_every=200,
        log_every=25,
    )


def _tenths(start: int, stop: int, step: int) -> tuple[float, ...]:
    return tuple(round(k / 10, 1) for k in range(start, stop, step))


def _check_fractions(v: tuple[float, ...], name: str, allow_zero: bool) -> tuple[float, ...]:
    lo = 0.0 if allow_zero else 1e-12
    bad = [f for f in v if not lo <= f <= 1.0]
    if bad:
        raise ValueError(f"{name}: fractions must lie in [{'0' if allow_zero else '>0'}, 1], got {bad}")
    if len(set(v)) != len(v):
        raise ValueError(f"{name}: repeated fractions in {v}")
    return tuple(sorted(v, reverse=True))


class RealFakeConfig(Section):
    """Real vs synthetic latent classification (paper 2.4.1, Table 4)."""

    train: TrainSettings = Field(default_factory=_realfake_train)
    runs: int = Field(5, ge=1, description="classifiers per sequence, each with its own seed")
    n_test_sets: int = Field(4, ge=1, description="independent synthetic test sets per sequence")
    guidance: float = Field(1.0, ge=0, description="w of the stage-1 samples (paper: 1)")
    sequences: tuple[str, ...] | None = Field(
        None, description="sequences to evaluate; None: every sequence of the real latent store"
    )
    real_latents: Literal["posterior", "mean"] | None = Field(
        None,
        description="real input: a draw z ~ N(mu, sigma^2) or mu; None: as the flow trained (flow.latents)",
    )
    augment: bool = Field(False, description="apply the patch augmentation to latents too")
    selection_runs: int = Field(
        1, ge=1, description="classifiers per sequence and candidate (checkpoint choice)"
    )

    @field_validator("train", mode="before")
    @classmethod
    def _train_defaults(cls, v: Any) -> Any:
        # A partial `train:` mapping in YAML overrides this section's defaults, not TrainSettings' own.
        return {**_realfake_train().model_dump(), **v} if isinstance(v, dict) else v

    @field_validator("sequences")
    @classmethod
    def _known(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            bad = [s for s in v if s not in SEQUENCES]
            if bad:
                raise ValueError(f"unknown sequence(s) {bad}; expected names from {SEQUENCES}")
        return v


class DownstreamConfig(Section):
    """Normal vs abnormal classification on decoded patches (paper 2.4.2, Figs. 6-8)."""

    train: TrainSettings = Field(default_factory=_downstream_train)
    runs: int = Field(5, ge=1, description="classifiers per configuration (seed = run index)")
    guidance: float = Field(2.0, ge=0, description="w of the stage-2 samples (paper: 2)")
    real_fractions: tuple[float, ...] = Field(
        _tenths(10, -1, -1), description="substitution: fractions of real training VOLUMES kept (1.0 .. 0.0)"
    )
    additive_fractions: tuple[float, ...] = Field(
        _tenths(1, 11, 1),
        description="additive: synthetic items added, as fractions of the real training size",
    )
    augment: bool = Field(True, description="patch augmentation (identical for every configuration)")
    magnitude_only: bool = Field(True, description="also train on magnitude only (beyond the paper)")
    magnitude_only_fractions: tuple[float, ...] = Field(
        (1.0, 0.0), description="substitution real fractions repeated with magnitude-only input"
    )
    external_top_fraction: float = Field(
        0.05,
        gt=0,
        le=1,
        description="external volume score = mean of this top fraction of patch probabilities",
    )
    selection_runs: int = Field(1, ge=1, description="classifiers per candidate (checkpoint choice)")
    bootstrap: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="volume-bootstrap replicates of every test / external AUROC interval (0: none)",
    )

    @field_validator("train", mode="before")
    @classmethod
    def _train_defaults(cls, v: Any) -> Any:
        return {**_downstream_train().model_dump(), **v} if isinstance(v, dict) else v

    @field_validator("real_fractions", "magnitude_only_fractions")
    @classmethod
    def _real(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return _check_fractions(v, "real fractions", allow_zero=True)

    @field_validator("additive_fractions")
    @classmethod
    def _additive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(sorted(_check_fractions(v, "additive_fractions", allow_zero=False)))


class LearningCurveConfig(Section):
    """The learnability check (``magphase evaluate learning-curve``): the real-only downstream classifier
    at growing shares of the real training VOLUMES, several seeds each, same recipe as ``downstream``."""

    fractions: tuple[float, ...] = Field(
        (1.0, 0.5, 0.25), description="shares of the real training volumes (must include 1.0)"
    )
    runs: int = Field(3, ge=1, description="classifiers (seeds) per share")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        v = _check_fractions(v, "learning_curve.fractions", allow_zero=False)
        if 1.0 not in v or len(v) < 2:
            raise ValueError(f"learning_curve.fractions needs 1.0 and at least one smaller share, got {v}")
        return v


class EvaluationConfig(Section):
    """Settings of the evaluation stage (classifier sizes, recipe, both experiments)."""

    PRESETS: ClassVar[PresetTable] = EVALUATION_PRESETS
    preset: Literal["cpu-small", "paper"] = Field("cpu-small", description="classifier size preset")
    classifier: ClassifierConfig = Field(
        default_factory=lambda: ClassifierConfig(**EVALUATION_PRESETS["cpu-small"]["classifier"]),
        description="classifier sizes (the preset's, key by key overridable)",
    )
    mixup_alpha: float = Field(0.2, ge=0, description="mixup lambda ~ Beta(alpha, alpha); 0 disables")
    balance_classes: bool = Field(True, description="class-balanced sampling (weights 1 / class count)")
    augment: AugmentConfig = AugmentConfig()
    eval_batch_size: int = Field(256, ge=1, description="items per forward pass when predicting")
    preload_max_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="hold an experiment's arrays in memory when they fit (else read lazily)",
    )
    keep_checkpoints: bool = Field(
        False,
        description="keep each classifier's checkpoint.pt after its results are written (EMA kept always)",
    )
    realfake: RealFakeConfig = RealFakeConfig()
    downstream: DownstreamConfig = DownstreamConfig()
    learning_curve: LearningCurveConfig = LearningCurveConfig()


__all__ = [
    "EVALUATION_PRESETS",
    "AugmentConfig",
    "ClassifierConfig",
    "DownstreamConfig",
    "EvaluationConfig",
    "LearningCurveConfig",
    "RealFakeConfig",
]
