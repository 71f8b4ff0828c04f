"""Shared pytest fixtures.

Real data is read from ``../shared/data`` (beside the repository); tests that need it skip
with a reason when it is absent (a user's fresh clone has no ``../shared``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FUSE4SEG_SHARED", REPO_ROOT.parent / "shared"))
BRATS_DIR = SHARED / "data" / "brats"
HARVARD_DIR = SHARED / "data" / "harvard"
REFERENCE_DIR = SHARED / "reference"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path


@pytest.fixture(scope="session")
def brats_dir() -> Path:
    """The 14 real BraTS cases (skips when ../shared/data/brats is absent)."""
    return _require(BRATS_DIR)


@pytest.fixture(scope="session")
def harvard_dir() -> Path:
    """The Harvard fusion pairs (skips when ../shared/data/harvard is absent)."""
    return _require(HARVARD_DIR)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Golden values from reference implementations (skips when absent)."""
    return _require(REFERENCE_DIR)


@pytest.fixture(autouse=True, scope="session")
def _limit_threads():
    """Tests run two workers on two cores: one intra-op thread each."""
    import torch

    torch.set_num_threads(1)
    yield
