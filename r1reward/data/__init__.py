"""Data for r1reward: the :class:`PreferencePair` record, readers/writers, and the toy world.

``from r1reward.data import PreferencePair, load, write_pairs, to_dataset``; the toy world is
``r1reward.data.toy`` (``make_pairs``).
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
