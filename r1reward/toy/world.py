"""The toy multimodal preference world: small rendered scenes, two answers, one is visually wrong.

This is the CPU-scale stand-in for the paper's training data (R1-Reward-RL, §4.1): every pair has
an image, a question, two responses that differ in exactly one visual fact, a label, a category
(general / hallucination / reasoning, as in VL-RewardBench), a visual difficulty 1..3 and a short
teacher analysis in the Table-1 format (``meta["teacher_analysis"]``) that ends with
"Response N is better.".

Design rules (checked by tests/test_toy.py):

* **The image is needed.** Both responses come from the same template with the fact swapped, the
  true and the false fact are drawn symmetrically (an unordered pair of values, then a coin decides
  which one the image shows), and a second coin decides which is Response 1. So length, word overlap
  with the question, position and wording carry no information about the label.
* **Deterministic and splittable.** Pair ``i`` of ``make_pairs(n, seed=s, split=t)`` is drawn from
  ``random.Random(sha256("t|s|i|attempt"))``; and a pair is only accepted into a split if the hash
  of its content (image pixels, question, the unordered responses) falls into that split's bucket. So a
  held-out pair can never equal a training pair, whatever seeds are used.
* **Legible at 56 px, learnable in minutes.** White background, at most four large saturated
  shapes on a 2x2 grid whose 28-px cells are exactly the four merged visual tokens of the tiny
  Qwen2.5-VL (14-px patches, 2x2 merge), or two to four bars. A first version used a 3x3 grid of
  ~15-px shapes: the ~1M-parameter model could not learn even "what colour is the circle?" from it
  in hundreds of steps, while ~24-px shapes are learnt in about a hundred.

Tasks (category: task) and what difficulty 1 / 2 / 3 changes:
    general: ``colour`` (what colour is the S?), ``shape`` (what shape is the C object?) —
        0 / 1 / 2 distractor objects; at 3 a distractor shows the falsely claimed colour (shape).
    hallucination: ``count`` (how many S are there?, 2 or 3) — 0 / 1 / 1 distractors of other
        shapes (as many as fit in the four cells), at 3 in the colour of a counted object; ``exists`` (what is in the image?) — the
        hallucinated object differs from the real one in colour and shape / colour / shape.
    reasoning: ``bars`` (which bar is the tallest/shortest?) — 2 / 3 / 4 bars, the runner-up
        3 / 2 / 1 eighths of the plot height away; ``total`` (how many S and T in total?, 2 to 4)
        — one colour / mixed colours / plus a distractor where a cell is free.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from PIL import Image, ImageDraw

from r1reward.data.schema import PreferencePair
from r1reward.prompt import build_prompt

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 160, 40),
    "blue": (20, 60, 230),
    "yellow": (245, 205, 0),
    "purple": (140, 30, 190),
    "orange": (255, 130, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
PLURAL = {s: s + "s" for s in SHAPES}
CATEGORIES: dict[str, tuple[str, ...]] = {
    "general": ("colour", "shape"),
    "hallucination": ("count", "exists"),
    "reasoning": ("bars", "total"),
}
SPLITS = ("train", "heldout")
#: Bump when a seed no longer gives the same pairs or texts, so caches built from the toy (the
#: tiny tokenizer, curated traces) are rebuilt. 2: the 2x2 grid and the judged-in-place analysis.
#: 3: every observation sentence ends with the observed value.
TOY_VERSION = 3
GRID = 2  # objects sit in the cells of a GRID x GRID grid (one merged visual token each)
#: Side of a toy image in pixels: GRID x GRID cells of 28 px, the four merged visual tokens of
#: the tiny Qwen2.5-VL (:mod:`r1reward.toy.tiny_model`: 14-px patches merged 2x2).
IMAGE_SIZE = 56
_VERDICT = re.compile(r"Response ([12]) is better\.?\s*$")


# ----------------------------------------------------------------------------------------------
# sampling: each task returns (truth, question, true_claim, false_claim)
# a "claim" is the one visual fact a response asserts; responses are rendered from claims


def _cells(rng: random.Random, k: int) -> list[int]:
    return rng.sample(range(GRID * GRID), k)


def _obj(shape: str, colour: str, cell: int, rng: random.Random) -> dict[str, Any]:
    # jitter and size in grid units (fractions of a cell); rendering scales to image_size
    return {
        "shape": shape,
        "colour": colour,
        "cell": cell,
        "size": round(rng.uniform(0.78, 0.9), 3),
        "dx": round(rng.uniform(-0.06, 0.06), 3),
        "dy": round(rng.uniform(-0.06, 0.06), 3),
    }


def _pair_of(rng: random.Random, values: list[Any]) -> tuple[Any, Any]:
    """An unordered pair of distinct values, then a coin: (shown in the image, claimed falsely)."""
    a, b = rng.sample(values, 2)
    return (a, b) if rng.random() < 0.5 else (b, a)


def _task_colour(rng: random.Random, d: int) -> tuple[dict, str, str, str]:
    shape = rng.choice(SHAPES)
    true_c, false_c = _pair_of(rng, list(COLOURS))
    others = [s for s in SHAPES if s != shape]
    n_dis = d - 1  # 0, 1, 2 distractors of other shapes
    cells = _cells(rng, 1 + n_dis)
    objs = [_obj(shape, true_c, cells[0], rng)]
    for j, s in enumerate(rng.sample(others, n_dis)):
        # at difficulty 3 one distractor wears the false colour: "is red present?" is not enough
        c = false_c if (d == 3 and j == 0) else rng.choice([c for c in COLOURS if c != false_c])
        objs.append(_obj(s, c, cells[1 + j], rng))
    truth = {"task": "colour", "objects": objs, "target": shape}
    return truth, f"What colour is the {shape}?", true_c, false_c


def _task_shape(rng: random.Random, d: int) -> tuple[dict, str, str, str]:
    colour = rng.choice(list(COLOURS))
    true_s, false_s = _pair_of(rng, list(SHAPES))
    others = [c for c in COLOURS if c != colour]
    n_dis = d - 1
    cells = _cells(rng, 1 + n_dis)
    objs = [_obj(true_s, colour, cells[0], rng)]
    for j, c in enumerate(rng.sample(others, n_dis)):
        s = false_s if (d == 3 and j == 0) else rng.choice([s for s in SHAPES if s != false_s])
        objs.append(_obj(s, c, cells[1 + j], rng))
    truth = {"task": "shape", "objects": objs, "target": colour}
    return truth, f"What shape is the {colour} object?", true_s, false_s


def _task_count(rng: random.Random, d: int) -> tuple[dict, str, str, str]:
    shape = rng.choice(SHAPES)
    lo = 2  # claims {2, 3}: both numbers equally often true
    k, wrong = (lo, lo + 1) if rng.random() < 0.5 else (lo + 1, lo)
    n_dis = min({1: 0, 2: 1, 3: 1}[d], GRID * GRID - k)
    cells = _cells(rng, k + n_dis)
    colour = rng.choice(list(COLOURS))
    objs = []
    for i in range(k):
        # difficulty 1: all the same colour; 2-3: mixed colours
        c = colour if d == 1 else rng.choice(list(COLOURS))
        objs.append(_obj(shape, c, cells[i], rng))
    others = [s for s in SHAPES if s != shape]
    for j in range(n_dis):
        # difficulty 3: each distractor wears the colour of one of the counted objects
        c = rng.choice(objs)["colour"] if d == 3 else rng.choice(list(COLOURS))
        objs.append(_obj(rng.choice(others), c, cells[k + j], rng))
    rng.shuffle(objs)
    truth = {"task": "count", "objects": objs, "target": shape}
    return truth, f"How many {PLURAL[shape]} are there?", str(k), str(wrong)


def _task_exists(rng: random.Random, d: int) -> tuple[dict, str, str, str]:
    a_shape, b_shape = rng.sample(SHAPES, 2)
    a_col = rng.choice(list(COLOURS))
    cols = [c for c in COLOURS if c != a_col]
    # the object in the image (B) and the hallucinated one (C): an unordered pair, then a coin
    if d == 1:  # B and C differ in colour and shape
        c_shape = rng.choice([s for s in SHAPES if s not in (a_shape, b_shape)])
        b_col, c_col = rng.sample(cols, 2)
        pair = [(b_shape, b_col), (c_shape, c_col)]
    elif d == 2:  # same shape, different colour
        b_col, c_col = rng.sample(cols, 2)
        pair = [(b_shape, b_col), (b_shape, c_col)]
    else:  # same colour, different shape
        c_shape = rng.choice([s for s in SHAPES if s not in (a_shape, b_shape)])
        b_col = rng.choice(cols)
        pair = [(b_shape, b_col), (c_shape, b_col)]
    if rng.random() < 0.5:
        pair.reverse()
    (bs, bc), (cs, cc) = pair
    cells = _cells(rng, 2)
    objs = [_obj(a_shape, a_col, cells[0], rng), _obj(bs, bc, cells[1], rng)]
    first = rng.random() < 0.5  # is the shared object mentioned first?
    truth = {"task": "exists", "objects": objs, "shared": [a_col, a_shape], "first": first}

    def claim(col: str, shp: str) -> str:
        return f"{col} {shp}"

    return truth, "What is in the image?", claim(bc, bs), claim(cc, cs)


def _task_bars(rng: random.Random, d: int) -> tuple[dict, str, str, str]:
    n = {1: 2, 2: 3, 3: 4}[d]
    cols = rng.sample(list(COLOURS), n)
    gap = {1: 3, 2: 2, 3: 1}[d]  # height gap (in units of 1/8 of the plot) between top two
    which = rng.choice(["tallest", "shortest"])
    # heights in eighths: the extreme bar, the runner-up at distance `gap`, the rest beyond it
    if which == "tallest":
        top = rng.randint(2 + gap, 8)
        hs = [top, top - gap] + [rng.randint(1, top - gap) for _ in range(n - 2)]
    else:
        low = rng.randint(1, 7 - gap)
        hs = [low, low + gap] + [rng.randint(low + gap, 8) for _ in range(n - 2)]
    order = list(range(n))
    rng.shuffle(order)
    bars = [{"colour": cols[i], "height": hs[i]} for i in order]
    truth = {"task": "bars", "bars": bars, "which": which}
    # the false claim is the runner-up's colour (a bar that is really there)
    return truth, f"Which bar is the {which}?", cols[0], cols[1]


def _task_total(rng: random.Random, d: int) -> tuple[dict, str, str, str]:
    s1, s2 = rng.sample(SHAPES, 2)
    lo = rng.choice([2, 3])
    t, wrong = (lo, lo + 1) if rng.random() < 0.5 else (lo + 1, lo)
    a = rng.randint(1, t - 1)
    n_dis = min({1: 0, 2: 0, 3: 1}[d], GRID * GRID - t)
    cells = _cells(rng, t + n_dis)
    colour = rng.choice(list(COLOURS))
    objs = []
    for i in range(t):
        c = colour if d == 1 else rng.choice(list(COLOURS))
        objs.append(_obj(s1 if i < a else s2, c, cells[i], rng))
    others = [s for s in SHAPES if s not in (s1, s2)]
    for j in range(n_dis):
        objs.append(_obj(rng.choice(others), rng.choice(list(COLOURS)), cells[t + j], rng))
    rng.shuffle(objs)
    truth = {"task": "total", "objects": objs, "target": [s1, s2]}
    q = f"How many {PLURAL[s1]} and {PLURAL[s2]} are there in total?"
    return truth, q, str(t), str(wrong)


def random_scene(rng: random.Random) -> dict[str, Any]:
    """A scene with no question: the truth dict :func:`render` draws, for caption pretraining.

    Half the time an object scene (``{"task": "scene", "objects": [...]}``: 1 to 4 objects in
    distinct cells of the grid, each shape and colour drawn independently, sizes and jitter as in
    the pair scenes), otherwise a bar chart (``{"task": "bars", "bars": [...]}``: 2 to 4 bars of
    distinct colours and distinct heights 1..8, so the tallest and shortest bar are unique).
    Draws only from ``rng``; callers give it a stream of their own (not a pair stream).
    """
    if rng.random() < 0.5:
        k = rng.randint(1, GRID * GRID)
        cells = sorted(_cells(rng, k))
        objs = [_obj(rng.choice(SHAPES), rng.choice(list(COLOURS)), c, rng) for c in cells]
        return {"task": "scene", "objects": objs}
    n = rng.randint(2, 4)
    cols = rng.sample(list(COLOURS), n)
    heights = rng.sample(range(1, 9), n)
    return {"task": "bars", "bars": [{"colour": c, "height": h} for c, h in zip(cols, heights)]}


_TASKS = {
    "colour": _task_colour,
    "shape": _task_shape,
    "count": _task_count,
    "exists": _task_exists,
    "bars": _task_bars,
    "total": _task_total,
}


# ----------------------------------------------------------------------------------------------
# responses and analyses: one template per task, the claim is the only slot that differs


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def response_text(truth: dict[str, Any], claim: str) -> str:
    """The response that asserts ``claim`` for the scene's task (same template for both answers)."""
    task = truth["task"]
    if task == "colour":
        return f"The {truth['target']} is {claim}."
    if task == "shape":
        return f"The {truth['target']} object is {_article(claim)} {claim}."
    if task == "count":
        return f"There are {claim} {PLURAL[truth['target']]}."
    if task == "exists":
        col, shp = truth["shared"]
        shared = f"{_article(col)} {col} {shp}"
        other = f"{_article(claim)} {claim}"
        a, b = (shared, other) if truth["first"] else (other, shared)
        return f"There is {a} and {b}."
    if task == "bars":
        return f"The {claim} bar is the {truth['which']}."
    if task == "total":
        return f"There are {claim} in total."
    raise ValueError(f"unknown toy task {task!r}")


def true_claim(truth: dict[str, Any]) -> str:
    """The fact a correct response must assert, computed from the scene itself (the image's ground truth)."""
    task = truth["task"]
    objs = truth.get("objects", [])
    if task == "colour":
        return next(o["colour"] for o in objs if o["shape"] == truth["target"])
    if task == "shape":
        return next(o["shape"] for o in objs if o["colour"] == truth["target"])
    if task == "count":
        return str(sum(o["shape"] == truth["target"] for o in objs))
    if task == "exists":
        shared = tuple(truth["shared"])
        other = next(o for o in objs if (o["colour"], o["shape"]) != shared)
        return f"{other['colour']} {other['shape']}"
    if task == "bars":
        pick = max if truth["which"] == "tallest" else min
        return pick(truth["bars"], key=lambda b: b["height"])["colour"]
    if task == "total":
        return str(sum(o["shape"] in truth["target"] for o in objs))
    raise ValueError(f"unknown toy task {task!r}")


def _claims(pair: PreferencePair) -> tuple[str, str]:
    """The claims of response 1 and response 2 (read back from their text, so swap-proof)."""
    truth = pair.meta["truth"]
    cands = truth["claims"]
    out = []
    for text in (pair.response_1, pair.response_2):
        hit = [c for c in cands if response_text(truth, c) == text]
        if len(hit) != 1:
            raise ValueError(f"toy pair {pair.id}: response {text!r} matches no toy template")
        out.append(hit[0])
    return out[0], out[1]


def _observation(truth: dict[str, Any], claim: str) -> str:
    """What the analysis says it sees, consistent with ``claim`` (the fact it argues for).

    Every task's sentence ends with the claim, so in the analysis the observed value always sits
    the same few words before the first "which is right/wrong": a comparison at a fixed distance,
    which the tiny model learns (with the observed value in different places per task it did not).
    """
    task = truth["task"]
    if task == "colour":
        return f"The {truth['target']} in the image is {claim}."
    if task == "shape":
        return f"The {truth['target']} object in the image is {_article(claim)} {claim}."
    if task == "count":
        return f"The number of {PLURAL[truth['target']]} in the image is {claim}."
    if task == "exists":
        col, shp = truth["shared"]
        return f"The image shows {_article(col)} {col} {shp} and {_article(claim)} {claim}."
    if task == "bars":
        return f"The {truth['which']} of the {len(truth['bars'])} bars is {claim}."
    if task == "total":
        s1, s2 = truth["target"]
        return f"The number of {PLURAL[s1]} and {PLURAL[s2]} in the image is {claim}."
    raise ValueError(f"unknown toy task {task!r}")


def teacher_analysis(pair: PreferencePair, verdict: int) -> str:
    """A Table-1 analysis (text inside ``<think>``, no tags) that argues for response ``verdict``.

    Fixed phrasing, about 25-35 words (:func:`analysis_text`): what the image shows (as the
    argued-for response claims it), what each response says and whether that is right, and the
    closing sentence ``"Response {verdict} is better."`` -- the sentence :func:`analysis_verdict`
    reads. With ``verdict != pair.preferred`` this is a fluent but wrong trace (the noisy teacher of
    the cold-start chapter uses it).
    """
    if verdict not in (1, 2):
        raise ValueError(f"verdict must be 1 or 2, got {verdict!r}")
    c1, c2 = _claims(pair)
    return analysis_text(pair.meta["truth"], c1, c2, verdict)


def on_swap(pair: PreferencePair) -> None:
    """Rewrite the stored teacher analysis of a just-swapped toy pair (it names the responses by
    position) for its new order; :meth:`PreferencePair.swap` calls it through
    :mod:`r1reward.data.sources`."""
    if "teacher_analysis" in pair.meta:
        pair.meta["teacher_analysis"] = teacher_analysis(pair, pair.preferred)


def analysis_text(truth: dict[str, Any], c1: str, c2: str, verdict: int) -> str:
    """The analysis of :func:`teacher_analysis` from a scene's truth and the two claims.

    Each response is judged right or wrong where its claim is quoted, so the verdict only has to
    read which one was called right. Deciding "right" or "wrong" is a comparison of two words of
    the text (the claim and the observation); the tiny model learns it in caption pretraining
    from analysis-shaped text (:func:`random_analysis`), not from the SFT pairs alone: with SFT
    alone its marks stayed near chance even when its observation was right (see the cold-start
    chapter).
    """
    cv = c1 if verdict == 1 else c2

    def mark(k: int) -> str:
        return "right" if k == verdict else "wrong"

    return (
        f"{_observation(truth, cv)} Response 1 says {c1}, which is {mark(1)}. "
        f"Response 2 says {c2}, which is {mark(2)}. Response {verdict} is better."
    )


def random_analysis(rng: random.Random, *, with_prompt: bool = True) -> str:
    """A consistent analysis of a random toy task, as text only (no image, no pair).

    The text half of the tiny model's pretraining (:func:`r1reward.toy.pretrain.pretrain_tiny_model`):
    a task and difficulty drawn from ``rng``, its true and false claim in a random order, and
    :func:`analysis_text` for the true one; ``with_prompt`` puts the Table-1 prompt (question
    and both responses, :func:`r1reward.prompt.build_prompt`) before it, so the claims also
    appear earlier in the text, as they do in a real judgment. Nothing here is a preference pair
    of any split; the observation in the text is the scene's truth, so right/wrong and the
    verdict follow from the words alone.
    """
    task = rng.choice(sorted(_TASKS))
    truth, _question, true_c, false_c = _TASKS[task](rng, rng.randint(1, 3))
    verdict = rng.choice((1, 2))
    c1, c2 = (true_c, false_c) if verdict == 1 else (false_c, true_c)
    analysis = analysis_text(truth, c1, c2, verdict)
    if not with_prompt:
        return analysis
    r1, r2 = (response_text(truth, c) for c in (c1, c2))
    return f"{build_prompt(_question, r1, r2)}\n{analysis}"


def analysis_verdict(analysis: str) -> int | None:
    """Which response an analysis says is better: the N of a final "Response N is better.", else None."""
    m = _VERDICT.search(analysis.strip())
    return int(m.group(1)) if m else None


def target_text(pair: PreferencePair) -> str:
    """The SFT target for a toy pair: ``<think>{analysis}</think><answer>{preferred}</answer>``."""
    return (
        f"<think>{teacher_analysis(pair, pair.preferred)}</think><answer>{pair.preferred}</answer>"
    )


def oracle_answer(pair: PreferencePair) -> int:
    """The rule that reads the image's ground truth: the response whose claim matches the scene."""
    truth = pair.meta["truth"]
    fact = true_claim(truth)
    c1, c2 = _claims(pair)
    if (c1 == fact) == (c2 == fact):
        raise ValueError(f"toy pair {pair.id}: exactly one response should match the scene")
    return 1 if c1 == fact else 2


# ----------------------------------------------------------------------------------------------
# rendering


def render(truth: dict[str, Any], image_size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the scene as an ``image_size`` x ``image_size`` RGB image (white background)."""
    img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    dr = ImageDraw.Draw(img)
    s = image_size
    if truth["task"] == "bars":
        bars = truth["bars"]
        n = len(bars)
        margin = s * 0.08
        slot = (s - 2 * margin) / n
        width = slot * 0.7
        base = s - margin
        dr.line([(margin * 0.5, base), (s - margin * 0.5, base)], fill=(0, 0, 0), width=1)
        for i, b in enumerate(bars):
            x0 = margin + i * slot + (slot - width) / 2
            h = (s - 2 * margin) * b["height"] / 8
            dr.rectangle([x0, base - h, x0 + width, base - 1], fill=COLOURS[b["colour"]])
        return img
    cell = s / GRID
    for o in truth["objects"]:
        r, c = divmod(o["cell"], GRID)
        cx = (c + 0.5 + o["dx"]) * cell
        cy = (r + 0.5 + o["dy"]) * cell
        h = o["size"] * cell / 2
        col = COLOURS[o["colour"]]
        box = [cx - h, cy - h, cx + h, cy + h]
        if o["shape"] == "circle":
            dr.ellipse(box, fill=col)
        elif o["shape"] == "square":
            k = h * 0.85
            dr.rectangle([cx - k, cy - k, cx + k, cy + k], fill=col)
        elif o["shape"] == "triangle":
            dr.polygon([(cx, cy - h), (cx + h, cy + h * 0.8), (cx - h, cy + h * 0.8)], fill=col)
        elif o["shape"] == "diamond":
            dr.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=col)
    return img


# ----------------------------------------------------------------------------------------------
# the generator


def _rng(split: str, seed: int, index: int, attempt: int) -> random.Random:
    h = hashlib.sha256(f"r1reward-toy|{split}|{seed}|{index}|{attempt}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def content_key(image: Image.Image, question: str, responses: tuple[str, str]) -> str:
    """Hash of what a pair *is*: image pixels, question, the unordered responses (not seed/order)."""
    h = hashlib.sha256(image.tobytes())
    h.update(question.encode())
    for r in sorted(responses):
        h.update(b"\x00" + r.encode())
    return h.hexdigest()


def split_of(key: str) -> str:
    """The split a content key belongs to: one quarter of the content space is held out."""
    return "heldout" if int(key[:2], 16) % 4 == 0 else "train"


def make_pair(
    index: int, *, seed: int = 0, split: str = "train", image_size: int = IMAGE_SIZE
) -> PreferencePair:
    """Pair ``index`` of the ``(split, seed)`` stream (see :func:`make_pairs`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for attempt in range(1000):
        rng = _rng(split, seed, index, attempt)
        category = rng.choice(list(CATEGORIES))
        task = rng.choice(CATEGORIES[category])
        difficulty = rng.randint(1, 3)
        truth, question, good, bad = _TASKS[task](rng, difficulty)
        truth["claims"] = sorted([good, bad])
        r_good, r_bad = response_text(truth, good), response_text(truth, bad)
        image = render(truth, image_size)
        key = content_key(image, question, (r_good, r_bad))
        if split_of(key) != split:
            continue  # this content belongs to the other split: draw again
        preferred = 1 if rng.random() < 0.5 else 2
        r1, r2 = (r_good, r_bad) if preferred == 1 else (r_bad, r_good)
        pair = PreferencePair(
            id=f"toy-{split}-{seed}-{index}",
            question=question,
            images=[image],
            response_1=r1,
            response_2=r2,
            preferred=preferred,
            category=category,
            difficulty=difficulty,
            source="toy",
            meta={"truth": truth, "task": task, "content_key": key, "split": split},
        )
        pair.meta["teacher_analysis"] = teacher_analysis(pair, preferred)
        return pair
    raise RuntimeError(f"toy: no {split} content after 1000 draws (index {index}, seed {seed})")


def make_pairs(
    n: int, *, seed: int = 0, split: str = "train", image_size: int = IMAGE_SIZE
) -> list[PreferencePair]:
    """``n`` toy preference pairs with PIL RGB images of ``image_size`` x ``image_size`` pixels.

    Deterministic in ``(n, seed, split, image_size)``; ``make_pairs(n)[:m] == make_pairs(m)``.
    Train and held-out pairs come from disjoint parts of the content space, so no held-out
    (image, question, responses) can occur in any training set (the split of a piece of content
    is decided on its pixels, hence per ``image_size``).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [make_pair(i, seed=seed, split=split, image_size=image_size) for i in range(n)]
