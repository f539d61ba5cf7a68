"""The paper's published numbers (Tables 3 and 4, Sec. 3.3): the one place they are written.

Evaluation tables put them in ``paper_*`` columns beside this run's values, and the report prints them
beside each table. Values are (mean, std) as published.
"""

from __future__ import annotations

#: Paper Table 3 (mean, std) per sequence: phase coherence, magnitude SSIM, magnitude PSNR (dB).
PAPER_TABLE3: dict[str, dict[str, tuple[float, float]]] = {
    "AXFLAIR": {"phase_coherence": (0.9984, 0.0013), "ssim": (0.955, 0.018), "psnr": (35.8, 2.3)},
    "AXT1": {"phase_coherence": (0.9983, 0.0008), "ssim": (0.944, 0.029), "psnr": (36.5, 3.3)},
    "AXT1POST": {"phase_coherence": (0.9977, 0.0017), "ssim": (0.932, 0.031), "psnr": (35.0, 2.7)},
    "AXT1PRE": {"phase_coherence": (0.9986, 0.0009), "ssim": (0.930, 0.035), "psnr": (35.0, 2.9)},
    "AXT2": {"phase_coherence": (0.9979, 0.0009), "ssim": (0.951, 0.019), "psnr": (35.4, 1.5)},
}


#: Paper Table 4: AUROC mean, std per sequence (5 classifiers x 4 synthetic test sets).
PAPER_TABLE4: dict[str, tuple[float, float]] = {
    "AXFLAIR": (0.635, 0.030),
    "AXT1": (0.640, 0.026),
    "AXT1POST": (0.555, 0.049),
    "AXT1PRE": (0.502, 0.014),
    "AXT2": (0.653, 0.014),
}


#: The paper's published downstream AUROCs (mean, std) named in its text (Sec. 3.3), by configuration.
PAPER_DOWNSTREAM: dict[str, dict[str, tuple[float, float]]] = {
    "real100": {"test": (0.842, 0.006), "external": (0.815, 0.008)},
    "subst000": {"test": (0.880, 0.006), "external": (0.843, 0.019)},
    "add080": {"test": (0.894, 0.003)},
    "add090": {"external": (0.840, 0.004)},
}


#: The downstream points the paper's text quotes: (quantity, published (mean, std), this run's
#: configuration: a name, or the added synthetic fraction, summary metric).
PAPER_KEY_NUMBERS: list[tuple[str, tuple[float, float], str | float, str]] = [
    ("100 % real (baseline), fastMRI test", PAPER_DOWNSTREAM["real100"]["test"], "real100", "auroc_test"),
    (
        "0 % real (fully synthetic), fastMRI test",
        PAPER_DOWNSTREAM["subst000"]["test"],
        "subst000",
        "auroc_test",
    ),
    (
        "100 % real + 80 % synthetic added, fastMRI test",
        PAPER_DOWNSTREAM["add080"]["test"],
        0.8,
        "auroc_test",
    ),
    (
        "100 % real (baseline), external test",
        PAPER_DOWNSTREAM["real100"]["external"],
        "real100",
        "auroc_external",
    ),
    (
        "0 % real (fully synthetic), external test",
        PAPER_DOWNSTREAM["subst000"]["external"],
        "subst000",
        "auroc_external",
    ),
    (
        "100 % real + 90 % synthetic added, external test",
        PAPER_DOWNSTREAM["add090"]["external"],
        0.9,
        "auroc_external",
    ),
]


def fmt_mean_std(value: tuple[float, float], decimals: int = 3) -> str:
    """``"0.842 ± 0.006"``: a published (mean, std) as the paper prints it."""
    return f"{value[0]:.{decimals}f} ± {value[1]:.{decimals}f}"


__all__ = ["PAPER_DOWNSTREAM", "PAPER_KEY_NUMBERS", "PAPER_TABLE3", "PAPER_TABLE4", "fmt_mean_std"]
