"""GRPO of the chapter's toy policy with three rewards: the oracle rule, the judge, a scalar model.

TRL's ``GRPOTrainer`` trains the same policy (:func:`r1reward.chapters.judge_use.warm_up_policy`)
with the same seeds, steps and batch once per reward -- the oracle (the toy's truth), the judge
served by ``r1reward serve`` over HTTP (:func:`r1reward.chapters.judge_use.served_judge`), the
scalar Bradley-Terry model -- and measures the policy's true held-out accuracy every few steps,
beside the reward it was paid and the true accuracy of the very samples it was paid for (the
reward-hacking signal). Chapter 12 runs it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from r1reward.chapters.judge_use import ScalarScorer, correct_answer, greedy_accuracy
from r1reward.data.schema import PreferencePair
from r1reward.integrations.trl import completion_text, cpu_grpo_config
from r1reward.models import load_model

__all__ = ["GRPOSettings", "grpo_compare", "oracle_reward", "scalar_reward"]


# -------------------------------------------------------------------------------- rewards
def oracle_reward(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **kwargs: Any
) -> list[float]:
    """TRL reward: 1.0 when the completion is the dataset's ``answer`` (the toy's truth)."""
    return [float(completion_text(c).strip() == a) for c, a in zip(completions, answer)]


class _ScalarReward:
    """TRL reward: the scalar model's score of each completion (needs an ``image`` column)."""

    def __init__(self, scorer: ScalarScorer, by_question: dict[str, PreferencePair]) -> None:
        self.scorer, self.by_question = scorer, by_question
        self.__name__ = "scalar"

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        pair_id: Sequence[str],
        **kwargs: Any,
    ) -> list[float]:
        return self.scorer.score(
            [self.by_question[i] for i in pair_id],
            [completion_text(c).strip() for c in completions],
        )


class _Recorded:
    """Wraps a TRL reward: records the mean reward and the true accuracy of the samples paid."""

    def __init__(self, fn: Callable[..., list[float]], name: str) -> None:
        self.fn, self.__name__ = fn, name
        self.calls: list[dict[str, float]] = []

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        rewards = self.fn(prompts, completions, **kwargs)
        right = oracle_reward(prompts, completions, kwargs["answer"])
        paid_right = [r for r, ok in zip(rewards, right) if ok]
        paid_wrong = [r for r, ok in zip(rewards, right) if not ok]
        self.calls.append(
            {
                "reward_mean": sum(rewards) / len(rewards),
                "sample_accuracy": sum(right) / len(right),
                # a group-relative reward (Bradley-Terry strengths) has mean 0 in every group, so its
                # mean cannot rise; what it teaches is how it pays right answers against wrong ones
                "reward_right": sum(paid_right) / len(paid_right) if paid_right else None,
                "reward_wrong": sum(paid_wrong) / len(paid_wrong) if paid_wrong else None,
            }
        )
        return rewards


@dataclasses.dataclass(frozen=True)
class GRPOSettings:
    """One GRPO run's settings, the same for every reward (declared before any run).

    Attributes:
        steps: optimizer steps.
        prompts_per_step: prompts a step (each with ``num_generations`` completions).
        num_generations: the group size G.
        learning_rate, beta, temperature, max_completion_length, seed: as in ``GRPOConfig``.
        eval_every: held-out greedy accuracy every this many steps (and at step 0).
    """

    steps: int
    prompts_per_step: int = 2
    num_generations: int = 4
    learning_rate: float = 5e-4
    beta: float = 0.0
    temperature: float = 1.0
    max_completion_length: int = 24
    seed: int = 0
    eval_every: int = 2


def _dataset(pairs: Sequence[PreferencePair]) -> Any:
    import datasets

    return datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": p.question}],
                "image": p.images[0],
                "answer": correct_answer(p),
                "pair_id": p.id,
            }
            for p in pairs
        ]
    )


def _grpo_run(
    policy: str,
    reward: _Recorded,
    train: Sequence[PreferencePair],
    heldout: Sequence[PreferencePair],
    s: GRPOSettings,
    out_dir: Path,
) -> dict[str, Any]:
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOTrainer

    model, processor = load_model(policy)
    curve: list[dict[str, float]] = []

    class HeldOut(TrainerCallback):
        def _eval(self, state: Any, model: Any) -> None:
            curve.append(
                {
                    "step": state.global_step,
                    "heldout_accuracy": greedy_accuracy(model, processor, heldout),
                }
            )

        def on_train_begin(self, args, state, control, model=None, **kw):  # noqa: ANN001
            self._eval(state, model)

        def on_step_end(self, args, state, control, model=None, **kw):  # noqa: ANN001
            if state.global_step % s.eval_every == 0 or state.global_step == s.steps:
                self._eval(state, model)

    config = cpu_grpo_config(
        out_dir,
        seed=s.seed,
        per_device_train_batch_size=s.prompts_per_step * s.num_generations,
        num_generations=s.num_generations,
        max_completion_length=s.max_completion_length,
        beta=s.beta,
        learning_rate=s.learning_rate,
        temperature=s.temperature,
        max_steps=s.steps,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=_dataset(train),
        processing_class=processor,
        callbacks=[HeldOut()],
    )
    trainer.remove_callback(PrinterCallback)  # the logs are plotted, not printed in the chapter
    t0 = time.monotonic()
    trainer.train()
    return {"curve": curve, "calls": reward.calls, "seconds": round(time.monotonic() - t0, 1)}


def grpo_compare(
    policy: str | os.PathLike[str],
    rewards: dict[str, Callable[..., list[float]]],
    train: Sequence[PreferencePair],
    heldout: Sequence[PreferencePair],
    settings: GRPOSettings,
    out_dir: str | os.PathLike[str],
) -> dict[str, dict[str, Any]]:
    """Train ``policy`` once per reward with the same ``settings`` (TRL ``GRPOTrainer``, CPU).

    Each run starts from the same weights and seed. Per run: ``curve`` (step, held-out greedy
    accuracy), ``calls`` (per reward call: the mean reward, the true accuracy of the completions
    it scored, and the mean reward of the right and of the wrong ones) and ``seconds``. Written to ``out_dir/grpo_compare.json``.
    """
    out = Path(out_dir)
    results = {}
    for name, fn in rewards.items():
        results[name] = _grpo_run(
            str(policy), _Recorded(fn, name), train, heldout, settings, out / name
        )
    (out / "grpo_compare.json").write_text(json.dumps(results))
    return results


def scalar_reward(
    scorer: ScalarScorer, pairs: Sequence[PreferencePair]
) -> Callable[..., list[float]]:
    """A TRL reward from :class:`ScalarScorer`; the dataset's ``pair_id`` column finds the image."""
    return _ScalarReward(scorer, {p.id: p for p in pairs})


# ------------------------------------------------------------------------- cached artifacts
