"""The model behind ``r1reward serve``: :class:`Engine` (the loaded model, its samplers and the
one :class:`~r1reward.serve.batching.MicroBatcher` thread that runs it) and :func:`build_engine`.

Every generation -- chat completions, sampled judgments, verdict probabilities -- is a job on the
batcher under a key of its settings; :meth:`Engine._run` is the only code that calls the model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1reward.evaluate import ModelSampler
from r1reward.models import load_model
from r1reward.rollout import encode, generate
from r1reward.serve.batching import MicroBatcher
from r1reward.verdict_scorers import verdict_scorer

__all__ = ["ChatChoice", "Engine", "build_engine"]


@dataclass
class ChatChoice:
    """One generated chat choice: its text, its length in tokens, and why it stopped."""

    text: str
    completion_tokens: int
    finish: str


@dataclass
class Engine:
    """The loaded model behind the service, and the one batcher thread that runs it.

    Args:
        model, processor: from :func:`r1reward.models.load_model` (or any pair that
            :func:`r1reward.rollout.generate` accepts).
        name: the model name reported by ``/v1/models`` and checked against ``model`` in requests.
        sampler: the inner sampler for ``/v1/reward``; default the evaluator's
            ``ModelSampler(model, processor, max_new_tokens=reward_max_tokens,
            temperature=reward_temperature, batch_size=batch_size)``.
        batch_size: prompts per ``generate`` call inside one merged batch.
        batch_wait_ms, max_batch_items: see :class:`MicroBatcher`.
        seed: seeds the stream of per-batch seeds for requests that give none.
        verdicts: the scorer of the reward endpoints (:mod:`r1reward.verdicts`); default
            :class:`r1reward.verdicts.ModelVerdicts` with the settings above, or
            :class:`r1reward.verdicts.SamplerVerdicts` around ``sampler`` when one is given.
        engine: ``"transformers"`` or ``"vllm"`` (:mod:`r1reward.engines`): what generates
            chat completions and judgments; verdict probabilities stay a transformers forward.
    """

    model: Any
    processor: Any
    name: str
    sampler: Any = None
    batch_size: int = 16
    reward_max_tokens: int = 256
    reward_temperature: float = 1.0
    batch_wait_ms: float = 5.0
    max_batch_items: int = 64
    seed: int = 0
    verdicts: Any = None
    engine: str = "transformers"
    _rng: random.Random = field(init=False, repr=False)
    batcher: MicroBatcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.verdicts is None:
            self.verdicts = verdict_scorer(
                self.model,
                self.processor,
                sampler=self.sampler,
                max_new_tokens=self.reward_max_tokens,
                temperature=self.reward_temperature,
                batch_size=self.batch_size,
                engine=self.engine,
            )
        if self.sampler is None:
            self.sampler = ModelSampler(
                self.model,
                self.processor,
                batch_size=self.batch_size,
                max_new_tokens=self.reward_max_tokens,
                temperature=self.reward_temperature,
                name=self.name,
                engine=self.engine,
            )
        self._rng = random.Random(self.seed)
        self.batcher = MicroBatcher(
            self._run, max_wait_s=self.batch_wait_ms / 1000, max_items=self.max_batch_items
        )

    def _fresh_seed(self, seed: int | None) -> int:
        return self._rng.randrange(2**31) if seed is None else seed

    # runs on the batcher thread only
    def _run(self, key: Hashable, items: list[Any]) -> list[Any]:
        kind = key[0]
        if kind == "reward":
            _, k, greedy, seed = key
            return self.sampler.sample(items, k=k, greedy=greedy, seed=self._fresh_seed(seed))
        if kind == "verdict":
            _, k, greedy, seed = key
            return self.verdicts.judge(items, k=k, greedy=greedy, seed=self._fresh_seed(seed))
        if kind == "chat":
            _, n, temperature, top_p, max_tokens, seed = key
            return self._chat_batch(
                items, n, temperature, top_p, max_tokens, self._fresh_seed(seed)
            )
        raise ValueError(f"unknown batch kind {kind!r}")

    def _chat_batch(
        self,
        conversations: list[Any],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
    ) -> list[tuple[int, list[ChatChoice]]]:
        greedy = temperature == 0.0
        groups = generate(
            self.model,
            self.processor,
            conversations,
            num_return_sequences=n,
            do_sample=not greedy,
            temperature=temperature if not greedy else 1.0,
            top_p=top_p,
            max_new_tokens=max_tokens,
            batch_size=self.batch_size,
            seed=seed,
            engine=self.engine,
        )
        prompt_tokens = [
            int(encode(self.processor, [conv])["attention_mask"].sum()) for conv in conversations
        ]
        return [
            (p, [ChatChoice(c.text, len(c.token_ids), c.finish) for c in group])
            for p, group in zip(prompt_tokens, groups)
        ]

    def chat_future(
        self,
        conversation: list[dict[str, Any]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None,
        alive: Callable[[], bool] | None = None,
    ) -> Future:
        """Queue one chat conversation; the future gets ``[(prompt_tokens, choices)]``."""
        key = ("chat", n, float(temperature), float(top_p), int(max_tokens), seed)
        return self.batcher.submit(key, [conversation], alive)

    def close(self) -> None:
        """Stop the batcher thread."""
        self.batcher.close()


def build_engine(
    model: str,
    *,
    name: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """Load ``model`` (a folder or hub id) once with :func:`r1reward.models.load_model`."""
    loaded, processor = load_model(model, dtype=dtype, device_map=device_map)
    loaded.eval()
    return Engine(loaded, processor, name or _default_name(model), **engine_kwargs)


def _default_name(model: str) -> str:
    path = Path(model)
    return path.name if path.exists() else model
