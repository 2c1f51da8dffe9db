"""Consistency judges: does the analysis support the verdict? (paper Section 3.2, consistency reward)

StableReinforce adds a *consistency reward* to the format and result rewards: a judge model reads
the reward model's own analysis (the text inside ``<think>...</think>``) and the verdict it gave
(``<answer>1|2</answer>``) and says whether the one supports the other. The final reward is
``Result * (1 + 0.5 * Consistency) + 0.5 * Format`` (see :func:`r1reward.rewards.combine`), with

* ``Consistency = 1``  the analysis supports the verdict,
* ``Consistency = -1`` it argues for the other response,
* ``Consistency = 0``  no usable answer (no verdict, empty analysis, the judge failed or replied
  with something that is neither 1 nor 0).

Every judge implements :class:`Judge`: ``judge(analyses, answers, images=None) -> list[int]``.

* :class:`~r1reward.toy.judge.RuleJudge` (kind ``rule``) - the toy world; checks the analysis's
  steps (observation -> marks -> closing sentence) and that the closing sentence names the
  verdict. Deterministic, no model. It lives in :mod:`r1reward.toy.judge` and is imported only
  when asked for (:data:`JUDGES`), so nothing on the real path imports the toy world.
* :class:`TransformersJudge` - a local chat model (text or vision-language) loaded with
  :func:`r1reward.models.load_model`, batched through :func:`r1reward.rollout.generate`.
* :class:`OpenAIJudge` - any OpenAI-compatible server (vLLM, SGLang, TGI, OpenAI, ``r1reward
  serve``). The paper uses Qwen2.5-VL-7B-Instruct behind such a server; the reference code
  hard-codes its address and has no fault handling. Here the address comes from arguments or
  ``$R1REWARD_JUDGE_BASE_URL``/``_MODEL``/``_API_KEY``; requests go through the shared
  :class:`r1reward.clients.ChatClient` (a timeout, retries with backoff, a concurrency limit), with
  a content-hash cache and failure counters here, and a failure never raises into the training
  loop: it is a 0 and a counter.

The judge prompt (:func:`consistency_prompt`) shows the analysis - all of it, or only its last
``last_lines`` lines as the reference did - and the verdict, and asks for ``1`` or ``0``. How the
reply is read is documented in :func:`parse_judge_reply`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from r1reward.clients import ChatClient, ChatError, endpoint, image_to_data_url
from r1reward.lazy import import_object
from r1reward.prompt import parse_judgment
from r1reward.rewards import combine_batch, format_rewards, result_rewards

ENV = "R1REWARD_JUDGE"
ENV_BASE_URL = f"{ENV}_BASE_URL"
ENV_MODEL = f"{ENV}_MODEL"
ENV_API_KEY = f"{ENV}_API_KEY"

#: The judge kinds :func:`build_judge` knows: kind -> ``"module:Class"``, imported on first use
#: (:func:`r1reward.lazy.import_object`), so the toy's ``rule`` judge costs no import of the toy
#: world until a recipe asks for it.
JUDGES: dict[str, str] = {
    "rule": "r1reward.toy.judge:RuleJudge",
    "openai": "r1reward.judges:OpenAIJudge",
    "transformers": "r1reward.judges:TransformersJudge",
}

JUDGE_PROMPT = """You check whether a piece of reasoning supports its own conclusion.
A reward model compared two responses (Response 1 and Response 2) to a question. Below is its analysis{scope}, followed by the verdict it gave.

[Analysis]
{analysis}

[Verdict]
Response {answer} is better.

Does the analysis support this verdict, that is, does the analysis itself argue that Response {answer} is the better one?
Reply with a single digit and nothing else: 1 if the analysis supports the verdict, 0 if it does not."""


# --------------------------------------------------------------------------------------- protocol
@runtime_checkable
class Judge(Protocol):
    """Anything that scores analysis/verdict consistency.

    ``judge(analyses, answers, images=None)`` takes ``B`` analyses (text inside ``<think>``), the
    ``B`` verdicts (1, 2, or ``None`` when the output had no parseable answer) and optionally ``B``
    lists of images (the pair's images, for judges that look at them), and returns ``B`` integers
    in ``{1, -1, 0}`` (supports / contradicts / no usable answer).
    """

    def judge(
        self,
        analyses: Sequence[str],
        answers: Sequence[int | None],
        images: Sequence[Sequence[Any]] | None = None,
    ) -> list[int]: ...


def check_lengths(analyses: Sequence[str], answers: Sequence[int | None], images: Any) -> None:
    """Raise ``ValueError`` unless there is one answer (and, when given, one image list) per
    analysis: the argument check every :class:`Judge` starts with."""
    if len(analyses) != len(answers):
        raise ValueError(
            f"judge: got {len(analyses)} analyses but {len(answers)} answers; expected one answer "
            "per analysis"
        )
    if images is not None and len(images) != len(analyses):
        raise ValueError(
            f"judge: got {len(images)} image lists for {len(analyses)} analyses; expected one "
            "(possibly empty) list per analysis or images=None"
        )


def askable(analysis: str | None, answer: int | None) -> bool:
    """A judge is only asked when there is a verdict (1 or 2) and a non-empty analysis."""
    return answer in (1, 2) and isinstance(analysis, str) and analysis.strip() != ""


# ------------------------------------------------------------------------------- prompt / reply
def consistency_prompt(analysis: str, answer: int, *, last_lines: int | None = None) -> str:
    """The judge prompt for one analysis and its verdict.

    Args:
        analysis: the reward model's analysis (the text inside ``<think>``, tags not needed).
        answer: the verdict it gave, 1 or 2.
        last_lines: show only the last ``last_lines`` non-empty lines of the analysis (the
            reference showed the tail, where the conclusion is); ``None`` shows all of it.
    """
    if answer not in (1, 2):
        raise ValueError(f"consistency_prompt: answer must be 1 or 2, got {answer!r}")
    text = analysis.strip()
    scope = ""
    if last_lines is not None:
        if last_lines < 1:
            raise ValueError(
                f"consistency_prompt: last_lines must be >= 1 or None, got {last_lines}"
            )
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > last_lines:
            text = "\n".join(lines[-last_lines:])
            scope = f" (its last {last_lines} lines)"
    return JUDGE_PROMPT.format(scope=scope, analysis=text, answer=answer)


_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE | re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_FIRST_TOKEN = re.compile(r"^[\s\"'`*_(\[]*([A-Za-z]+|\d+)")
_WORDS = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0}


def parse_judge_reply(text: str | None) -> int | None:
    """Read a judge's reply as 1 (supports), 0 (does not) or ``None`` (no usable answer).

    Rules, in order:

    1. a reasoning judge's ``<think>...</think>`` block is dropped;
    2. if the reply has an ``<answer>...</answer>`` tag, only its content is read;
    3. the *first token* of what remains, after leading spaces, quotes, backticks, ``*``, ``_``,
       ``(`` and ``[``, must be ``1``/``0`` or ``yes``/``no``/``true``/``false`` (any case);
       a token such as ``10`` or ``2`` or ``maybe`` is not usable.

    Anything else (empty text, ``None``, prose that does not start with the answer) gives ``None``.
    Deliberately strict: a judge that rambles is counted as "no usable answer", never guessed.
    """
    if not isinstance(text, str):
        return None
    body = _THINK.sub("", text)
    tag = _TAG.search(body)
    if tag:
        body = tag.group(1)
    match = _FIRST_TOKEN.match(body)
    if not match:
        return None
    return _WORDS.get(match.group(1).lower())


def reply_to_consistency(value: int | None) -> int:
    """Map a parsed reply to the consistency reward: 1 -> 1, 0 -> -1, None -> 0."""
    return {1: 1, 0: -1}.get(value, 0)


# ---------------------------------------------------------------------------- TransformersJudge
class TransformersJudge:
    """A local chat model as the judge, batched (greedy decoding).

    Args:
        model: a model path / hub id (loaded once with :func:`r1reward.models.load_model`) or an
            already loaded model, in which case ``processor`` must be given too.
        processor: the processor/tokenizer of a loaded ``model``.
        last_lines: see :func:`consistency_prompt`.
        max_new_tokens: the reply budget (the answer is one token; a few more let a chatty model
            finish its first word).
        batch_size: conversations per ``generate`` call.
        use_images: show the pair's images to the judge (for vision-language judges).
    """

    def __init__(
        self,
        model: Any,
        processor: Any | None = None,
        *,
        last_lines: int | None = None,
        max_new_tokens: int = 8,
        batch_size: int = 8,
        use_images: bool = False,
    ) -> None:
        if isinstance(model, str | Path):
            from r1reward.models import load_model

            model, processor = load_model(str(model))
        elif processor is None:
            raise ValueError(
                "TransformersJudge: a loaded model needs its processor (processor=...)"
            )
        self.model, self.processor = model, processor
        self.last_lines = last_lines
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.use_images = use_images
        self.stats: dict[str, int] = {"asked": 0, "unparseable": 0}

    def judge(
        self,
        analyses: Sequence[str],
        answers: Sequence[int | None],
        images: Sequence[Sequence[Any]] | None = None,
    ) -> list[int]:
        from r1reward.rollout import generate

        check_lengths(analyses, answers, images)
        out = [0] * len(analyses)
        todo = [i for i, (a, v) in enumerate(zip(analyses, answers)) if askable(a, v)]
        if not todo:
            return out
        conversations = []
        for i in todo:
            content: list[dict[str, Any]] = []
            if self.use_images and images is not None:
                content += [{"type": "image", "image": img} for img in images[i]]
            prompt = consistency_prompt(analyses[i], int(answers[i]), last_lines=self.last_lines)
            content.append({"type": "text", "text": prompt})
            conversations.append([{"role": "user", "content": content}])
        completions = generate(
            self.model,
            self.processor,
            conversations,
            num_return_sequences=1,
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
        )
        for i, group in zip(todo, completions):
            value = parse_judge_reply(group[0].text if group else None)
            self.stats["asked"] += 1
            self.stats["unparseable"] += value is None
            out[i] = reply_to_consistency(value)
        return out


# ---------------------------------------------------------------------------------- OpenAIJudge
@dataclass
class JudgeStats:
    """Counters of an :class:`OpenAIJudge` (all cumulative since construction)."""

    items: int = 0  # analyses scored (including those answered 0 without asking)
    requests: int = 0  # HTTP attempts sent (retries included)
    cache_hits: int = 0
    ok: int = 0  # usable replies (1 or 0)
    retries: int = 0
    connect_errors: int = 0
    timeouts: int = 0
    http_errors: int = 0  # non-2xx after retries
    bad_responses: int = 0  # 2xx whose body is not an OpenAI chat completion
    unparseable: int = 0  # a chat completion whose text is neither 1 nor 0
    other_errors: int = 0
    failures: int = field(default=0)  # items that ended as 0 because of any of the above
    last_error: str = ""  # the most recent failure, for logs

    def as_dict(self) -> dict[str, int | str]:
        return dict(self.__dict__)


class OpenAIJudge:
    """A judge behind any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``; default ``$R1REWARD_JUDGE_BASE_URL``.
        model: the served model name; default ``$R1REWARD_JUDGE_MODEL``.
        api_key: sent as ``Authorization: Bearer``; default ``$R1REWARD_JUDGE_API_KEY`` (may be
            unset for local servers).
        timeout: seconds allowed for each phase (connect, write, read between bytes) of one attempt.
        max_retries: extra attempts after a refused/broken connection, a reply that is not
            HTTP, a timeout, HTTP 429 or 5xx, waiting ``backoff``, ``2 * backoff``, ... seconds
            before each. Other 4xx, a 200 whose body is not a chat completion, and unparseable
            replies are not retried (they would fail the same way again).
        backoff: the first backoff delay in seconds.
        concurrency: requests in flight at once (a thread pool over one pooled HTTP client).
        last_lines: see :func:`consistency_prompt`.
        temperature, max_tokens: sampling settings sent to the server.
        use_images: send the pair's images (as data URLs) with the prompt.
        cache_size: replies remembered, keyed by a SHA-256 of model + prompt + images; only usable
            replies are cached, so a failure is retried on the next call.

    ``judge()`` never raises because of the server: every failure becomes a 0 and increments
    :attr:`stats`. Bad *arguments* (mismatched lengths, no base URL) do raise, at once.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        concurrency: int = 8,
        last_lines: int | None = None,
        temperature: float = 0.0,
        max_tokens: int = 8,
        use_images: bool = False,
        cache_size: int = 100_000,
    ) -> None:
        base_url, model, api_key = endpoint("OpenAIJudge", ENV, base_url, model, api_key)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.last_lines = last_lines
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.use_images = use_images
        self.cache_size = cache_size
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._client = ChatClient(
            "OpenAIJudge",
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            concurrency=concurrency,
            on_attempt=self._attempted,
        )

    # ------------------------------------------------------------------ public
    def judge(
        self,
        analyses: Sequence[str],
        answers: Sequence[int | None],
        images: Sequence[Sequence[Any]] | None = None,
    ) -> list[int]:
        check_lengths(analyses, answers, images)
        out = [0] * len(analyses)
        todo = [i for i, (a, v) in enumerate(zip(analyses, answers)) if askable(a, v)]
        with self._lock:
            self.stats.items += len(analyses)
        futures = {
            i: self._client.pool.submit(
                self._one, analyses[i], int(answers[i]), images[i] if images is not None else ()
            )
            for i in todo
        }
        for i, future in futures.items():
            try:
                out[i] = future.result()
            except BaseException:  # noqa: BLE001 - _one already never raises; belt and braces
                self._count("other_errors", failed=True)
                out[i] = 0
        return out

    def close(self) -> None:
        """Release the thread pool and HTTP connections."""
        self._client.close()

    def __enter__(self) -> OpenAIJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _count(self, name: str, *, failed: bool = False, message: str = "") -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)
            if failed:
                self.stats.failures += 1
                self.stats.last_error = f"{name}: {message}" if message else name

    def _attempted(self, attempt: int) -> None:
        """Count one HTTP attempt (and a retry when it is not the first)."""
        if attempt:
            self._count("retries")
        self._count("requests")

    def _payload(self, analysis: str, answer: int, images: Sequence[Any]) -> dict[str, Any]:
        prompt = consistency_prompt(analysis, answer, last_lines=self.last_lines)
        if self.use_images and images:
            content: Any = [
                {"type": "image_url", "image_url": {"url": image_to_data_url(img)}}
                for img in images
            ] + [{"type": "text", "text": prompt}]
        else:
            content = prompt
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _one(self, analysis: str, answer: int, images: Sequence[Any]) -> int:
        try:
            payload = self._payload(analysis, answer, images)
            key = hashlib.sha256(repr((self.base_url, payload)).encode()).hexdigest()
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    self.stats.cache_hits += 1
                    return self._cache[key]
            text = self._client.complete(payload)
            value = parse_judge_reply(text)
            if value is None:
                self._count("unparseable", failed=True, message=repr(text[:80]))
                return 0
            result = reply_to_consistency(value)
            with self._lock:
                self.stats.ok += 1
                self._cache[key] = result
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return result
        except ChatError as failure:
            self._count(failure.kind, failed=True, message=failure.attempts[-1])
            return 0
        except Exception as exc:  # noqa: BLE001 - a judge failure must never stop training
            self._count("other_errors", failed=True, message=f"{type(exc).__name__}: {exc}")
            return 0


# ------------------------------------------------------------------------------ from raw outputs
def consistency_rewards(
    judge: Judge, texts: Sequence[str], images: Sequence[Sequence[Any]] | None = None
) -> list[int]:
    """The consistency reward of raw reward-model outputs (paper Sec. 3.2).

    Each text is parsed with :func:`r1reward.prompt.parse_judgment` (analysis = the ``<think>``
    text, answer = the ``<answer>`` verdict) and the ``B`` (analysis, answer) pairs go to
    ``judge`` in one call. Returns ``B`` values in {1, -1, 0}; feed them with the format and result
    rewards to :func:`r1reward.rewards.combine_batch`.
    """
    parsed = [parse_judgment(text) for text in texts]
    return judge.judge([j.analysis for j in parsed], [j.answer for j in parsed], images)


def reward_breakdown(
    judge: Judge,
    texts: Sequence[str],
    labels: Sequence[int],
    images: Sequence[Sequence[Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every part of R1-Reward for each output, one dict per text (paper Sec. 3.2).

    Keys: ``answer`` (parsed verdict or None), ``label``, ``format`` (0/1), ``result`` (0/1),
    ``consistency`` (1/-1/0 from ``judge``), ``reward`` = ``result * (1 + 0.5 * consistency) +
    0.5 * format`` and ``reward_without_consistency`` = the same with consistency 0 (format +
    result only), both from :func:`r1reward.rewards.combine_batch`.
    """
    if len(texts) != len(labels):
        raise ValueError(f"reward_breakdown: {len(texts)} texts but {len(labels)} labels")
    formats = format_rewards(texts)
    results = result_rewards(texts, labels)
    consistencies = consistency_rewards(judge, texts, images)
    rewards = combine_batch(formats, results, consistencies)
    plain = combine_batch(formats, results, [0] * len(texts))
    return [
        {
            "answer": parse_judgment(text).answer,
            "label": label,
            "format": f,
            "result": r,
            "consistency": c,
            "reward": w,
            "reward_without_consistency": p,
        }
        for text, label, f, r, c, w, p in zip(
            texts, labels, formats, results, consistencies, rewards, plain
        )
    ]


# ------------------------------------------------------------------------------------- factory
def build_judge(kind: str, **kwargs: Any) -> Judge:
    """A judge by name, for recipes and the CLI: a kind of :data:`JUDGES` (``rule``, ``openai``,
    ``transformers``), its class imported on first use.

    ``kwargs`` go to the class (``transformers`` needs ``model=PATH``; ``openai`` reads its address
    from the environment when not given).

    Raises:
        ValueError: ``kind`` is not in :data:`JUDGES`.
    """
    if kind not in JUDGES:
        raise ValueError(f"build_judge: unknown judge {kind!r}; expected one of {sorted(JUDGES)}")
    return import_object(JUDGES[kind])(**kwargs)


def __getattr__(name: str) -> Any:
    """``from r1reward.judges import RuleJudge`` keeps working: the toy judge is imported from
    :mod:`r1reward.toy.judge` when that name is first asked for, not when this module loads."""
    if name == "RuleJudge":
        return import_object(JUDGES["rule"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
