"""Caption pretraining of the tiny model: the toy's stand-in for vision-language pretraining.

A real Qwen2.5-VL starts pretrained on image-text data; a randomly initialised tiny one does
not, and fine-tuning it on the Table-1 task alone settles on ignoring the image.
:func:`pretrain_tiny_model` therefore runs a short, deterministic caption pretraining on toy
scenes that no preference pair uses (:func:`pretrain_scene`, :func:`scene_caption`), with the
fixed instruction "Describe the image." and never a question, response or label;
:func:`r1reward.toy.tiny_model.build_tiny_model` calls it when ``pretrain_steps > 0``.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from r1reward.rollout import build_batch
from r1reward.toy import world

__all__ = [
    "PRETRAIN_INSTRUCTION",
    "caption_metrics",
    "pretrain_scene",
    "pretrain_tiny_model",
    "reading_metrics",
    "scene_caption",
]

#: The only instruction caption pretraining shows the model (never the Table-1 prompt).
PRETRAIN_INSTRUCTION = "Describe the image."


def scene_caption(truth: dict[str, Any]) -> str:
    """The caption of a toy scene: every visual fact the toy questions ask about.

    Object scenes: the objects as ``shape colour`` ordered by shape (then colour), the same
    objects as ``colour shape`` ordered by colour (then shape), and the count of each shape;
    e.g. ``"circle green, circle red, square blue. blue square, red circle, green circle.
    2 circles, 1 square."`` (shapes in the order of ``world.SHAPES``, colours in the order of
    ``world.COLOURS``). Bar charts: the bars from the tallest to the shortest with colour and
    height in eighths of the plot, then the tallest and the shortest bar; e.g. ``"3 bars:
    green 7, red 5, blue 2. tallest: green. shortest: blue."``.

    Every fact is addressed by content (which shape is which colour, which colour which shape,
    which bar is taller), never by place in the image: with captions in reading order
    ("cell 1: red circle") the tiny model learnt shapes, heights and occupancy in 1200 steps but
    stayed at chance on colours, which it would have to fetch from a given cell. The toy
    questions are all content-addressed too ("what colour is the circle?").
    """
    if truth["task"] == "bars":
        bars = sorted(truth["bars"], key=lambda b: -b["height"])
        listed = ", ".join(f"{b['colour']} {b['height']}" for b in bars)
        top, low = bars[0]["colour"], bars[-1]["colour"]
        return f"{len(bars)} bars: {listed}. tallest: {top}. shortest: {low}."
    shape_rank = {s: i for i, s in enumerate(world.SHAPES)}
    colour_rank = {c: i for i, c in enumerate(world.COLOURS)}
    objs = truth["objects"]
    by_shape = sorted(objs, key=lambda o: (shape_rank[o["shape"]], colour_rank[o["colour"]]))
    by_colour = sorted(objs, key=lambda o: (colour_rank[o["colour"]], shape_rank[o["shape"]]))
    counts = [
        f"{n} {world.PLURAL[s] if n > 1 else s}"
        for s in world.SHAPES
        if (n := sum(o["shape"] == s for o in objs))
    ]
    return (
        ", ".join(f"{o['shape']} {o['colour']}" for o in by_shape)
        + ". "
        + ", ".join(f"{o['colour']} {o['shape']}" for o in by_colour)
        + ". "
        + ", ".join(counts)
        + "."
    )


def _scene_rng(stream: str, seed: int, index: int):
    h = hashlib.sha256(f"r1reward-pretrain|{stream}|{seed}|{index}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def pretrain_scene(
    index: int, *, seed: int = 0, stream: str = "train", image_size: int = world.IMAGE_SIZE
) -> tuple[Any, str, dict[str, Any]]:
    """Scene ``index`` of a caption-pretraining stream: ``(PIL image, caption, truth)``.

    Scenes come from :func:`r1reward.toy.world.random_scene` with a generator seeded from
    ``("r1reward-pretrain", stream, seed, index)``, a stream no preference pair is drawn from
    (pairs use ``"r1reward-toy"``). ``stream="train"`` is what pretraining reads,
    ``stream="eval"`` the held-out scenes its caption accuracy is measured on.

    The background is an off-white tint (each channel 232..255, never pure white) drawn per
    scene, while every toy pair image has a pure white background: a pretraining image can
    therefore never equal a train or held-out pair image, pixel for pixel (pair images can
    coincide by chance across splits; these cannot), and the model also learns not to care
    about the exact background.
    """
    if stream not in ("train", "eval"):
        raise ValueError(f"pretrain_scene: stream={stream!r}; expected 'train' or 'eval'")
    rng = _scene_rng(stream, seed, index)
    truth = world.random_scene(rng)
    while True:
        bg = tuple(rng.randint(232, 255) for _ in range(3))
        if bg != (255, 255, 255):
            break
    pixels = np.array(world.render(truth, image_size))
    white = (pixels == 255).all(axis=-1)
    pixels[white] = bg
    return Image.fromarray(pixels), scene_caption(truth), truth


def _caption_batch(processor: Any, scenes: list[tuple[Any, str, Any]]) -> tuple[Any, Any]:
    """``build_batch`` tensors for ``[Describe the image.] -> caption<|im_end|>`` rows."""
    tok = getattr(processor, "tokenizer", processor)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    convs = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": img},
                    {"type": "text", "text": PRETRAIN_INSTRUCTION},
                ],
            }
        ]
        for img, _, _ in scenes
    ]
    targets = [tok.encode(cap, add_special_tokens=False) + [end] for _, cap, _ in scenes]
    return build_batch(processor, convs, targets)


def _caption_loss(model: Any, batch: Any, mask: Any, facts: Any = None) -> tuple[Any, Any, Any]:
    """Mean next-token cross-entropy over caption tokens, and argmax hits and token counts per
    row ``(B,)``; with ``facts`` (a 1-D tensor of token ids) hits and counts are pairs
    ``(all caption tokens, fact tokens)``. ``batch``: ``input_ids``/``attention_mask``
    ``(B, T)`` + image tensors; ``mask`` ``(B, T)`` 1 on caption tokens."""
    first = int(mask.any(dim=0).nonzero()[0])
    keep = mask.shape[1] - first + 1
    logits = model(**batch, logits_to_keep=keep).logits[:, :-1].float()  # (B, T-first, V)
    targets = batch["input_ids"][:, first:]
    m = mask[:, first:].float()
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets, reduction="none"
    )  # (B, T-first)
    loss = (nll * m).sum() / m.sum()
    right = (logits.argmax(-1) == targets).float()
    if facts is None:
        return loss, (right * m).sum(dim=1), m.sum(dim=1)
    mf = m * torch.isin(targets, facts.to(targets.device)).float()
    return loss, ((right * m).sum(1), (right * mf).sum(1)), (m.sum(1), mf.sum(1))


def caption_metrics(
    model: Any,
    processor: Any,
    *,
    n: int = 64,
    seed: int = 0,
    image_size: int = world.IMAGE_SIZE,
    batch_size: int = 32,
) -> dict[str, float]:
    """Teacher-forced caption loss and accuracy on ``n`` held-out pretraining scenes.

    Returns ``{"loss", "token_accuracy", "fact_accuracy", "caption_accuracy"}``: mean
    cross-entropy per caption token, share of caption tokens whose argmax is right, the same
    share over the *fact* tokens only (colour and shape words, digits: what a model that does
    not read the image can only guess; the caption's fixed wording is easy), and share of
    captions whose every token is right (``stream="eval"`` scenes, never trained on).
    """
    scenes = [pretrain_scene(i, seed=seed, stream="eval", image_size=image_size) for i in range(n)]
    facts = torch.tensor(sorted(_fact_token_ids(processor)))
    was_training = model.training
    model.eval()
    tot_loss = tot_tok = tot_hit = exact = fact_hit = fact_tok = 0.0
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                chunk = scenes[start : start + batch_size]
                batch, mask = _caption_batch(processor, chunk)
                batch = batch.to(model.device)
                mask = mask.to(model.device)
                loss, hits, count = _caption_loss(model, batch, mask, facts=facts)
                tot_loss += float(loss) * float(count[0].sum())
                tot_tok += float(count[0].sum())
                tot_hit += float(hits[0].sum())
                exact += float((hits[0] == count[0]).sum())
                fact_hit += float(hits[1].sum())
                fact_tok += float(count[1].sum())
    finally:
        model.train(was_training)
    return {
        "loss": tot_loss / tot_tok,
        "token_accuracy": tot_hit / tot_tok,
        "fact_accuracy": fact_hit / max(fact_tok, 1.0),
        "caption_accuracy": exact / n,
    }


def _fact_token_ids(processor: Any) -> set[int]:
    """Vocabulary ids whose text (spaces stripped) is a toy colour, shape (or plural) or digit."""
    tok = getattr(processor, "tokenizer", processor)
    words = set(world.COLOURS) | set(world.SHAPES) | set(world.PLURAL.values()) | set("0123456789")
    return {
        i for t, i in tok.get_vocab().items() if tok.convert_tokens_to_string([t]).strip() in words
    }


def _text_batch(processor: Any, seed: int, index: int, n: int) -> tuple[Any, Any]:
    """``(input_ids, mask)`` ``(n, T)`` for ``n`` analysis texts of the text stream (right-padded;
    ``mask`` 1 on real tokens). Stream ``("r1reward-pretrain-text", seed, index)``: no pair."""
    rng = random.Random(f"r1reward-pretrain-text|{seed}|{index}")
    _, ids, mask = _encode_texts(processor, [world.random_analysis(rng) for _ in range(n)])
    return ids, mask


def _encode_texts(processor: Any, texts: Sequence[str]) -> tuple[list[list[int]], Any, Any]:
    """Token ids of ``texts`` (no special tokens) and the right-padded ``(ids, mask)``
    ``(len(texts), T)`` tensors, ``mask`` 1 on real tokens."""
    tok = getattr(processor, "tokenizer", processor)
    rows = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return rows, ids, mask


def _text_loss(model: Any, ids: Any, mask: Any) -> Any:
    """Mean next-token cross-entropy over the real tokens of a text batch (no image)."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    m = mask[:, 1:].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return (nll * m).sum() / m.sum()


def reading_metrics(model: Any, processor: Any, *, n: int = 256, seed: int = 0) -> dict[str, float]:
    """How well the model reads an analysis: on ``n`` held-out texts of the text stream
    (:func:`r1reward.toy.world.random_analysis`, indices never trained on), the teacher-forced
    argmax accuracy of its decision words, which follow from the words before them.

    ``first_mark_accuracy`` is the one that needs reading: "right"/"wrong" after Response 1's
    claim, i.e. whether that claim equals the observation (chance 0.5). The second mark is the
    opposite of the first, and the verdict digit names the response called right.

    Returns ``{"first_mark_accuracy", "second_mark_accuracy", "verdict_accuracy", "n"}``.
    """
    tok = getattr(processor, "tokenizer", processor)
    rng = random.Random(f"r1reward-pretrain-text-eval|{seed}")
    marks = {tok.encode(f" {w}", add_special_tokens=False)[0] for w in ("right", "wrong")}
    digits = {tok.encode(f" {d}", add_special_tokens=False)[0] for d in "12"}
    hits = [0, 0, 0]
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, n, 64):
                texts = [world.random_analysis(rng) for _ in range(min(64, n - start))]
                rows, ids, mask = _encode_texts(processor, texts)
                logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
                pred = logits[:, :-1].argmax(-1).cpu()
                for i, r in enumerate(rows):
                    mark_pos = [t for t in range(1, len(r)) if r[t] in marks][:2]
                    verdict_pos = max(t for t in range(1, len(r)) if r[t] in digits)
                    for k, t in enumerate([*mark_pos, verdict_pos]):
                        hits[k] += int(pred[i, t - 1] == r[t])
    finally:
        model.train(was_training)
    return {
        "first_mark_accuracy": hits[0] / n,
        "second_mark_accuracy": hits[1] / n,
        "verdict_accuracy": hits[2] / n,
        "n": n,
    }


def pretrain_tiny_model(
    model: Any,
    processor: Any,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    image_size: int = world.IMAGE_SIZE,
    progress: bool = False,
    eval_scenes: int = 64,
    vision_lr_scale: float = 0.0,
    text_batch_size: int = 0,
) -> dict[str, Any]:
    """Caption pretraining of the tiny model, in place: the toy's vision-language pretraining.

    A real Qwen2.5-VL is pretrained on image-text data before anyone fine-tunes it into a
    reward model; a randomly initialised tiny one is not, and SFT on the Table-1 task alone
    settles on ignoring the image. This stage gives it the same start at toy scale: for
    ``steps`` steps, ``batch_size`` fresh scenes of the ``stream="train"`` pretraining stream
    (:func:`pretrain_scene`, disjoint from every preference pair) are shown in a chat turn
    ``[image] Describe the image.`` and the model (vision tower and language model) learns the
    caption (:func:`scene_caption`) followed by ``<|im_end|>``; the loss is the mean
    cross-entropy over those caption tokens only (prompt tokens carry no loss). AdamW, linear
    warm-up over the first 5 % of steps then cosine decay to 10 % of ``lr``, gradient norm
    clipped at 1. Deterministic for a given ``seed`` and thread count.

    With ``text_batch_size > 0`` every step also reads that many analysis-shaped texts
    (:func:`r1reward.toy.world.random_analysis`: no image, no preference pair of any split) with
    the language-modelling loss on every token, added to the caption loss: the toy's stand-in for
    the text a real model reads in pretraining, where it learns to compare two words and copy a
    conclusion. The SFT pairs alone did not teach the tiny model that step (its "right"/"wrong"
    stayed near chance even after a correct observation; see the cold-start chapter).

    Returns:
        ``{"steps", "seconds", "first_loss", "last_loss", "log": [{"step", "loss"}, ...],
        "heldout": caption_metrics(...) before and after}`` (``"heldout_before"``,
        ``"heldout"``); with text, ``"reading_before"``/``"reading"`` too
        (:func:`reading_metrics`).
    """
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"pretrain_tiny_model: steps={steps}, batch_size={batch_size}, lr={lr}; expected "
            "steps >= 1, batch_size >= 1, lr > 0"
        )
    t0 = time.perf_counter()
    before = caption_metrics(model, processor, n=eval_scenes, seed=seed, image_size=image_size)
    reading_before = reading_metrics(model, processor, seed=seed) if text_batch_size else None
    vision, text = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (vision if ".visual." in f".{name}" else text).append(p)
    frozen = vision if vision_lr_scale == 0 else []
    params = text + (vision if vision_lr_scale > 0 else [])
    groups = [{"params": text, "lr": lr}]
    if vision_lr_scale > 0:
        groups.append({"params": vision, "lr": lr * vision_lr_scale})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    log: list[dict[str, float]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="caption pretraining", unit="step")
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for step in range(steps):
                scenes = [
                    pretrain_scene(step * batch_size + i, seed=seed, image_size=image_size)
                    for i in range(batch_size)
                ]
                batch, mask = _caption_batch(processor, scenes)
                loss, _, _ = _caption_loss(model, batch.to(device), mask.to(device))
                if text_batch_size:
                    ids, tmask = _text_batch(processor, seed, step, text_batch_size)
                    loss = loss + _text_loss(model, ids.to(device), tmask.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                log.append({"step": step + 1, "loss": round(float(loss.detach()), 5)})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=log[-1]["loss"])
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(True)
        if bar is not None:
            bar.close()
    after = caption_metrics(model, processor, n=eval_scenes, seed=seed, image_size=image_size)
    tail = log[-max(1, steps // 10) :]
    reading = (
        {"reading_before": reading_before, "reading": reading_metrics(model, processor, seed=seed)}
        if text_batch_size
        else {}
    )
    return {
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "seconds": round(time.perf_counter() - t0, 2),
        "first_loss": log[0]["loss"],
        "last_loss": round(sum(r["loss"] for r in tail) / len(tail), 5),
        "heldout_before": before,
        "heldout": after,
        **reading,
        "text_batch_size": int(text_batch_size),
        "log": log,
    }
