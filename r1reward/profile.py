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
