"""Evaluation of a generative reward model (the module moved whole to :mod:`r1reward.evaluate.run`)."""

from r1reward.evaluate.run import *  # noqa: F403
from r1reward.evaluate.run import (  # noqa: F401
    ALWAYS_ONE,
    GREEDY,
    RESULTS_FILE,
    SettingsMismatch,
    _displayed,
    _load_pairs,
    _video_reader,
    build_parser,
)
from r1reward.evaluate.run import __all__  # noqa: F401
