"""What ``r1reward serve`` accepts and who may call it: :class:`Limits` and :class:`Access`.

Each bound is declared once, as a :class:`Limits` field with its default and its help; the CLI
flags are made from those fields (:func:`add_limit_arguments`) and read back into them
(:func:`limits_from_args`), so a new bound needs its field and nothing else.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "API_KEY_ENV",
    "LOOPBACK_NAMES",
    "Limits",
    "Access",
    "is_loopback",
    "flag_name",
    "add_limit_arguments",
    "limits_from_args",
]

#: Environment variable read for the API key when ``--api-key`` is not given.
API_KEY_ENV = "R1REWARD_API_KEY"

#: Host names accepted in the ``Host`` header while the server is bound to loopback.
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


def _bound(default: Any, text: str, section: str = "limits") -> Any:
    """A :class:`Limits` field: its default, the help of its flag, and the ``--help`` section
    (``limits`` or ``access``) that lists the flag."""
    return field(default=default, metadata={"help": text, "section": section})


@dataclass(frozen=True)
class Limits:
    """What the service accepts and how long it waits. Every field has a CLI flag of the same
    name (:func:`flag_name`: ``max_prompt_tokens`` -> ``--max-prompt-tokens``; seconds end in
    ``_s``, which the flag drops), whose help is the field's ``metadata["help"]``."""

    max_body_bytes: int = _bound(32 * 2**20, "bytes of a request body; beyond: 413")
    max_image_bytes: int = _bound(8 * 2**20, "bytes of one image; beyond: 413")
    max_image_pixels: int = _bound(4096 * 4096, "pixels per image, read from its header")
    max_request_pixels: int = _bound(2 * 4096 * 4096, "pixels of all images of a request")
    max_inflight_pixels: int = _bound(
        8 * 4096 * 4096, "pixels of all images of the requests in flight; beyond it 503"
    )
    max_aspect_ratio: float = _bound(
        200.0, "longest side over shortest, per image (Qwen2-VL refuses anything longer)"
    )
    max_images: int = _bound(16, "images per request")
    max_k: int = _bound(32, "largest k (judgments per order) a reward request may ask")
    max_n: int = _bound(16, "largest n (choices) a chat request may ask")
    max_tokens: int = _bound(2048, "largest max_tokens a chat request may ask")
    max_prompt_tokens: int = _bound(16384, "prompt tokens after the chat template, images included")
    allow_local_images: bool = _bound(
        False,
        "accept image paths on the server, inside --image-root only (default: data URLs only)",
        "access",
    )
    image_root: str | None = _bound(None, "folder local image paths must be in", "access")
    max_queue: int = _bound(
        1024, "requests in flight (decoding, queued or generating) before answering 503"
    )
    request_timeout_s: float = _bound(
        600.0, "seconds per request, from admission to answer, before 504; its jobs are dropped"
    )
    stuck_after_s: float = _bound(
        900.0, 'seconds one batch may run before /health answers 503 "stuck"'
    )
    body_timeout_s: float = _bound(30.0, "seconds without a part of a started body before 408")


@dataclass(frozen=True)
class Access:
    """Who may call the service.

    Attributes:
        api_key: when set, every route but ``GET /health`` needs ``Authorization: Bearer KEY``.
        docs: serve ``/docs`` and ``/openapi.json`` (off: they describe the service to anyone).
        allowed_hosts: accepted ``Host`` header names (any loopback IP literal is accepted too);
            ``None`` accepts any. The default suits a server bound to loopback: a web page on
            another origin that rebinds its DNS name to 127.0.0.1 is refused.
    """

    api_key: str | None = None
    docs: bool = False
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES


def is_loopback(name: str) -> bool:
    """Whether a host name (no port, no brackets) is this machine only: ``localhost`` or a
    loopback IP literal (any ``127.x``, ``::1``)."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _dest(name: str) -> str:
    return name.removesuffix("_s")


def flag_name(name: str) -> str:
    """The CLI flag of a :class:`Limits` field: ``request_timeout_s`` -> ``--request-timeout``."""
    return "--" + _dest(name).replace("_", "-")


def add_limit_arguments(group: Any, section: str = "limits") -> None:
    """Add to ``group`` (an ``argparse`` parser or argument group) the flag of every
    :class:`Limits` field of ``section``: type and default from the field (a ``False`` bool is
    a switch, a ``None`` default takes a string), help from its metadata, with the default."""
    for f in fields(Limits):
        if f.metadata["section"] != section:
            continue
        default, text = f.default, f.metadata["help"]
        flag, dest = flag_name(f.name), _dest(f.name)
        if isinstance(default, bool):
            if default:
                raise TypeError(f"Limits.{f.name}: a switch must default to False ({flag} sets it)")
            group.add_argument(flag, dest=dest, action="store_true", help=text)
            continue
        if default is not None:
            text += (
                f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
            )
        kind = str if default is None else type(default)
        group.add_argument(flag, dest=dest, type=kind, default=default, help=text)


def limits_from_args(args: argparse.Namespace) -> Limits:
    """:class:`Limits` from the arguments :func:`add_limit_arguments` made: each field read from
    the flag of its name (``max_prompt_tokens`` <- ``--max-prompt-tokens``)."""
    return Limits(**{f.name: getattr(args, _dest(f.name)) for f in fields(Limits)})
