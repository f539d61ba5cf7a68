"""Shared fixtures: paths to the shared real annotations, seeded RNGs, small temp folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# One intra-op thread: the suite is many tiny ops where thread hand-offs cost more than they gain,
# and oversubscribed LAPACK/BLAS pools slow down badly on small shared machines.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FASTMRI_PLUS = SHARED / "data" / "fastmri_plus"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def fastmri_plus_dir() -> Path:
    if not (FASTMRI_PLUS / "brain.csv").exists():
        pytest.skip(f"real fastMRI+ annotations not found at {FASTMRI_PLUS}")
    return FASTMRI_PLUS
