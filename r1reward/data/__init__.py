"""Data for r1reward: the :class:`PreferencePair` record, readers/writers, held-out splits.

``from r1reward.data import PreferencePair, load, write_pairs, to_dataset``. Generated sources
such as the toy world (:mod:`r1reward.toy.world`, ``make_pairs``) are named in
:mod:`r1reward.data.sources`; nothing here imports them.
"""

from r1reward.data.io import FORMATS, PairList, detect_format, load, to_dataset, write_pairs
from r1reward.data.schema import DataError, PreferencePair, check_media, open_images

__all__ = [
    "FORMATS",
    "DataError",
    "PairList",
    "PreferencePair",
    "check_media",
    "detect_format",
    "load",
    "open_images",
    "to_dataset",
    "write_pairs",
]
