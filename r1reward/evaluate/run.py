"""Running an evaluation: judge one pair (:func:`judge_pair`, the reward service's core) or every
pair of a benchmark into a resumable output folder (:func:`evaluate`).

:func:`evaluate` processes units in fixed chunks of ``batch_size`` (chunk ``i`` = units
``[i*B, (i+1)*B)`` of the deterministic unit list, sampled with seed ``chunk_seed(seed, i)``); each
chunk's records are appended in one write, so a rerun after a kill regenerates only the chunks that
are not complete and its summary equals that of an uninterrupted run.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from r1reward.data.media import video_reader
from r1reward.evaluate.media import load_images, load_videos, needs_video_reader
from r1reward.evaluate.metrics import summarize
from r1reward.evaluate.report import summary_markdown
from r1reward.evaluate.samplers import Sampler, describe
from r1reward.evaluate.store import (
    CONFIG_FILE,
    RESULTS_FILE,
    SUMMARY_JSON,
    SUMMARY_MD,
    ResultsStore,
    check_config,
    holding_output_lock,
    load_records,
)
from r1reward.evaluate.voting import (
    GREEDY,
    ORDER_MODES,
    chunk_seed,
    displayed,
    unit_orders,
    vote,
)
from r1reward.prompt import PROMPT_STYLES, build_messages, parse_judgment
from r1reward.scoring import SCORING_MODES, official_scores

__all__ = ["PairJudgment", "evaluate", "judge_pair"]

Unit = tuple[Any, str]  # (pair, order)


@dataclass
class PairJudgment:
    """The judge's view of one pair, in the caller's positions (1 = ``response_1``).

    Attributes:
        verdict: majority verdict over all judgments (both orders mapped back), ``None`` on a tie
            or when nothing was parseable.
        tie: the parseable votes split evenly.
        p_1: share of parseable judgments preferring ``response_1`` (``None`` if none parseable).
        votes: ``{"1": n1, "2": n2, "unparseable": n}``.
        answers: per judgment, 1/2/None in the caller's positions.
        orders: per judgment, ``"as-given"`` or ``"swapped"``.
        analyses: per judgment, the ``<think>`` text.
        texts: per judgment, the raw generation.
        well_formed_rate: share of judgments in the exact Table-1 format.
    """

    verdict: int | None
    tie: bool
    p_1: float | None
    votes: dict[str, int]
    answers: list[int | None]
    orders: list[str]
    analyses: list[str]
    texts: list[str]
    well_formed_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_pair(
    sampler: Sampler,
    question: str,
    response_1: str,
    response_2: str,
    *,
    images: Sequence[Any] = (),
    videos: Sequence[Any] = (),
    k: int = 1,
    both_orders: bool = True,
    greedy: bool | None = None,
    seed: int | None = None,
) -> PairJudgment:
    """Judge one pair with ``k`` judgments per order and vote (the ``/v1/reward`` core).

    With ``both_orders`` the pair is also shown swapped and those verdicts are mapped back, so
    position bias cancels out of ``p_1``. ``greedy`` defaults to ``k == 1`` (one deterministic
    judgment per order); otherwise ``k`` samples per order come from one batched sampler call.
    """
    if k < 1:
        raise ValueError(f"judge_pair: k must be >= 1, got {k}")
    use_greedy = (k == 1) if greedy is None else bool(greedy)
    layouts = [("as-given", response_1, response_2)]
    if both_orders:
        layouts.append(("swapped", response_2, response_1))
    convs = [build_messages(question, a, b, images=images, videos=videos) for _, a, b in layouts]
    texts_per = sampler.sample(convs, k=k, greedy=use_greedy, seed=seed)
    answers: list[int | None] = []
    orders: list[str] = []
    analyses: list[str] = []
    texts: list[str] = []
    n_well = 0
    for (name, _, _), group in zip(layouts, texts_per):
        for text in group:
            j = parse_judgment(text)
            ans = j.answer
            if name == "swapped" and ans is not None:
                ans = 3 - ans
            answers.append(ans)
            orders.append(name)
            analyses.append(j.analysis)
            texts.append(text)
            n_well += int(j.well_formed)
    verdict, tie = vote(answers)
    n1, n2 = answers.count(1), answers.count(2)
    return PairJudgment(
        verdict=verdict,
        tie=tie,
        p_1=(n1 / (n1 + n2)) if n1 + n2 else None,
        votes={"1": n1, "2": n2, "unparseable": len(answers) - n1 - n2},
        answers=answers,
        orders=orders,
        analyses=analyses,
        texts=texts,
        well_formed_rate=n_well / len(texts) if texts else 0.0,
    )


@holding_output_lock
def evaluate(
    sampler: Sampler,
    pairs: Sequence[Any],
    *,
    ks: Sequence[int] = (1, 5, 15),
    orders: str = "both",
    out_dir: str | Path,
    batch_size: int = 8,
    seed: int = 0,
    image_root: str | Path | None = None,
    video_frames: int = 8,
    progress: bool = True,
    title: str = "Evaluation",
    prompt_style: str = "paper",
    scoring: str = "strict",
) -> dict[str, Any]:
    """Judge every pair (greedy + ``max(ks)`` samples per order) and write the report.

    Args:
        sampler: a :class:`Sampler` (``ModelSampler`` for a model, ``ConstantSampler`` ...).
        pairs: :class:`r1reward.data.PreferencePair` objects with unique ids; images may be PIL
            images or paths (relative ones under ``image_root``); videos are paths or frame
            lists. Video pairs are skipped (and counted, with the reason) when a video file
            needs PyAV and it is missing, or when the sampler says ``supports_video = False``.
        ks: Voting@K / Any-correct@K values; ``max(ks)`` samples are drawn per unit; empty:
            the greedy judgment only.
        orders: ``"both"``, ``"random"`` or ``"chosen-first"`` (see the module docstring).
        out_dir: gets ``results.jsonl`` (resumable), ``config.json``, ``summary.json``,
            ``summary.md``.
        batch_size: units (prompts) per chunk; one chunk = one greedy and one sampling call.
        seed: seeds the chunks (:func:`chunk_seed`) and the ``random`` order.
        video_frames: frames sampled uniformly from each video.
        prompt_style: ``"paper"`` (Table 1 as printed) or ``"released"`` (the layout the released
            checkpoint was trained with); see :data:`r1reward.prompt.PROMPT_STYLES`.
        scoring: ``"strict"`` (the metrics of :func:`summarize`) or ``"official"``, which adds
            each benchmark's own script's numbers (:mod:`r1reward.scoring`) under
            ``summary["official"]``; the records are the same in both modes.

    Returns:
        The summary dict (see :func:`summarize`), also written to ``summary.json``; it says
        which scoring mode, answer orders and prompt style produced it.

    Raises:
        OutputLocked: another run is writing to ``out_dir`` (:func:`output_lock`).
    """
    ks = _checked_arguments(ks, orders, batch_size, prompt_style, scoring)
    kmax = ks[-1] if ks else 0  # no ks: greedy judgments only
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(image_root) if image_root is not None else None
    _check_unique_ids(pairs)
    config = _run_config(sampler, kmax, orders, seed, batch_size, video_frames, prompt_style)
    check_config(out / CONFIG_FILE, config)
    store = _open_store(out / RESULTS_FILE)

    reader = video_reader()
    reasons = {p.id: _skip_reason(p, sampler, root, reader) for p in pairs}
    units = [
        (p, o) for p in pairs if reasons[p.id] is None for o in unit_orders(p.id, orders, seed)
    ]
    media = None
    if getattr(sampler, "needs_media", True):
        media = functools.partial(_pair_media, root=root, reader=reader, n_frames=video_frames)
    _judge_units(
        sampler,
        units,
        store,
        kmax=kmax,
        seed=seed,
        batch_size=batch_size,
        media=media,
        prompt_style=prompt_style,
        progress=progress,
    )

    records = load_records(out / RESULTS_FILE)
    unit_ids = [(p.id, o) for p, o in units]
    summary = summarize(records, ks=ks, units=unit_ids, skipped=_skipped(reasons))
    summary.update(
        orders=orders, sampler=describe(sampler), prompt_style=prompt_style, scoring=scoring
    )
    if scoring == "official":
        sources = {p.id: str(getattr(p, "source", "") or "") for p in pairs}
        summary["official"] = official_scores(records, unit_ids, sources)
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / SUMMARY_MD).write_text(summary_markdown(summary, title), encoding="utf-8")
    return summary


def _checked_arguments(
    ks: Sequence[int], orders: str, batch_size: int, prompt_style: str, scoring: str
) -> list[int]:
    """The K values sorted and deduplicated; a ValueError naming any argument out of range."""
    ks = sorted({int(k) for k in ks})
    if ks and ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if orders not in ORDER_MODES:
        raise ValueError(f"orders must be one of {', '.join(ORDER_MODES)}; got {orders!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(
            f"prompt_style must be one of {', '.join(PROMPT_STYLES)}; got {prompt_style!r}"
        )
    if scoring not in SCORING_MODES:
        raise ValueError(f"scoring must be one of {', '.join(SCORING_MODES)}; got {scoring!r}")
    return ks


def _check_unique_ids(pairs: Sequence[Any]) -> None:
    seen: set[str] = set()
    for pair in pairs:
        if pair.id in seen:
            raise ValueError(f"pair id {pair.id!r} appears twice; ids must be unique")
        seen.add(pair.id)


def _run_config(
    sampler: Sampler,
    kmax: int,
    orders: str,
    seed: int,
    batch_size: int,
    video_frames: int,
    prompt_style: str,
) -> dict[str, Any]:
    """The settings the records depend on (``config.json``: a resumed run must match them)."""
    config = {
        "samples_per_unit": kmax,
        "orders": orders,
        "seed": int(seed),
        "batch_size": int(batch_size),
        "video_frames": int(video_frames),
        "sampler": describe(sampler),
    }
    if prompt_style != "paper":  # only when set, so folders of earlier runs still resume
        config["prompt_style"] = prompt_style
    return config


def _open_store(path: Path) -> ResultsStore:
    """The results file, its torn last line (an interrupted write) cut off with a warning."""
    store = ResultsStore(path)
    if store.torn_lines:
        warnings.warn(f"{path}: cut a torn last line (an interrupted write)", stacklevel=3)
    return store


def _skip_reason(pair: Any, sampler: Sampler, root: Path | None, reader: Any) -> str | None:
    """Why a video pair cannot be judged by ``sampler`` here, or None when it can."""
    if not getattr(sampler, "needs_media", True) or not pair.videos:
        return None
    if not getattr(sampler, "supports_video", True):
        return "video pair: the model's processor takes no video (transformers needs torchvision)"
    if reader is None and needs_video_reader(pair, root):
        return "video pair: no video reader installed (pip install av)"
    return None


def _skipped(reasons: dict[str, str | None]) -> dict[str, Any]:
    """The summary's ``skipped`` block: how many pairs, why, and the first 50 ids."""
    skipped_ids = [pid for pid, why in reasons.items() if why is not None]
    skipped: dict[str, Any] = {"count": len(skipped_ids)}
    if skipped_ids:
        skipped["reasons"] = dict(Counter(reasons[pid] for pid in skipped_ids))
        skipped["ids"] = skipped_ids[:50]
    return skipped


def _pair_media(
    pair: Any, *, root: Path | None, reader: Callable | None, n_frames: int
) -> tuple[list[Any], list[Any]]:
    """(images, videos) of ``pair`` as the judge sees them."""
    return load_images(pair, root), load_videos(pair, root, reader, n_frames)


def _judge_units(
    sampler: Sampler,
    units: Sequence[Unit],
    store: ResultsStore,
    *,
    kmax: int,
    seed: int,
    batch_size: int,
    media: Callable[[Any], tuple[list[Any], list[Any]]] | None,
    prompt_style: str,
    progress: bool,
) -> None:
    """Judge every chunk of ``units`` that ``store`` does not hold complete, appending its records.

    An incomplete chunk is regenerated whole (same prompts, same seed) so that its samples equal
    those of an uninterrupted run; the store writes only the keys it lacks.
    """
    samples_keys = [GREEDY] + [str(i) for i in range(kmax)]

    def done(unit: Unit) -> bool:
        return all((unit[0].id, unit[1], s) in store for s in samples_keys)

    bar = tqdm(total=len(units), desc="judging", unit="prompt") if progress else None
    try:
        for index, start in enumerate(range(0, len(units), batch_size)):
            chunk = units[start : start + batch_size]
            if not all(done(u) for u in chunk):
                convs, rights = _conversations(chunk, media, prompt_style)
                s = chunk_seed(seed, index)
                greedy_texts = sampler.sample(convs, k=1, greedy=True, seed=s)
                sampled_texts = (
                    sampler.sample(convs, k=kmax, greedy=False, seed=s)
                    if kmax
                    else [[] for _ in convs]
                )
                store.append(_chunk_records(chunk, rights, greedy_texts, sampled_texts, kmax))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def _conversations(
    chunk: Sequence[Unit],
    media: Callable[[Any], tuple[list[Any], list[Any]]] | None,
    prompt_style: str,
) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """The prompt of each unit (the pair shown in its order) and its right answer (1 or 2)."""
    convs = []
    rights = []
    for pair, order in chunk:
        r1, r2, right = displayed(pair, order)
        images, videos = media(pair) if media is not None else ([], [])
        convs.append(
            build_messages(pair.question, r1, r2, images=images, videos=videos, style=prompt_style)
        )
        rights.append(right)
    return convs, rights


def _chunk_records(
    chunk: Sequence[Unit],
    rights: Sequence[int],
    greedy_texts: Sequence[list[str]],
    sampled_texts: Sequence[list[str]],
    kmax: int,
) -> list[dict[str, Any]]:
    """One record per judgment of the chunk: greedy first, then samples 0..kmax-1 of each unit."""
    records = []
    for (pair, order), right, g, samp in zip(chunk, rights, greedy_texts, sampled_texts):
        if len(g) != 1 or len(samp) != kmax:
            raise RuntimeError(
                f"sampler returned {len(g)} greedy / {len(samp)} sampled texts for pair"
                f" {pair.id!r}; expected 1 / {kmax}"
            )
        base = {"pair_id": pair.id, "order": order, "category": pair.category}
        meta = pair.meta or {}
        if meta.get("group") is not None:
            base["group"] = str(meta["group"])
        for sample, text in [(GREEDY, g[0])] + list(enumerate(samp)):
            j = parse_judgment(text)
            records.append(
                {
                    **base,
                    "sample": sample if sample == GREEDY else int(sample),
                    "answer": j.answer,
                    "correct": j.answer == right,
                    "well_formed": j.well_formed,
                    "text": text,
                }
            )
    return records
