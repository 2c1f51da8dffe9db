"""What a pair shows the judge: its images and video frames, loaded from where the data says.

Relative paths are joined to ``image_root``; decoding is :mod:`r1reward.data.media`'s (a video
file through PyAV, a folder of frames without it) and opening images is
:func:`r1reward.data.schema.open_images`, so a missing file names the data line and the pair id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from r1reward.data.media import read_frame_folder
from r1reward.data.schema import DataError, open_images, resolve_path

__all__ = ["load_images", "load_videos", "needs_video_reader"]


def _rooted(item: Any, root: Path | None) -> Any:
    """A relative path joined to ``root``; anything else (PIL image, data URI) unchanged."""
    return resolve_path(str(item), root) if isinstance(item, (str, Path)) else item


def needs_video_reader(pair: Any, root: Path | None) -> bool:
    """True when a video of ``pair`` is a file (not a frame folder): decoding it needs PyAV.

    A video that is not there at all is not a reason to skip the pair: loading it raises the
    one-line "video not found" error naming the data file, line and id."""
    for item in pair.videos or ():
        if isinstance(item, (str, Path)) and Path(_rooted(item, root)).is_file():
            return True
    return False


def load_images(pair: Any, root: Path | None) -> list[Any]:
    """The pair's images as RGB PIL images; a missing file raises naming the data line and id."""
    if not pair.images:
        return []
    return open_images(replace(pair, images=[_rooted(im, root) for im in pair.images]))


def load_videos(pair: Any, root: Path | None, reader: Callable | None, n_frames: int) -> list[Any]:
    """Each video as a list of ``n_frames`` PIL frames (a frame folder, or a file via ``reader``,
    :func:`r1reward.data.media.video_reader`'s answer)."""
    videos = []
    for item in pair.videos or ():
        if not isinstance(item, (str, Path)):  # already a list of frames
            videos.append(item)
            continue
        path = Path(_rooted(item, root))
        if path.is_dir():
            videos.append(read_frame_folder(path, n_frames))
        elif not path.exists():
            meta = pair.meta or {}
            raise DataError(
                f"video not found: {path} (expected a file or a folder of frames; benchmark media"
                " ship separately: pass --image-root DIR)",
                path=meta.get("source_file"),
                line=meta.get("source_line"),
                record_id=pair.id,
                where=meta.get("source_where", "line"),
            )
        elif reader is None:
            raise RuntimeError(f"pair {pair.id!r}: decoding {path} needs PyAV (pip install av)")
        else:
            videos.append(reader(path, n_frames))
    return videos
