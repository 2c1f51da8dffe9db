"""The reward endpoints of ``r1reward serve`` beyond ``/v1/reward``: requests, bounds, answers.

``r1reward.serve`` registers the routes and runs these handlers on its request threads with a
scorer whose calls share the service's batches (:class:`r1reward.verdicts.BatchedVerdicts`);
the scoring itself is :mod:`r1reward.verdicts`.

``POST /v1/reward/reference`` (:class:`ReferenceRequest`)
    ``{question, responses: [...], reference, images, k, both_orders, greedy, seed}`` ->
    ``{scores: [P(response_i better than reference)], results: [pair details]}``.
``POST /v1/reward/group`` (:class:`GroupRequest`)
    ``{question, responses: [G], images, k, greedy, seed}`` -> Bradley-Terry ``scores``,
    ``win_rates``, ``ranking``, the order-averaged ``p_matrix``, ``gap_matrix``,
    ``swap_disagreements`` and ``judgments`` = ``G (G - 1)`` (times ``k`` when sampling).
``POST /get_reward`` (:class:`GetRewardRequest`)
    OpenRLHF's remote reward protocol (:mod:`r1reward.integrations.openrlhf`): ``{query,
    prompts, labels}`` -> ``{rewards, scores, extra_logs: {order_gap, swap_disagreement}}``,
    each response judged against its label (the reference answer).

Bounds: ``k`` within the server's ``--max-k`` (checked by the caller); at most
:data:`MAX_GROUP` candidates in a group and :data:`MAX_ROWS` rows in a list; at most
:data:`MAX_JUDGMENTS` judgments per request. A violation is a :class:`RequestError` (HTTP 400)
that names the field and row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from r1reward.verdicts import (
    VerdictScorer,
    group_cost,
    rank_group,
    score_pairs,
    score_reference,
)

__all__ = [
    "MAX_GROUP",
    "MAX_ROWS",
    "MAX_JUDGMENTS",
    "RequestError",
    "ReferenceRequest",
    "GroupRequest",
    "GetRewardRequest",
    "reference_reward",
    "group_reward",
    "get_reward",
    "split_query",
]

#: Largest group for /v1/reward/group: 16 candidates are 240 judgments (greedy).
MAX_GROUP = 16
#: Longest ``responses`` / ``query`` list per request.
MAX_ROWS = 256
#: Judgments (generations) one request may ask for.
MAX_JUDGMENTS = 1024


class RequestError(ValueError):
    """A request that validates as JSON but cannot be served; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ReferenceRequest(BaseModel):
    """``POST /v1/reward/reference``: each response against one reference answer."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr
    responses: list[StrictStr] = Field(min_length=1)
    reference: StrictStr
    images: list[StrictStr] = Field(default_factory=list)
    k: StrictInt = 1
    both_orders: StrictBool = True
    greedy: StrictBool | None = None
    seed: StrictInt | None = None


class GroupRequest(BaseModel):
    """``POST /v1/reward/group``: rank the G responses of one prompt."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr
    responses: list[StrictStr] = Field(min_length=1)
    images: list[StrictStr] = Field(default_factory=list)
    k: StrictInt = 1
    greedy: StrictBool | None = None
    seed: StrictInt | None = None


class GetRewardRequest(BaseModel):
    """``POST /get_reward``, as OpenRLHF's remote reward client posts it.

    ``query``, ``prompts`` and ``labels`` are OpenRLHF's; unknown fields are ignored (the client
    may send more in future releases). ``images`` (one list of ``data:`` URLs or server paths per
    row) and ``k`` are r1reward extensions that OpenRLHF does not send.
    """

    model_config = ConfigDict(extra="ignore")

    query: list[StrictStr] = Field(min_length=1)
    prompts: list[StrictStr | None] | None = None
    labels: list[Any] | None = None
    images: list[list[StrictStr]] | None = None
    k: StrictInt = 1
    both_orders: StrictBool = True


def _use_greedy(k: int, greedy: bool | None) -> bool:
    return (k == 1) if greedy is None else bool(greedy)


def _check_judgments(n: int, param: str) -> None:
    if n > MAX_JUDGMENTS:
        raise RequestError(
            f"this request needs {n} judgments; at most {MAX_JUDGMENTS} per request (lower k or "
            f"send fewer {param})",
            param,
        )


def _check_rows(n: int, param: str) -> None:
    if n > MAX_ROWS:
        raise RequestError(f"{param} has {n} rows; at most {MAX_ROWS} per request", param)


def reference_reward(
    scorer: VerdictScorer, request: ReferenceRequest, images: Sequence[Any]
) -> dict[str, Any]:
    """Answer of ``/v1/reward/reference``: ``scores[i]`` = P(``responses[i]`` > reference)."""
    n = len(request.responses)
    _check_rows(n, "responses")
    per = (2 if request.both_orders else 1) * (
        1 if _use_greedy(request.k, request.greedy) else request.k
    )
    _check_judgments(n * per, "responses")
    results = score_reference(
        scorer,
        request.question,
        request.responses,
        request.reference,
        images=images,
        k=request.k,
        both_orders=request.both_orders,
        greedy=request.greedy,
        seed=request.seed,
    )
    return {
        "scores": [r.score for r in results],
        "order_gaps": [r.order_gap for r in results],
        "swap_disagreements": [r.swap_disagreement for r in results],
        "results": [r.to_dict() for r in results],
    }


def group_reward(
    scorer: VerdictScorer, request: GroupRequest, images: Sequence[Any]
) -> dict[str, Any]:
    """Answer of ``/v1/reward/group``: :func:`r1reward.verdicts.rank_group` as a dict."""
    g = len(request.responses)
    if g > MAX_GROUP:
        raise RequestError(
            f"responses has {g} candidates; a group holds at most {MAX_GROUP} "
            f"({MAX_GROUP * (MAX_GROUP - 1)} judgments when greedy)",
            "responses",
        )
    _check_judgments(group_cost(g, request.k, request.greedy), "responses")
    result = rank_group(
        scorer,
        request.question,
        request.responses,
        images=images,
        k=request.k,
        greedy=request.greedy,
        seed=request.seed,
    )
    return result.to_dict()


_ASSISTANT = "<|im_start|>assistant"
_USER = "<|im_start|>user"
_END = "<|im_end|>"
_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")
_TRAILING_SPECIAL = re.compile(r"(?:\s*<\|[A-Za-z0-9_]{1,40}\|>)+\s*\Z")
_VISION = re.compile(r"<\|vision_start\|>.*?<\|vision_end\|>", re.DOTALL)


def _question(prompt: str) -> str:
    text = prompt
    at = text.rfind(_USER)
    if at >= 0:
        text = text[at + len(_USER) :]
        end = text.find(_END)
        text = text[:end] if end >= 0 else text
    text = _VISION.sub("", text)
    return _SPECIAL.sub("", text).strip()


def split_query(
    query: str, prompt: str | None = None, *, row: int | None = None
) -> tuple[str, str]:
    """``(question, response)`` from an OpenRLHF query (prompt + response) and its prompt.

    The response is what follows the prompt (or, when the decoded prompt differs from the prompt
    string, as with expanded image tokens, what follows the last ``<|im_start|>assistant``),
    without trailing special tokens; the question is the last user turn of a ChatML (Qwen) prompt
    without its vision placeholders, or the whole prompt when it has no chat template.

    Raises:
        ValueError: naming ``row`` when the query neither starts with its prompt nor contains an
            assistant turn (nothing tells where the response begins).
    """
    where = f"query[{row}]" if row is not None else "query"
    if prompt and query.startswith(prompt):
        head, response = prompt, query[len(prompt) :]
    elif _ASSISTANT in query:
        at = query.rfind(_ASSISTANT)
        head = query[:at]
        response = query[at + len(_ASSISTANT) :]
        response = response[1:] if response.startswith("\n") else response
        head = prompt or head
    else:
        raise ValueError(
            f"{where}: does not start with its prompt and has no '{_ASSISTANT}' turn; expected "
            "OpenRLHF's query = prompt + response"
        )
    response = _TRAILING_SPECIAL.sub("", response)
    return _question(head), response.strip()


def openrlhf_rows(request: GetRewardRequest) -> list[tuple[str, str, str]]:
    """``(question, response, reference)`` per row of an OpenRLHF request, or a RequestError
    that names the row."""
    n = len(request.query)
    _check_rows(n, "query")
    for name in ("prompts", "labels", "images"):
        value = getattr(request, name)
        if value is not None and len(value) != n:
            raise RequestError(f"{name} has {len(value)} rows but query has {n}", name)
    if request.labels is None:
        raise RequestError(
            "labels is missing: /get_reward judges each response against its label, the "
            "reference answer (OpenRLHF: --data.label_key)",
            "labels",
        )
    rows = []
    for i, query in enumerate(request.query):
        label = request.labels[i]
        if isinstance(label, bool) or not isinstance(label, str | int | float):
            raise RequestError(
                f"labels[{i}] is {label!r}; expected the reference answer as a string",
                f"labels.{i}",
            )
        prompt = request.prompts[i] if request.prompts is not None else None
        try:
            question, response = split_query(query, prompt, row=i)
        except ValueError as exc:
            raise RequestError(str(exc), f"query.{i}") from exc
        rows.append((question, response, str(label)))
    return rows


def get_reward(
    scorer: VerdictScorer, request: GetRewardRequest, images: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    """Answer of ``/get_reward`` in OpenRLHF's shape; all rows judged in one scorer call.

    ``images[i]`` are the decoded images of row ``i`` (empty lists when none were sent).
    """
    rows = openrlhf_rows(request)
    per = (2 if request.both_orders else 1) * request.k  # greedy (one per order) when k == 1
    _check_judgments(len(rows) * per, "query")
    results = score_pairs(
        scorer,
        rows,
        images=images,
        k=request.k,
        both_orders=request.both_orders,
    )
    rewards = [r.score for r in results]
    return {
        "rewards": rewards,
        "scores": rewards,
        "extra_logs": {
            "order_gap": [r.order_gap if r.order_gap is not None else 0.0 for r in results],
            "swap_disagreement": [float(r.swap_disagreement) for r in results],
            "verdict_mass": [r.verdict_mass for r in results],
        },
    }
