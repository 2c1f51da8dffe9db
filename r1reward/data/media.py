"""Image references as the published datasets store them, decided by decoding.

Benchmarks and training sets hand over their images in many shapes: a relative path, an absolute
path on the authors' cluster, raw bytes, base64 of a PNG / JPEG / WebP / GIF ..., a ``data:`` URL,
a Hugging Face ``Image`` struct (``{"bytes": ..., "path": ...}``) or an already decoded PIL image.
:func:`image_refs` turns any of these into what a :class:`~r1reward.data.PreferencePair` holds: a
path string, a ``data:image/<format>;base64,...`` URL, or a PIL image.

Bytes and strings are told apart by *decoding* them, never by their characters: a value is an
inline image when it decodes (raw, or strict base64) to bytes that Pillow recognises as an image;
a JPEG's base64 starts with ``/9j/``, so "contains a slash" says nothing. Anything else is a path.

Paths that do not exist where the file says (an absolute path on another machine) are remapped
under ``image_root`` by their tail: ``/cluster/data/RLAIF-V-image/x.jpg`` with
``image_root=/my/images`` becomes the first of ``/my/images/cluster/data/RLAIF-V-image/x.jpg``,
``/my/images/data/RLAIF-V-image/x.jpg``, ``/my/images/RLAIF-V-image/x.jpg``, ``/my/images/x.jpg``
that exists (longest tail first, so the most specific match wins).

Videos are a file (decoded with PyAV, ``av``, when it is installed) or a folder of frame images;
:func:`read_video_frames` and :func:`read_frame_folder` sample frames uniformly from either.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = [
    "image_refs",
    "sniff_image",
    "remap_by_tail",
    "to_data_url",
    "read_frame_folder",
    "read_video_frames",
    "video_reader",
]


class MediaError(ValueError):
    """A media value that is neither an image nor a path; the readers add file, row and id."""


def sniff_image(raw: bytes) -> str | None:
    """The image format Pillow finds in ``raw`` (``"png"``, ``"jpeg"``, ...), or None.

    Only the header is read (``Image.open`` is lazy), so this is cheap even for large images.
    """
    if not raw:
        return None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            return (im.format or "").lower() or None
    except Exception:  # noqa: BLE001 - "not an image" is the answer, whatever Pillow raised
        return None


def to_data_url(raw: bytes, fmt: str) -> str:
    """``data:image/<fmt>;base64,<raw>``."""
    return f"data:image/{fmt};base64," + base64.b64encode(raw).decode("ascii")


def _b64_image(text: str) -> tuple[bytes, str] | None:
    """(bytes, format) when ``text`` is strict base64 of an image, else None."""
    s = "".join(text.split())  # base64 may be wrapped at 76 columns
    if len(s) < 16 or len(s) % 4:
        return None
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None
    fmt = sniff_image(raw)
    return (raw, fmt) if fmt else None


def remap_by_tail(path: str, image_root: Path) -> str | None:
    """The first existing ``image_root / tail`` over the tails of ``path``, longest first."""
    parts = [p for p in Path(path).parts if p not in ("/", "\\") and not p.endswith(":\\")]
    for i in range(len(parts)):
        candidate = image_root.joinpath(*parts[i:])
        if candidate.is_file() or candidate.is_dir():
            return str(candidate)
    return None


def _path_ref(value: str, base: Path | None, image_root: Path | None) -> str:
    p = Path(value)
    if not p.is_absolute() and base is not None:
        p = base / p
    if image_root is not None and not p.exists():
        remapped = remap_by_tail(value, image_root)
        if remapped is not None:
            return remapped
    return str(p)


def _one(value: Any, base: Path | None, image_root: Path | None) -> Any:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):  # datasets Image struct {"bytes", "path"}, or {"url"}/{"image"}
        raw = value.get("bytes")
        if raw:
            return _one(bytes(raw), base, image_root)
        for key in ("path", "url", "image", "image_url"):
            if value.get(key):
                return _one(value[key], base, image_root)
        raise MediaError(f"image struct without bytes or path (keys {sorted(value)})")
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        fmt = sniff_image(raw)
        if fmt:
            return to_data_url(raw, fmt)
        try:  # base64 text stored as bytes
            decoded = _b64_image(raw.decode("ascii"))
        except UnicodeDecodeError:
            decoded = None
        if decoded:
            return to_data_url(*decoded)
        raise MediaError(f"{len(raw)} bytes that no image decoder recognises")
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise MediaError(
            f"an image must be a path, bytes, base64 or a struct, got {type(value).__name__}"
        )
    if value.startswith("data:"):
        return value
    if value.startswith("file://"):
        value = value[len("file://") :]
    decoded = _b64_image(value)
    if decoded:
        return to_data_url(*decoded)
    return _path_ref(value, base, image_root)


def image_refs(
    value: Any, *, base: str | Path | None = None, image_root: str | Path | None = None
) -> list[Any]:
    """Every image in ``value`` (one item or a list) as a path, ``data:`` URL or PIL image.

    Args:
        value: a path, bytes, base64 text, ``data:`` URL, Hub struct, PIL image, or a list of them;
            ``None`` and ``""`` are no image.
        base: folder that relative paths are joined to (the data file's folder, or image_root).
        image_root: where missing paths are looked for by their tail (see the module docstring).

    Raises:
        MediaError: a value that is not an image of any supported kind (bytes no decoder knows,
            a struct without bytes or path, a number ...).
    """
    items = value if isinstance(value, list | tuple) else [value]
    base_p = None if base is None else Path(base)
    root_p = None if image_root is None else Path(image_root)
    return [_one(v, base_p, root_p) for v in items if v is not None and v != ""]


#: The image files a folder of video frames may hold.
FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def video_reader() -> Callable[[str | Path, int], list[Any]] | None:
    """:func:`read_video_frames` when PyAV is importable, else ``None`` (video files are skipped)."""
    try:
        import av  # noqa: F401 - optional: only video files need it
    except ImportError:
        return None
    return read_video_frames


def _uniform(total: int, n: int) -> list[int]:
    """``min(n, total)`` indices spread uniformly over ``range(total)`` (segment midpoints)."""
    n = min(n, total)
    return sorted({int((i + 0.5) * total / n) for i in range(n)})


def read_video_frames(path: str | Path, n_frames: int = 8) -> list[Any]:
    """``n_frames`` RGB PIL frames sampled uniformly over a video file (needs PyAV, ``av``)."""
    import av  # optional dependency: imported only when a video file is decoded

    with av.open(str(path)) as container:
        total = int(container.streams.video[0].frames or 0)
        if total <= 0:  # the container does not say: count in a first pass
            total = sum(1 for _ in container.decode(video=0))
            container.seek(0)
        if total <= 0:
            raise ValueError(f"{path}: no video frames")
        wanted = set(_uniform(total, n_frames))
        frames = []
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames.append(frame.to_image().convert("RGB"))
            if len(frames) == len(wanted):
                break
    return frames


def read_frame_folder(path: Path, n_frames: int) -> list[Any]:
    """Frames sampled uniformly from a folder of image files (sorted by name); no PyAV needed."""
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: a video folder without image frames ({sorted(FRAME_SUFFIXES)})")
    frames = []
    for i in _uniform(len(files), n_frames):
        with Image.open(files[i]) as img:
            frames.append(img.convert("RGB"))
    return frames
