"""Shared test configuration.

The real benchmark metadata lives in ``shared/benchmarks`` beside the clone (``../shared``);
``$R1REWARD_SHARED`` overrides that location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    env = os.environ.get("R1REWARD_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    path = shared_dir() / "benchmarks"
    if not path.is_dir():
        pytest.skip(f"benchmark metadata not found at {path} (set R1REWARD_SHARED)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Two cores on CI: keep torch from oversubscribing them."""
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:  # pragma: no cover
        pass
    yield
