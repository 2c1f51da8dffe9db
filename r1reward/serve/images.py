"""Images from requests: ``data:`` URLs (or paths under ``--image-root``) -> checked RGB images.

:func:`open_image` reads the header and checks bytes, pixels and aspect ratio before anything is
decoded; :func:`decode_image` decodes at most the model's own pixel limit. Every refusal is an
:class:`~r1reward.serve.schema.APIError` naming the request field; a local file that cannot be used
gets one message whatever the reason (no existence or size oracle).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from pathlib import Path
from typing import Any

from r1reward.serve.limits import Limits
from r1reward.serve.schema import APIError

__all__ = ["open_image", "decode_image", "load_image"]


def _local_image_error(param: str) -> APIError:
    # one answer for a path outside the root, a missing, unreadable, oversized or non-image file:
    # the client learns nothing about the server's disk beyond "not usable here"
    return APIError(
        400, f"{param}: no usable image at that path under the server's --image-root", param
    )


def _read_local(ref: str, limits: Limits, param: str) -> bytes:
    if not limits.allow_local_images:
        raise APIError(
            400,
            f"{param}: local image paths are disabled on this server (send a data:image/...;"
            "base64 URL, or start it with --allow-local-images --image-root DIR)",
            param,
        )
    if not limits.image_root:
        raise APIError(400, f"{param}: local image paths need the server's --image-root", param)
    root = Path(limits.image_root).resolve()
    try:
        path = (root / Path(ref).expanduser()).resolve()
        if not path.is_relative_to(root):
            raise _local_image_error(param)
        with path.open("rb") as handle:
            raw = handle.read(limits.max_image_bytes + 1)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _local_image_error(param) from exc
    if len(raw) > limits.max_image_bytes:
        raise _local_image_error(param)
    return raw


def _image_bytes(ref: str, limits: Limits, param: str) -> bytes:
    if ref.startswith("data:"):
        header, sep, payload = ref.partition(",")
        if not sep or ";base64" not in header:
            raise APIError(
                400, f"{param}: a data URL must look like data:image/png;base64,...", param
            )
        if len(payload) * 3 // 4 > limits.max_image_bytes + 3:
            raise APIError(
                413,
                f"{param}: image is about {len(payload) * 3 // 4} bytes; the limit is "
                f"{limits.max_image_bytes} bytes (--max-image-bytes)",
                param,
            )
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise APIError(
                400, f"{param}: the data URL is not valid base64 ({exc})", param
            ) from exc
        if len(raw) > limits.max_image_bytes:
            raise APIError(
                413,
                f"{param}: image is {len(raw)} bytes; the limit is {limits.max_image_bytes} "
                "bytes (--max-image-bytes)",
                param,
            )
        return raw
    if ref.startswith(("http://", "https://")):
        raise APIError(
            400,
            f"{param}: remote image URLs are not fetched by this server; send a data URL "
            "(data:image/png;base64,...)",
            param,
        )
    return _read_local(ref, limits, param)


def open_image(ref: str, limits: Limits, param: str) -> Any:
    """A ``data:image/...;base64,`` URL (or an allowed local path) -> a PIL image whose header
    was read and checked, its pixels not yet decoded.

    Raises :class:`APIError` 400 (undecodable, remote URL, local paths off, aspect ratio over
    ``max_aspect_ratio``) or 413 (bytes or pixels over the limits). A local file that cannot be
    used gets one message whatever the reason.
    """
    from PIL import Image, UnidentifiedImageError

    local = not ref.startswith(("data:", "http://", "https://"))
    raw = _image_bytes(ref, limits, param)
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        if local:
            raise _local_image_error(param) from exc
        detail = str(exc)
        if "cannot identify image file" in detail:
            detail = "not PNG, JPEG, WebP, GIF or another format Pillow reads"
        raise APIError(400, f"{param}: not a decodable image ({detail})", param) from exc
    if width * height > limits.max_image_pixels:
        raise APIError(
            413,
            f"{param}: image is {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_image_pixels} (--max-image-pixels)",
            param,
        )
    if min(width, height) < 1 or max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise APIError(
            400,
            f"{param}: image is {width}x{height}; the model takes aspect ratios up to "
            f"{limits.max_aspect_ratio:g}:1",
            param,
        )
    image.r1_local = local  # decode_image's errors say as little about a local file
    return image


def decode_image(image: Any, param: str, max_pixels: int | None = None) -> Any:
    """Decode an :func:`open_image` result to RGB, at most ``max_pixels`` (the model's own
    limit: the processor would shrink it to that anyway, so the full-size copy is dropped at
    once; JPEGs are decoded at a reduced scale when they can be)."""
    from PIL import Image

    width, height = image.size
    local = getattr(image, "r1_local", False)
    try:
        if max_pixels and width * height > max_pixels:
            scale = math.sqrt(max_pixels / (width * height))
            target = (max(1, int(width * scale)), max(1, int(height * scale)))
            image.draft("RGB", target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale; others: no-op
            image.load()
            image = image.convert("RGB").resize(target, Image.Resampling.BICUBIC)
        else:
            image.load()
            image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if local:
            raise _local_image_error(param) from exc
        raise APIError(400, f"{param}: not a decodable image ({exc})", param) from exc
    return image


def load_image(ref: str, limits: Limits, param: str, max_pixels: int | None = None) -> Any:
    """:func:`open_image` then :func:`decode_image`: a checked RGB PIL image."""
    return decode_image(open_image(ref, limits, param), param, max_pixels)
