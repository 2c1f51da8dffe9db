"""``r1reward serve``: the reward model as an HTTP service (OpenAI-compatible chat + ``/v1/reward``).

The one question users asked the reference project is how to use a trained R1-Reward model as the
reward inside their own GRPO/PPO training. This package answers it with a service that loads the
model once and offers

* ``POST /v1/chat/completions`` - OpenAI-compatible chat (text; images as ``data:`` URLs, or paths
  under ``--image-root`` when ``--allow-local-images``; ``temperature``, ``top_p``,
  ``max_tokens``, ``n``), so the served model can also act as the consistency judge
  (:class:`r1reward.judges.OpenAIJudge`) or a teacher;
* ``GET /v1/models``;
* ``POST /v1/reward`` - ``{question, images, response_1, response_2, k, both_orders}`` ->
  ``{score, p_1_orders, order_gap, swap_disagreement, preferred, p_1, votes, analyses, ...}``:
  ``k`` Table-1 judgments per order (both orders by default, so position bias cancels);
  ``score`` = P(response_1 better) read from the judge's verdict distribution after each analysis
  and averaged over the orders -- a number for every valid request -- and, as the second
  estimate, the majority vote and ``p_1`` = share of the parseable votes that prefer
  ``response_1`` (paper Sec. 4.3, Voting@K). This is :func:`r1reward.verdicts.score_pair`;
* ``POST /v1/reward/reference``, ``POST /v1/reward/group`` - pointwise against a reference and
  group ranking (Bradley-Terry), and ``POST /get_reward``, OpenRLHF's remote reward protocol
  (:mod:`r1reward.reward_api`);
* ``GET /health`` - liveness, queue depth, the age of the running batch, batching counters;
  ``503`` with ``status: "stuck"`` when one batch has run longer than ``--stuck-after``.

Batching: every generation goes through one :class:`MicroBatcher` thread. Requests that arrive
while a batch is generating (or within ``batch_wait_ms`` of the first one) are merged into a single
sampler / ``generate`` call when their generation settings agree; the event loop never runs the
model, so ``/health`` answers while a batch is running. Only one batch runs at a time.

The service survives its clients (:class:`Guard`, one per app; every endpoint calls it):

* isolation - everything the processor could refuse is checked *before* a request joins a batch
  (text that is not encodable Unicode or holds a vision placeholder token, image size and aspect
  ratio, prompt tokens after the chat template with image tokens included); a merged batch that
  still fails is re-run one job at a time, so only the offender gets the error;
* bounded cost - ``--max-prompt-tokens``, ``max_tokens`` / ``k`` / ``n`` bounds, a per-request
  deadline (``--request-timeout``: 504), jobs of clients that disconnected or timed out are dropped
  before they run, a graceful-shutdown timeout;
* bounded memory - decoded pixels capped per image (header checked before decoding), per request
  and over all requests in flight; images decoded on a small thread pool (never on the event loop)
  and resized at once to the model's own pixel limit; ``--max-queue`` requests in flight, counted
  atomically at admission; uvicorn's keep-alive timeout, a header timeout and a connection cap;
* access - an API key (``--api-key`` or ``$R1REWARD_API_KEY``; ``Authorization: Bearer``,
  compared in constant time; 401 without it), local image paths off unless
  ``--allow-local-images``, and then confined to ``--image-root`` with one error for every file that
  cannot be used (missing, unreadable, not an image: no existence or size oracle); ``/docs`` and
  ``/openapi.json`` only with ``--docs``; the ``Host`` header checked while bound to loopback (DNS
  rebinding).

Errors use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}`` so OpenAI clients
show the message: 400 bad input (naming the field), 401 no or wrong key, 404 unknown model or
route, 413 too large, 503 busy, 504 deadline passed.

The package, one job per module (lower layers first): :mod:`~r1reward.serve.schema` (request
models, the error envelope), :mod:`~r1reward.serve.limits` (:class:`Limits`, :class:`Access`, the
limit flags), :mod:`~r1reward.serve.images`, :mod:`~r1reward.serve.batching` (:class:`MicroBatcher`,
:class:`Ticket`), :mod:`~r1reward.serve.engine`, :mod:`~r1reward.serve.middleware`,
:mod:`~r1reward.serve.guard`, :mod:`~r1reward.serve.app` (:func:`create_app`),
:mod:`~r1reward.serve.server` (uvicorn, :class:`BackgroundServer`), :mod:`~r1reward.serve.client`
(:class:`RewardClient`) and :mod:`~r1reward.serve.cli`.
"""

from r1reward.serve.app import create_app
from r1reward.serve.batching import BatchingSampler, MicroBatcher, Ticket
from r1reward.serve.cli import bind_message, build_parser, main
from r1reward.serve.client import RewardClient
from r1reward.serve.engine import Engine, build_engine
from r1reward.serve.guard import Guard, PromptCounter
from r1reward.serve.images import decode_image, load_image, open_image
from r1reward.serve.limits import Access, Limits, limits_from_args
from r1reward.serve.schema import APIError, Text
from r1reward.serve.server import BackgroundServer, ServerSettings

__all__ = [
    "Access",
    "Limits",
    "ServerSettings",
    "Guard",
    "Ticket",
    "Text",
    "MicroBatcher",
    "BatchingSampler",
    "Engine",
    "create_app",
    "BackgroundServer",
    "RewardClient",
    "build_engine",
    "limits_from_args",
    "main",
    # importable from here before the split, kept for users' code
    "APIError",
    "PromptCounter",
    "open_image",
    "decode_image",
    "load_image",
    "build_parser",
    "bind_message",
]
