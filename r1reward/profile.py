"""Run profiles: ``ci`` (seconds on 2 CPU cores), ``cpu`` (the full toy run of the book), ``gpu``.

Notebooks read the profile once, in their first cell, with :func:`get_profile`; library code takes
explicit arguments and never branches on it.

``R1REWARD_GPU_STANDIN=tiny`` makes the ``gpu`` profile take the tiny model at the ``ci`` sizes
(:func:`gpu_standin`, read by :mod:`r1reward.chapters.artifacts`), so CI executes every chapter's ``gpu``
branch on a CPU (``make test-notebooks-gpu``) and a workstation user never meets a branch that
never ran.
"""

from __future__ import annotations

import os

PROFILES = ("ci", "cpu", "gpu")
ENV_VAR = "R1REWARD_PROFILE"
DEFAULT = "cpu"
STANDIN_VAR = "R1REWARD_GPU_STANDIN"
#: What ``$R1REWARD_GPU_STANDIN`` may name: the model the ``gpu`` profile takes instead of a 7B.
STANDINS = ("tiny",)


def get_profile(default: str = DEFAULT) -> str:
    """Return the active profile from ``$R1REWARD_PROFILE`` (default ``cpu``); reject unknown names."""
    name = os.environ.get(ENV_VAR, default).strip().lower() or default
    if name not in PROFILES:
        raise ValueError(
            f"{ENV_VAR}={name!r} is not a profile; expected one of {', '.join(PROFILES)}"
        )
    return name


def gpu_standin() -> str | None:
    """The stand-in the ``gpu`` profile takes from ``$R1REWARD_GPU_STANDIN`` (``tiny``: the tiny
    model with the ``ci`` profile's recipe and artifacts), or ``None`` when unset (a real GPU run).
    """
    name = os.environ.get(STANDIN_VAR, "").strip().lower()
    if not name:
        return None
    if name not in STANDINS:
        raise ValueError(
            f"{STANDIN_VAR}={name!r} is not a stand-in; expected one of "
            f"{', '.join(STANDINS)} (or unset for a real GPU run)"
        )
    return name


def toy_profile(profile: str) -> str:
    """The profile whose toy run a toy-only study uses (the collapse lab, the results table, the
    judge-use chapter): ``ci`` and ``cpu`` their own, ``gpu`` the full toy run ``cpu`` (its
    experiments are toy experiments at any scale), or ``ci`` under :func:`gpu_standin`."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: expected one of {', '.join(PROFILES)}")
    if profile != "gpu":
        return profile
    return "ci" if gpu_standin() else "cpu"


def quiet_libraries() -> None:
    """Keep library chatter out of a chapter's page: transformers' per-load "Loading weights" and
    "Writing model shards" bars and its warnings (e.g. "Removed shared tensor ... while saving"),
    accelerate's logs and Hub download bars. Called by ``plots.setup()`` in the notebook and by
    the worker processes that run the chapters' trainings; the package's own progress bars stay."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*shared tensor.*")
    # deprecation notices about the libraries' own arguments (e.g. transformers'
    # `gradient_checkpointing` -> `activation_checkpointing`) say nothing to a reader
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings(
            "ignore", category=category, module=r"(transformers|trl|accelerate|peft|torch)(\.|$)"
        )
