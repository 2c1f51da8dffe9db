"""Samplers: anything that writes judgments for chat conversations (a model, a constant, a function).

:class:`Sampler` is the interface the evaluator and the reward service call; :class:`ModelSampler`
draws from a Qwen2.5-VL-style model through :func:`r1reward.rollout.generate`,
:class:`ConstantSampler` is the always-"1" judge that exposes position bias and
:class:`FunctionSampler` wraps a rule (tests, the toy oracle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from r1reward.rollout import generate

__all__ = [
    "ALWAYS_ONE",
    "ConstantSampler",
    "FunctionSampler",
    "ModelSampler",
    "Sampler",
    "describe",
]

#: What :class:`ConstantSampler` says by default: a well-formed judgment that always picks "1".
ALWAYS_ONE = "<think>Response 1 is better.</think><answer>1</answer>"


@runtime_checkable
class Sampler(Protocol):
    """Anything that writes judgments for chat conversations.

    ``sample(conversations, k=k, greedy=greedy, seed=seed)`` returns one list per conversation:
    ``[greedy_text]`` when ``greedy`` is true (``k`` is ignored), else ``k`` sampled texts.
    ``conversations`` are :func:`r1reward.prompt.build_messages` outputs. The same ``seed`` and
    the same conversations must give the same texts (this is what makes resumed runs equal
    uninterrupted ones).
    """

    def sample(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[str]]: ...


class ConstantSampler:
    """A judge that writes the same text every time (default: always "1").

    The cautionary baseline: with the reference's chosen-first layout it scores 100 %; judged in
    both orders it scores 50 % with position bias 1.0.
    """

    #: It never looks at the media, so the evaluator does not load them (text-only metadata works).
    needs_media = False

    def __init__(self, text: str = ALWAYS_ONE) -> None:
        self.text = text

    def sample(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[str]]:
        n = 1 if greedy else k
        return [[self.text] * n for _ in conversations]

    def describe(self) -> dict[str, Any]:
        return {"sampler": "constant", "text": self.text}


class FunctionSampler:
    """A judge given as a function ``fn(conversation, sample_index, seed) -> text``.

    ``sample_index`` is ``None`` for the greedy judgment, else ``0..k-1``. Handy for tests and for
    rule-based judges (e.g. the toy oracle) in the book.
    """

    def __init__(
        self, fn: Callable[[list[dict[str, Any]], int | None, int | None], str], name: str = "fn"
    ) -> None:
        self.fn = fn
        self.name = name

    def sample(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[str]]:
        if greedy:
            return [[self.fn(conv, None, seed)] for conv in conversations]
        return [[self.fn(conv, i, seed) for i in range(k)] for conv in conversations]

    def describe(self) -> dict[str, Any]:
        return {"sampler": "function", "name": self.name}


class ModelSampler:
    """Judgments from a Qwen2.5-VL-style model through :func:`r1reward.rollout.generate`.

    The K samples of a prompt come from one batched ``generate`` call that shares the prompt
    (``num_return_sequences=k``, left padding): no Python loop of one call per sample. The greedy
    judgment is a second call with ``do_sample=False``.

    Args:
        model, processor: as returned by :func:`r1reward.models.load_model`.
        batch_size: prompts per ``generate`` call (each carries ``k`` sequences when sampling).
        max_new_tokens: generation budget per judgment.
        temperature, top_p: sampling settings for the K samples (the paper samples at T=1.0).
        seed: default seed when :meth:`sample` is called without one.
        engine: ``"transformers"`` or ``"vllm"`` (the colocated engine of
            :mod:`r1reward.rollout_vllm`; see :mod:`r1reward.engines`), or ``"auto"`` as in
            :func:`r1reward.rollout.generate`. The same records either way.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        batch_size: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        name: str = "",
        engine: str = "transformers",
    ) -> None:
        self.model = model
        self.processor = processor
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seed = int(seed)
        self.name = name or str(getattr(getattr(model, "config", None), "_name_or_path", ""))
        self.engine = engine

    def sample(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[str]]:
        out = generate(
            self.model,
            self.processor,
            list(conversations),
            num_return_sequences=1 if greedy else int(k),
            do_sample=not greedy,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            seed=self.seed if seed is None else seed,
            progress=False,
            engine=self.engine,
        )
        return [[c.text for c in comps] for comps in out]

    @property
    def supports_video(self) -> bool:
        """Whether the processor has a video processor (transformers needs torchvision for it)."""
        return getattr(self.processor, "video_processor", None) is not None

    def describe(self) -> dict[str, Any]:
        out = {
            "sampler": "model",
            "model": self.name,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.engine != "transformers":  # only when set, so folders of earlier runs resume
            out["engine"] = self.engine  # sampled judgments differ between engines
        return out


def describe(sampler: Any) -> dict[str, Any]:
    """What ``sampler`` says it is (its ``describe()``), else its class name: the run's config."""
    fn = getattr(sampler, "describe", None)
    return dict(fn()) if callable(fn) else {"sampler": type(sampler).__name__}
