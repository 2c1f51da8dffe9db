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
def _one_thread():
    """One torch thread for the whole session.

    The tests run the ~1M-parameter toy model: its matrices are too small for a second thread to
    pay for its synchronisation, and on a 2-core CI machine (or one shared with other jobs) two
    contending threads made single tests several times slower (measured: an RL-step test 41 s
    with two threads against 3 s with one).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
