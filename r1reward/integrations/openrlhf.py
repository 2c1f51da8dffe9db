"""OpenRLHF: the judge as its remote reward model (``--reward.remote_url``).

OpenRLHF's single-turn agent (``openrlhf/utils/agent.py``) posts, per rollout,
``{"query": [prompt + response decoded with special tokens], "prompts": [prompt], "labels":
[label]}`` to ``--reward.remote_url`` (``--remote_rm_url`` in older releases) and reads
``rewards`` (and ``scores``, ``extra_logs``) from the JSON answer; its own
``openrlhf.cli.serve_rm`` answers ``POST /get_reward`` with ``{"rewards", "scores",
"extra_logs"}``. ``r1reward serve`` answers the same path: each response
is judged against its **label, the reference answer**, in both orders, and its reward is
P(response better than reference) in ``[0, 1]`` (:func:`r1reward.verdicts.score_reference`);
``extra_logs`` carries the order gap and the swap-disagreement flag per row.

Launch (the judge on one machine, OpenRLHF pointing at it; the dataset's ``--data.label_key``
column holds the reference answers)::

    r1reward serve --model PATH/TO/R1-Reward --host 0.0.0.0 --port 8000
    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url http://JUDGE:8000/get_reward \\
        --data.label_key reference

OpenRLHF sends no images in this protocol, so the judge then sees the text only.
``--reward.remote_url path/to/file.py`` makes OpenRLHF call ``reward_func(queries, prompts,
labels)`` from that file instead; :func:`reward_func` here is such a function, posting to
``$R1REWARD_URL``.

:func:`split_query` recovers the question and the response from a query: the response is what
follows the prompt (or, when the decoded prompt differs from the prompt string, as with expanded
image tokens, what follows the last ``<|im_start|>assistant``), without trailing special tokens;
the question is the last user turn of a ChatML (Qwen) prompt without its vision placeholders, or
the whole prompt when it has no chat template.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["split_query", "reward_func"]

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
    """``(question, response)`` from an OpenRLHF query and its prompt (see the module docstring).

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


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **_: Any
) -> dict[str, Any]:
    """OpenRLHF's ``--reward.remote_url file.py`` hook: posts to ``$R1REWARD_URL/get_reward``.

    ``R1REWARD_URL`` (default ``http://127.0.0.1:8000``) is the judge's ``r1reward serve``;
    ``R1REWARD_K`` (default 1) judgments per order. Returns the server's ``{"rewards",
    "scores", "extra_logs"}`` with the rewards as a float tensor, as OpenRLHF's example does.
    """
    import httpx
    import torch

    url = os.environ.get("R1REWARD_URL", "http://127.0.0.1:8000").rstrip("/")
    body = {
        "query": list(queries),
        "prompts": list(prompts),
        "labels": list(labels),
        "k": int(os.environ.get("R1REWARD_K", "1")),
    }
    response = httpx.post(f"{url}/get_reward", json=body, timeout=600)
    if response.status_code != 200:
        raise RuntimeError(
            f"{url}/get_reward answered {response.status_code}: {response.text[:300]}"
        )
    out = response.json()
    out["rewards"] = torch.tensor(out["rewards"], dtype=torch.float32)
    out["scores"] = torch.tensor(out["scores"], dtype=torch.float32)
    return out
