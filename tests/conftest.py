"""Shared fixtures: paths to the shared real annotations, seeded RNGs, one torch thread per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from flow_fixtures import latent_store, make_unet  # noqa: F401  (fixtures for every test folder)

os.environ.setdefault("MPLBACKEND", "Agg")
# One intra-op thread: the suite is many tiny ops where thread hand-offs cost more than they gain,
# and oversubscribed LAPACK/BLAS pools slow down badly on small shared machines.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FASTMRI_PLUS = SHARED / "data" / "fastmri_plus"


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Every test starts on one intra-op thread, whatever the test before it set."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def fastmri_plus_dir() -> Path:
    if not (FASTMRI_PLUS / "brain.csv").exists():
        pytest.skip(f"real fastMRI+ annotations not found at {FASTMRI_PLUS}")
    return FASTMRI_PLUS
