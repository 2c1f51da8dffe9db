"""TRL: the judge as a ``GRPOTrainer`` reward function (sync or async, local model or HTTP).

TRL calls a reward function as ``fn(prompts=..., completions=..., completion_ids=..., **columns)``
with one row per completion (the ``num_generations`` completions of a prompt are rows with the
same prompt) and the dataset's other columns as lists; it expects one float per row.
:class:`JudgeReward` answers it with the judge's own probabilities (:mod:`r1reward.verdicts`):

``mode="group"`` (default)
    rows with the same question and images form a group; its candidates are ranked with all
    pairs in both orders (``G (G - 1)`` judgments per group) and each gets its Bradley-Terry
    strength (``group_score="bradley_terry"``, logit units, mean 0 per group) or its win rate
    (``"win_rate"``, in ``[0, 1]``).
``mode="reference"``
    each completion is judged against the row's reference answer (the ``reference_column``
    column, default ``"reference"``) in both orders: reward = P(completion better), in ``[0, 1]``.

Backends: ``JudgeReward(url="http://127.0.0.1:8000")`` posts to ``r1reward serve`` (concurrent
requests share the server's batches); ``JudgeReward(scorer=...)`` or ``JudgeReward(model=PATH)``
judges in this process (:class:`r1reward.verdicts.ModelVerdicts`). :class:`AsyncJudgeReward` is
the same as a coroutine: TRL then awaits it on its event-loop thread beside other async rewards.

Example (the judge served on this machine; ``dataset`` has ``prompt`` and ``image`` columns)::

    # shell: r1reward serve --model runs/r1-reward --port 8000
    from trl import GRPOConfig, GRPOTrainer
    from r1reward.integrations.trl import JudgeReward

    trainer = GRPOTrainer(model=policy, reward_funcs=[JudgeReward(url="http://127.0.0.1:8000")],
                          args=GRPOConfig(num_generations=4, ...), train_dataset=dataset,
                          processing_class=processor)
    trainer.train()

The question the judge sees is the text of the prompt's last user turn; images come from the
``images`` column (a list per row) or the ``image`` column (one per row), when present.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from r1reward.serve.client import GROUP, REFERENCE, RewardClient
from r1reward.verdicts import VerdictScorer, rank_groups, score_pairs

__all__ = [
    "JudgeReward",
    "AsyncJudgeReward",
    "completion_text",
    "cpu_grpo_config",
    "message_text",
]

MODES = ("group", "reference")
GROUP_SCORES = ("bradley_terry", "win_rate")


def message_text(item: Any) -> str:
    """The text of a TRL prompt: a string, or the last user message of a conversation (its
    content a string or a list of parts, of which the text parts are joined)."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        item = [item]
    if isinstance(item, list) and item and isinstance(item[-1], dict):
        users = [m for m in item if m.get("role") == "user"]
        content = (users[-1] if users else item[-1]).get("content", "")
        if isinstance(content, str):
            return content
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    raise TypeError(f"expected a string or a list of chat messages, got {type(item).__name__}")


def completion_text(item: Any) -> str:
    if isinstance(item, list) and item and isinstance(item[-1], dict):
        content = item[-1].get("content", "")
        if isinstance(content, str):
            return content
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return message_text(item)


def _fingerprint(image: Any) -> str:
    if isinstance(image, str):
        return image
    tobytes = getattr(image, "tobytes", None)
    if callable(tobytes):
        return f"{getattr(image, 'size', '')}:{hashlib.sha1(tobytes()).hexdigest()}"
    return repr(image)


class JudgeReward:
    """A TRL reward function from a pairwise judge (see the module docstring).

    Args:
        url: base URL of ``r1reward serve`` (HTTP backend, through
            :class:`r1reward.serve.client.RewardClient`; the API key from ``$R1REWARD_API_KEY``).
        scorer: a :class:`r1reward.verdicts.VerdictScorer` (local backend), or
        model: a model folder to load into a :class:`r1reward.verdicts.ModelVerdicts`
            (``max_new_tokens`` sets its judgment budget).
        mode: ``"group"`` or ``"reference"``.
        group_score: ``"bradley_terry"`` or ``"win_rate"`` (group mode).
        reference_column: the dataset column with the reference answers (reference mode).
        k: judgments per order (greedy when 1).
        name: the name TRL logs the reward under (``rewards/{name}/mean``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        scorer: VerdictScorer | None = None,
        model: str | None = None,
        mode: str = "group",
        group_score: str = "bradley_terry",
        reference_column: str = "reference",
        k: int = 1,
        max_new_tokens: int = 256,
        timeout: float = 600.0,
        concurrency: int = 16,
        name: str = "r1reward_judge",
    ) -> None:
        if sum(x is not None for x in (url, scorer, model)) != 1:
            raise ValueError("JudgeReward: give exactly one of url=, scorer= or model=")
        if mode not in MODES:
            raise ValueError(f"JudgeReward: mode must be one of {MODES}, got {mode!r}")
        if group_score not in GROUP_SCORES:
            raise ValueError(
                f"JudgeReward: group_score must be one of {GROUP_SCORES}, got {group_score!r}"
            )
        if model is not None:
            from r1reward.models import load_model
            from r1reward.verdict_scorers import ModelVerdicts

            loaded, processor = load_model(model)
            scorer = ModelVerdicts(loaded, processor, max_new_tokens=max_new_tokens)
        self.client = RewardClient(url, timeout=timeout, concurrency=concurrency) if url else None
        self.scorer = scorer
        self.mode = mode
        self.group_score = group_score
        self.reference_column = reference_column
        self.k = int(k)
        self.__name__ = name

    # ------------------------------------------------------------------------- the rows
    def _rows(
        self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: dict[str, Any]
    ) -> list[dict]:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"JudgeReward: {len(prompts)} prompts but {n} completions")
        images: list[list[Any]] = [[] for _ in range(n)]
        if kwargs.get("images") is not None:
            images = [list(x) if isinstance(x, list | tuple) else [x] for x in kwargs["images"]]
        elif kwargs.get("image") is not None:
            images = [[x] if x is not None else [] for x in kwargs["image"]]
        refs: list[Any] = [None] * n
        if self.mode == "reference":
            if self.reference_column not in kwargs:
                columns = sorted(
                    k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric")
                )
                raise KeyError(
                    f"JudgeReward(mode='reference'): no column {self.reference_column!r} among the "
                    f"dataset columns {columns}; set reference_column="
                )
            refs = list(kwargs[self.reference_column])
            for i, ref in enumerate(refs):
                if not isinstance(ref, str):
                    raise ValueError(
                        f"JudgeReward: row {i}: {self.reference_column} is {ref!r}; expected a string"
                    )
        rows = []
        for i in range(n):
            question = message_text(prompts[i])
            key = (question, refs[i], tuple(_fingerprint(im) for im in images[i]))
            rows.append(
                {
                    "question": question,
                    "completion": completion_text(completions[i]),
                    "reference": refs[i],
                    "images": images[i],
                    "key": key,
                }
            )
        return rows

    @staticmethod
    def _groups(rows: list[dict]) -> list[list[int]]:
        groups: dict[Any, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row["key"], []).append(i)
        return list(groups.values())

    def _requests(self, rows: list[dict], groups: list[list[int]]) -> list[tuple[str, dict]]:
        client = self.client
        assert client is not None
        out = []
        for members in groups:
            first = rows[members[0]]
            responses = [rows[i]["completion"] for i in members]
            if self.mode == "group":
                body = client.group_body(first["question"], responses, first["images"], k=self.k)
                out.append((GROUP, body))
            else:
                body = client.reference_body(
                    first["question"], responses, first["reference"], first["images"], k=self.k
                )
                out.append((REFERENCE, body))
        return out

    def _from_answers(
        self, n: int, groups: list[list[int]], answers: Sequence[dict]
    ) -> list[float]:
        rewards = [0.0] * n
        field = (
            "scores"
            if self.mode == "reference" or self.group_score == "bradley_terry"
            else "win_rates"
        )
        for members, answer in zip(groups, answers):
            for i, value in zip(members, answer[field]):
                rewards[i] = float(value)
        return rewards

    def _local(self, rows: list[dict], groups: list[list[int]]) -> list[dict]:
        assert self.scorer is not None
        if self.mode == "group":
            results = rank_groups(
                self.scorer,
                [(rows[m[0]]["question"], [rows[i]["completion"] for i in m]) for m in groups],
                images=[rows[m[0]]["images"] for m in groups],
                k=self.k,
            )
            return [r.to_dict() for r in results]
        pairs = [
            (rows[i]["question"], rows[i]["completion"], rows[i]["reference"])
            for m in groups
            for i in m
        ]
        scored = iter(
            score_pairs(
                self.scorer, pairs, images=[rows[i]["images"] for m in groups for i in m], k=self.k
            )
        )
        out = []
        for m in groups:
            results = [next(scored) for _ in m]
            out.append(
                {"scores": [r.score for r in results], "order_gaps": [r.order_gap for r in results]}
            )
        return out

    @staticmethod
    def _log_gaps(kwargs: dict[str, Any], answers: Sequence[dict]) -> None:
        """Report the mean order gap of this batch through TRL's ``log_metric`` when given."""
        log_metric = kwargs.get("log_metric")
        if not callable(log_metric):
            return
        gaps: list[float] = []
        for answer in answers:
            if "gap_matrix" in answer:
                m = answer["gap_matrix"]
                gaps += [m[i][j] for i in range(len(m)) for j in range(i + 1, len(m))]
            else:
                gaps += [g for g in answer.get("order_gaps", []) if g is not None]
        if gaps:
            log_metric("r1reward/order_gap", sum(gaps) / len(gaps))

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        rows = self._rows(prompts, completions, kwargs)
        groups = self._groups(rows)
        if self.client is not None:
            answers = self.client.post_many(self._requests(rows, groups))
        else:
            answers = self._local(rows, groups)
        self._log_gaps(kwargs, answers)
        return self._from_answers(len(rows), groups, answers)


class AsyncJudgeReward(JudgeReward):
    """:class:`JudgeReward` as a coroutine (TRL awaits it on its event-loop thread)."""

    async def __call__(  # type: ignore[override]
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        rows = self._rows(prompts, completions, kwargs)
        groups = self._groups(rows)
        if self.client is not None:
            answers = await self.client.apost_many(self._requests(rows, groups))
        else:
            answers = await asyncio.to_thread(self._local, rows, groups)
        self._log_gaps(kwargs, answers)
        return self._from_answers(len(rows), groups, answers)


#: ``GRPOConfig`` fields set for a run on the CPU: TRL's defaults assume a GPU (``bf16=True``),
#: and a small test or book run wants no checkpoints, trackers, dataloader workers or vLLM; one
#: PPO iteration per generated batch, no gradient accumulation, dropout off (so the sampling and
#: the training policy are the same function), and the dataset's image column kept.
CPU_GRPO_DEFAULTS: dict[str, Any] = {
    "use_cpu": True,
    "bf16": False,
    "fp16": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "dataloader_num_workers": 0,
    "gradient_accumulation_steps": 1,
    "steps_per_generation": 1,
    "num_iterations": 1,
    "use_vllm": False,
    "disable_dropout": True,
    "remove_unused_columns": False,
}


def cpu_grpo_config(output_dir: str, **fields: Any) -> Any:
    """A ``trl.GRPOConfig`` for a run on the CPU: :data:`CPU_GRPO_DEFAULTS` under ``fields``
    (the batch, group size, lengths, learning rate, ... of the run; a field given here wins)."""
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(output_dir), **{**CPU_GRPO_DEFAULTS, **fields})
