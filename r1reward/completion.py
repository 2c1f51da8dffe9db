"""What one sampled completion is, and the pieces every sampling engine shares.

:class:`Completion` is the record that :func:`r1reward.rollout.generate` returns for each sample,
whichever engine produced it (Hugging Face ``generate`` in :mod:`r1reward.rollout`, or the
colocated vLLM engine of :mod:`r1reward.rollout_vllm`). Both engines use the helpers here: the stop
tokens, the images and videos of a conversation, the seed of each batch, and how a generated row
of token ids is cut into a completion. They live in this module, below both engines, so neither
engine imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "STOP_TOKENS",
    "Completion",
    "Conversation",
    "batch_seed",
    "load_visual",
    "split_row",
    "stop_token_ids",
    "tokenizer_of",
    "visuals",
]

Conversation = list[dict[str, Any]]

#: Tokens that end a completion (Qwen2.5-VL's end of turn, and end of text).
STOP_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")


@dataclass(frozen=True)
class Completion:
    """One sampled completion.

    Attributes:
        text: the decoded completion without special tokens (``<think>``/``<answer>`` tags are
            kept: they are ordinary text or non-special tokens).
        token_ids: the generated token ids, including the stop token when ``finish == "stop"``
            (the policy must learn to stop, so the stop token is part of the action sequence),
            without padding.
        prompt_index: index of the conversation it answers, in the list given to
            :func:`r1reward.rollout.generate`.
        finish: ``"stop"`` (a stop token was generated) or ``"length"`` (``max_new_tokens``
            reached).
        logprobs: with ``generate(..., return_logprobs=True)`` (sampling, transformers engine):
            the log-probability of each token of ``token_ids`` under the sampling policy, at the
            sampling temperature over the whole vocabulary (what
            :func:`r1reward.rollout.completion_logprobs` computes from a full forward pass); else ``None``.
    """

    text: str
    token_ids: list[int]
    prompt_index: int
    finish: Literal["stop", "length"]
    logprobs: list[float] | None = None


def tokenizer_of(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def stop_token_ids(processor: Any) -> list[int]:
    """Ids of :data:`STOP_TOKENS` present in the processor's vocabulary."""
    tok = tokenizer_of(processor)
    vocab = tok.get_vocab()
    ids = [vocab[t] for t in STOP_TOKENS if t in vocab]
    if not ids:
        if tok.eos_token_id is None:
            raise ValueError(
                f"tokenizer {type(tok).__name__} has neither {STOP_TOKENS} nor an eos token; "
                "cannot tell where a completion ends"
            )
        ids = [tok.eos_token_id]
    return ids


def load_visual(item: Any) -> Any:
    """PIL images pass through; paths (str/Path) and URLs are opened with transformers'
    ``load_image`` (a URL needs the network: the caller's choice)."""
    if isinstance(item, (str, Path)):
        from transformers.image_utils import load_image

        return load_image(str(item))
    return item


def visuals(conversation: Conversation, index: int) -> tuple[list[Any], list[Any]]:
    images: list[Any] = []
    videos: list[Any] = []
    if not isinstance(conversation, list):
        raise TypeError(
            f"conversation {index}: expected a list of chat messages "
            f"(r1reward.prompt.build_messages output), got {type(conversation).__name__}"
        )
    for m, message in enumerate(conversation):
        content = message.get("content") if isinstance(message, dict) else None
        if content is None:
            raise ValueError(
                f"conversation {index}, message {m}: expected a dict with 'role' and 'content'"
            )
        if isinstance(content, str):
            continue
        for item in content:
            kind = item.get("type")
            if kind == "image" or (kind is None and "image" in item):
                key = next((k for k in ("image", "path", "url") if k in item), None)
                if key is None:
                    raise ValueError(
                        f"conversation {index}, message {m}: image item without an 'image', "
                        f"'path' or 'url' key (got keys {sorted(item)})"
                    )
                images.append(load_visual(item[key]))
            elif kind == "video" or (kind is None and "video" in item):
                key = next((k for k in ("video", "path", "url") if k in item), None)
                if key is None:
                    raise ValueError(
                        f"conversation {index}, message {m}: video item without a 'video', "
                        f"'path' or 'url' key (got keys {sorted(item)})"
                    )
                videos.append(item[key])
    return images, videos


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed of batch ``batch_index`` of a call seeded with ``seed``; calls with nearby seeds
    (step 3 and step 4 of a trainer) never share a batch seed."""
    return (seed * 1_000_003 + batch_index) % (2**63)


def split_row(
    row: list[int], stop_ids: set[int], pad_id: int | None
) -> tuple[list[int], Literal["stop", "length"]]:
    for j, t in enumerate(row):
        if t in stop_ids:
            return row[: j + 1], "stop"
    if pad_id is not None:
        # generate pads finished rows with pad_id; an unfinished row has no padding
        while row and row[-1] == pad_id and pad_id not in stop_ids:
            row = row[:-1]
    return row, "length"
