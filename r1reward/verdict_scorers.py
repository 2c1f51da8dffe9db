"""Judges as scorers: one judgment per conversation and P(Response 1 better) read from it.

R1-Reward (arXiv 2505.02835, Sec. 3, Table 1) answers "1" or "2". After the judge has written its
analysis (sampled or greedy, exactly as in evaluation), the canonical ending
``<think>{analysis}</think><answer>`` is teacher-forced and the next-token logits of ``"1"`` and
``"2"`` are read: ``p_first = softmax([l_1, l_2])[0]`` (:func:`verdict_probabilities`). Every
judgment yields a number, also when the sampled text would not parse.

A *scorer* is anything with ``judge(conversations, k=, greedy=, seed=) -> list[list[Verdict]]``
(one list per conversation: one greedy judgment, or ``k`` samples): :class:`ModelVerdicts` runs a
Qwen2.5-VL-style model; :class:`SamplerVerdicts` wraps a text-only sampler (a rule, an OpenAI
server), whose parsed vote stands in for the distribution (1.0 / 0.0, and 0.5 when unparseable);
:class:`BatchedVerdicts` lets concurrent calls share one batch (the service). What the scores
of pairs, references and groups make of the verdicts is :mod:`r1reward.verdicts`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from r1reward.completion import visuals
from r1reward.evaluate import ModelSampler
from r1reward.prompt import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, parse_judgment
from r1reward.rollout import _model_device, eval_mode

__all__ = [
    "Verdict",
    "VerdictScorer",
    "ModelVerdicts",
    "SamplerVerdicts",
    "BatchedVerdicts",
    "verdict_scorer",
    "verdict_token_ids",
    "forced_prefix",
    "verdict_probabilities",
]


# ------------------------------------------------------------------------------ one judgment
@dataclass(frozen=True)
class Verdict:
    """One judgment of one conversation, in the positions it was shown.

    Attributes:
        text: the generated judgment.
        answer: the parsed ``<answer>`` (1, 2 or ``None``), as shown.
        p_first: P(Response 1 better) from the verdict distribution after the analysis.
        verdict_mass: ``P("1") + P("2")`` under the full next-token softmax (1.0 / 0.0 for a
            text-only sampler: the vote parsed or not).
        well_formed: the text follows the Table-1 format exactly.
    """

    text: str
    answer: int | None
    p_first: float
    verdict_mass: float
    well_formed: bool


@runtime_checkable
class VerdictScorer(Protocol):
    """Writes judgments and reads P(Response 1 better) from each (see the module docstring)."""

    def judge(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[Verdict]]: ...


def forced_prefix(text: str) -> str:
    """The canonical judgment ending that the verdict token follows: ``<think>A</think><answer>``.

    ``A`` is :func:`r1reward.prompt.parse_judgment`'s analysis of ``text`` (the first complete
    think block; a cut one up to the end or to ``<answer>``; without tags, the text before
    ``<answer>``), so a judgment cut at the length limit or written without tags is closed the
    way the Table-1 format closes it.
    """
    return f"{THINK_OPEN}{parse_judgment(text).analysis}{THINK_CLOSE}{ANSWER_OPEN}"


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def verdict_token_ids(processor: Any) -> tuple[int, int]:
    """Ids of the tokens ``"1"`` and ``"2"`` as they follow ``<answer>`` in a judgment.

    Checked, not assumed: ``<answer>1`` must tokenize as ``<answer>`` plus exactly one token
    (likewise for 2), or the two-token softmax would not be the verdict distribution.

    Raises:
        ValueError: naming the tokenizer, when a verdict is not a single token after ``<answer>``.
    """
    tok = _tokenizer(processor)
    stem = tok.encode(f"x{THINK_CLOSE}{ANSWER_OPEN}", add_special_tokens=False)
    ids = []
    for digit in ("1", "2"):
        full = tok.encode(f"x{THINK_CLOSE}{ANSWER_OPEN}{digit}", add_special_tokens=False)
        if full[: len(stem)] != stem or len(full) != len(stem) + 1:
            raise ValueError(
                f"tokenizer {type(tok).__name__} ({getattr(tok, 'name_or_path', '')}): "
                f"'{ANSWER_OPEN}{digit}' does not tokenize as '{ANSWER_OPEN}' + one token "
                f"(got {full[len(stem) - 1 :]} after the stem); the verdict distribution "
                "cannot be read from one next-token step"
            )
        ids.append(full[-1])
    if ids[0] == ids[1]:
        raise ValueError(f"tokenizer {type(tok).__name__}: '1' and '2' map to the same token")
    return ids[0], ids[1]


def _images(conversation: list[dict[str, Any]]) -> list[Any]:
    return visuals(conversation, 0)[0]


def verdict_probabilities(
    model: Any,
    processor: Any,
    conversations: Sequence[list[dict[str, Any]]],
    prefixes: Sequence[str],
    *,
    batch_size: int = 8,
    token_ids: tuple[int, int] | None = None,
) -> list[tuple[float, float]]:
    """``(p_first, verdict_mass)`` for each conversation continued by its assistant ``prefix``.

    Each row is the chat-template prompt (generation prompt included) followed by ``prefixes[i]``
    (normally :func:`forced_prefix` of a judgment), tokenized with its images and left padded, so
    one forward pass with ``logits_to_keep=1`` gives the next-token logits ``(B, vocab)`` of every
    row at the last column. ``p_first = softmax([l_1, l_2])[0]`` (float32), ``verdict_mass =
    softmax(l)[1] + softmax(l)[2]``.
    """
    if len(conversations) != len(prefixes):
        raise ValueError(
            f"verdict_probabilities: {len(conversations)} conversations but {len(prefixes)} prefixes"
        )
    id1, id2 = token_ids or verdict_token_ids(processor)
    device = _model_device(model)
    out: list[tuple[float, float]] = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(conversations), batch_size):
            convs = list(conversations[start : start + batch_size])
            texts = processor.apply_chat_template(convs, tokenize=False, add_generation_prompt=True)
            if isinstance(texts, str):
                texts = [texts]
            texts = [t + p for t, p in zip(texts, prefixes[start : start + batch_size])]
            images = [img for conv in convs for img in _images(conv)]
            kwargs: dict[str, Any] = {"images": images} if images else {}
            batch = processor(
                text=texts, padding=True, padding_side="left", return_tensors="pt", **kwargs
            ).to(device)
            logits = model(**batch, logits_to_keep=1).logits[:, -1].float()  # (B, vocab)
            pair = logits[:, [id1, id2]]  # (B, 2)
            p_first = torch.softmax(pair, dim=-1)[:, 0]
            mass = torch.softmax(logits, dim=-1)[:, [id1, id2]].sum(-1)
            out += list(zip(p_first.tolist(), mass.tolist()))
    return out


class ModelVerdicts:
    """Judgments of a Qwen2.5-VL-style model, each with its verdict distribution.

    ``judge`` samples ``k`` judgments per conversation (or one greedy) with
    :func:`r1reward.rollout.generate` (the K samples of a prompt in one call), then reads
    ``P("1")`` vs ``P("2")`` after :func:`forced_prefix` of each in batched forward passes
    (:func:`verdict_probabilities`). Cost per judgment: one generation of at most
    ``max_new_tokens`` and one forward pass over prompt + analysis.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 8,
        seed: int = 0,
        engine: str = "transformers",
    ) -> None:
        self.model = model
        self.processor = processor
        self.batch_size = int(batch_size)
        # the judgments themselves are the evaluator's (same generate call, same seeding, same
        # engine: transformers or vLLM); the verdict probabilities are a transformers forward
        self.sampler = ModelSampler(
            model,
            processor,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            engine=engine,
        )
        self._token_ids: tuple[int, int] | None = None  # checked on first use (a chat-only
        # server with a tokenizer that merges the verdict still starts)

    @property
    def token_ids(self) -> tuple[int, int]:
        """:func:`verdict_token_ids` of the processor (raises ValueError when unusable)."""
        if self._token_ids is None:
            self._token_ids = verdict_token_ids(self.processor)
        return self._token_ids

    def judge(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[Verdict]]:
        if not conversations:
            return []
        texts = self.sampler.sample(list(conversations), k=k, greedy=greedy, seed=seed)
        flat = [(i, text) for i, group in enumerate(texts) for text in group]
        probs = verdict_probabilities(
            self.model,
            self.processor,
            [conversations[i] for i, _ in flat],
            [forced_prefix(text) for _, text in flat],
            batch_size=self.batch_size,
            token_ids=self.token_ids,
        )
        out: list[list[Verdict]] = [[] for _ in conversations]
        for (i, text), (p, mass) in zip(flat, probs):
            j = parse_judgment(text)
            out[i].append(Verdict(text, j.answer, p, mass, j.well_formed))
        return out


class SamplerVerdicts:
    """A text-only :class:`r1reward.evaluate.Sampler` as a scorer: its vote is the distribution.

    ``p_first`` is 1.0 for a parsed "1", 0.0 for "2" and 0.5 (no information) when unparseable;
    ``verdict_mass`` is 1.0 when parsed, else 0.0. For rule judges, tests and remote judges whose
    logits are not available.
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def judge(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[Verdict]]:
        texts = self.sampler.sample(list(conversations), k=k, greedy=greedy, seed=seed)
        out = []
        for group in texts:
            row = []
            for text in group:
                j = parse_judgment(text)
                p = {1: 1.0, 2: 0.0}.get(j.answer, 0.5)  # type: ignore[arg-type]
                row.append(Verdict(text, j.answer, p, float(j.answer is not None), j.well_formed))
            out.append(row)
        return out


def verdict_scorer(
    model: Any = None,
    processor: Any = None,
    *,
    sampler: Any = None,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    engine: str = "transformers",
) -> VerdictScorer:
    """:class:`SamplerVerdicts` around ``sampler`` when one is given, else :class:`ModelVerdicts`."""
    if sampler is not None:
        return SamplerVerdicts(sampler)
    if model is None or processor is None:
        raise ValueError("verdict_scorer: give a model and its processor, or a sampler")
    return ModelVerdicts(
        model,
        processor,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        engine=engine,
    )


class BatchedVerdicts:
    """A scorer whose concurrent ``judge`` calls share one batch of another scorer.

    Each call is submitted to ``batcher`` (anything with ``submit(key, items) -> Future``, e.g.
    :class:`r1reward.serve.MicroBatcher`) under the key ``("verdict", k, greedy, seed)`` and
    blocks until the merged call has produced its verdicts; the batcher's owner runs the inner
    scorer for that key (``r1reward.serve.Engine``).
    """

    def __init__(
        self, batcher: Any, ticket: Any = None, check: Callable[[Sequence[Any]], Any] | None = None
    ) -> None:
        self.batcher = batcher
        self.ticket = ticket  # r1reward.serve.Ticket: its deadline and disconnection drop the job
        self.check = check  # e.g. Guard.check_prompts: a prompt the processor refuses never joins

    def judge(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[Verdict]]:
        if self.check is not None:
            self.check(conversations)
        key = ("verdict", int(k), bool(greedy), seed)
        ticket = self.ticket
        if ticket is None:
            return self.batcher.submit(key, list(conversations)).result()
        future = self.batcher.submit(key, list(conversations), ticket.alive)
        ticket.track(future)
        return future.result()
