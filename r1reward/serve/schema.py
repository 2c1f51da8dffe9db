"""The wire format of ``r1reward serve``: request models and OpenAI's error envelope.

Every text field is :data:`Text` (valid Unicode, no vision placeholder token), numbers are strict,
and an error is :class:`APIError`, answered as ``{"error": {"message", "type", "param", "code"}}``
(:func:`error_body`) so OpenAI clients show the message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

__all__ = [
    "RESERVED_TOKENS",
    "APIError",
    "ClientGone",
    "error_body",
    "Text",
    "TextPart",
    "ImagePart",
    "ChatMessage",
    "ChatRequest",
    "RewardRequest",
]

#: Tokens a client's text may not hold: the processor counts them against the images and videos
#: it was given, so one stray ``<|image_pad|>`` in a question failed the whole merged batch.
RESERVED_TOKENS: tuple[str, ...] = ("<|image_pad|>", "<|video_pad|>")


# --------------------------------------------------------------------------------------- errors
class APIError(Exception):
    """An error answered to the client as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class ClientGone(Exception):
    """The client disconnected before its answer was ready (its jobs were dropped)."""


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "timeout",
    413: "request_too_large",
    503: "server_busy",
    504: "timeout",
}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope for ``status`` (the type is named after the status)."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


# ------------------------------------------------------------------------------- request models
def _encodable(value: str) -> str:
    """Text the tokenizer can take: valid Unicode (no lone surrogate such as ``"\\ud800"``, which
    JSON can carry but UTF-8 cannot) and none of :data:`RESERVED_TOKENS`."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"not valid Unicode text: a lone surrogate {value[exc.start]!r} at character "
            f"{exc.start}"
        ) from None
    for token in RESERVED_TOKENS:
        if token in value:
            raise ValueError(f"holds the reserved token {token}, which only the server may place")
    return value


#: A request string that passed :func:`_encodable`; use it for every text field of an endpoint.
Text = Annotated[StrictStr, AfterValidator(_encodable)]


class _ImageURL(BaseModel):
    url: StrictStr
    detail: str | None = None


class TextPart(BaseModel):
    """A text part of a chat message's content list."""

    type: Literal["text"]
    text: Text


class ImagePart(BaseModel):
    """An image part: ``{"type": "image_url", "image_url": {"url": ...}}`` or the URL alone."""

    type: Literal["image_url"]
    image_url: _ImageURL | StrictStr


_Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    """One OpenAI chat message: a string, or a list of text and image parts."""

    role: Literal["system", "user", "assistant"]
    content: Text | list[_Part]


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat-completion request this server honours (others ignored).

    Numbers are strict: ``"0.5"`` is refused, not coerced; ``max_tokens: 0`` is refused, not
    replaced by the default."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: StrictFloat = Field(default=1.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    n: StrictInt = 1
    stream: StrictBool = False
    seed: StrictInt | None = None


class RewardRequest(BaseModel):
    """``POST /v1/reward``. Unknown fields are rejected (a typo should not pass silently).

    ``k`` judgments per order (``1 <= k <= --max-k``); ``both_orders`` also shows the pair swapped
    and maps those verdicts back; ``greedy`` defaults to ``k == 1`` (one greedy judgment per order;
    with ``greedy=true`` and ``k > 1`` still one per order); ``seed`` makes the sampled judgments
    reproducible (requests without one get a fresh seed per batch). ``images`` are ``data:`` URLs
    (or paths under ``--image-root`` when the server allows local images).

    The answer is :class:`r1reward.verdicts.PairScore`: ``score`` (P(``response_1`` better) from
    the verdict distribution, averaged over the judgments and orders; always a number),
    ``p_1_orders``, ``order_gap``, ``swap_disagreement``; the votes: ``preferred`` (1, 2, or
    null on a tie / nothing parseable), ``tie``, ``p_1`` (share of the parseable votes preferring
    ``response_1``; null when none parsed), ``votes`` (``{"1", "2", "unparseable"}``); and per
    judgment ``answers`` and ``p_first`` (in the caller's positions), ``orders``
    (``as-given``/``swapped``), ``analyses``, ``texts``; ``well_formed_rate``, ``verdict_mass``.
    """

    model_config = ConfigDict(extra="forbid")

    question: Text
    response_1: Text
    response_2: Text
    images: list[StrictStr] = Field(default_factory=list)
    k: StrictInt = 1
    both_orders: StrictBool = True
    greedy: StrictBool | None = None
    seed: StrictInt | None = None
