"""Run profiles: ``ci`` (seconds on 2 CPU cores), ``cpu`` (the full toy run of the book), ``gpu``.

Notebooks read the profile once, in their first cell, with :func:`get_profile`; library code takes
explicit arguments and never branches on it.
"""

from __future__ import annotations

import os

PROFILES = ("ci", "cpu", "gpu")
ENV_VAR = "R1REWARD_PROFILE"
DEFAULT = "cpu"


def get_profile(default: str = DEFAULT) -> str:
    """Return the active profile from ``$R1REWARD_PROFILE`` (default ``cpu``); reject unknown names."""
    name = os.environ.get(ENV_VAR, default).strip().lower() or default
    if name not in PROFILES:
        raise ValueError(f"{ENV_VAR}={name!r} is not a profile; expected one of {', '.join(PROFILES)}")
    return name


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
        warnings.filterwarnings("ignore", category=category,
                                module=r"(transformers|trl|accelerate|peft|torch)(\.|$)")
