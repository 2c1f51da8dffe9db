"""Evaluation of a generative reward model: both answer orders, Voting@K, Any-correct@K, reports.

R1-Reward (arXiv 2505.02835, Sec. 4 and Figure 4) scores a judge by the share of preference pairs
on which its ``<answer>`` names the preferred response, greedily and with test-time scaling:
*Voting@K* takes the majority over K sampled judgments, *Any-correct@K* asks whether any of the K
was right (an upper bound for any selection rule).

The released reference scripts always show the chosen response as "Response 1"; a judge that
always answers "1" then scores 100 %. Here every pair can be judged in both orders, and the
report shows the position bias (share of "1" verdicts) and swap consistency beside the accuracy.

Vocabulary used throughout:

``order``
    ``"chosen-first"`` shows the preferred response as Response 1 (the right answer is 1);
    ``"chosen-second"`` shows it as Response 2 (the right answer is 2). ``orders="both"`` judges
    every pair in both; ``"random"`` picks one per pair from a hash of ``(seed, pair id)``;
    ``"chosen-first"`` is the reference layout (kept to expose its bias, not to trust it).
``unit``
    one (pair, order): one prompt. Each unit gets one greedy judgment and ``max(ks)`` samples.
``record``
    one line of ``results.jsonl``: one judgment of one unit (``sample`` is ``"greedy"`` or the
    sample index 0..K-1).
``scoring``
    ``"strict"`` (the rules below; the summary's metric blocks always follow them) or
    ``"official"``, which adds ``summary["official"]``: the numbers each benchmark's own script
    would print for the same greedy verdicts (:mod:`r1reward.scoring`). With
    ``orders="chosen-first"`` those are the paper's protocol and comparable with its tables.
``prompt style``
    ``"paper"`` (Table 1 as printed) or ``"released"`` (the layout ``yifanzhang114/R1-Reward``
    was trained with; :data:`r1reward.prompt.PROMPT_STYLES`).

Metric rules (all fractions in ``[0, 1]``; the Markdown report shows percents):

- an unparseable judgment (no valid ``<answer>``) is *wrong*, and counted (``unparseable``);
- ``voting@K`` uses the first K samples; :func:`vote` takes the majority of parseable answers.
  **Tie rule** (deterministic, counted in ``ties``): the unit's greedy verdict when it is
  parseable, else :func:`hash_verdict` of ``"{pair_id}|{order}"`` (SHA-256, lowest bit). With no
  parseable sample at all the vote is unparseable, hence wrong;
- ``any@K``: at least one of the first K samples is right;
- accuracy is averaged over units (pair x order); ``macro`` is the mean of the per-category
  accuracies; ``acc_plus`` (MM-RLHF-RewardBench) counts a group (``meta["group"]``, the pair
  id family) only when every unit of every pair in it is right;
- ``position_bias``: share of "1" among parseable verdicts (0.5 is unbiased);
- ``swap_consistency``: over pairs judged in both orders, the share whose verdicts name the same
  underlying response in both orders (an unparseable verdict is inconsistent).

Results are append-only and resumable: units are processed in fixed chunks of ``batch_size``
(chunk ``i`` = units ``[i*B, (i+1)*B)`` of the deterministic unit list, sampled with seed
``chunk_seed(seed, i)``), each chunk's lines are written in one write, flushed and fsynced. A rerun
skips every (pair, order, sample) already present and never writes a key twice, so a kill loses at
most the chunk in flight and the final summary equals that of an uninterrupted run. A torn last
line (a kill mid-write) is cut off before appending.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import sys
import textwrap
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from r1reward.engines import add_engine_argument, reserve_gpu, resolve_engine

__all__ = [
    "ORDER_MODES",
    "CHOSEN_FIRST",
    "CHOSEN_SECOND",
    "Sampler",
    "ConstantSampler",
    "FunctionSampler",
    "ModelSampler",
    "ResultsStore",
    "PairJudgment",
    "vote",
    "hash_verdict",
    "chunk_seed",
    "unit_orders",
    "judge_pair",
    "evaluate",
    "output_lock",
    "OutputLocked",
    "summarize",
    "load_records",
    "summary_markdown",
    "accuracy_vs_k",
    "layout_report",
    "PAPER_RESULTS",
    "read_video_frames",
    "main",
]

CHOSEN_FIRST = "chosen-first"
CHOSEN_SECOND = "chosen-second"
ORDER_MODES = ("both", "random", "chosen-first")
RESULTS_FILE = "results.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
GREEDY = "greedy"

#: What :class:`ConstantSampler` says by default: a well-formed judgment that always picks "1".
ALWAYS_ONE = "<think>Response 1 is better.</think><answer>1</answer>"


#: R1-Reward 7B as reported by the paper (arXiv 2505.02835), accuracy in percent: greedy
#: decoding and Voting@15 (its test-time scaling results). Quoted for context only: the book's toy
#: numbers are not comparable to them (another model, another task).
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "VL-RewardBench (overall)": {"greedy": 71.92, "voting@15": 76.46},
    "Multimodal RewardBench (overall)": {"greedy": 82.2, "voting@15": 83.3},
    "MM-RLHF-RewardBench (acc)": {"greedy": 80.59, "voting@15": 86.47},
    "MM-RLHF-RewardBench (acc+)": {"greedy": 54.35},
}


# --------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------


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
        from r1reward.rollout import generate

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


def _describe(sampler: Any) -> dict[str, Any]:
    fn = getattr(sampler, "describe", None)
    return dict(fn()) if callable(fn) else {"sampler": type(sampler).__name__}


# --------------------------------------------------------------------------------------------
# Voting and deterministic rules
# --------------------------------------------------------------------------------------------


def hash_verdict(key: str) -> int:
    """A fixed pseudo-random verdict (1 or 2) for ``key``: the lowest bit of its SHA-256."""
    return 1 + (hashlib.sha256(key.encode("utf-8")).digest()[0] & 1)


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The sampling seed of chunk ``chunk_index``: a 31-bit hash of ``(seed, chunk_index)``."""
    digest = hashlib.sha256(f"r1reward-eval|{seed}|{chunk_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def vote(answers: Iterable[int | None], *, tiebreak: int | None = None) -> tuple[int | None, bool]:
    """Majority vote over judgments (Voting@K, paper Sec. 4.3).

    Args:
        answers: parsed verdicts, 1, 2 or ``None`` (unparseable, ignored by the vote).
        tiebreak: verdict to return on a tie (e.g. the greedy verdict); ``None`` leaves it open.

    Returns:
        ``(verdict, tie)``. ``verdict`` is 1 or 2, or ``None`` when no answer was parseable or
        on a tie without ``tiebreak``. ``tie`` is true when 1 and 2 got the same (non-zero) count.
    """
    counts = Counter(a for a in answers if a in (1, 2))
    n1, n2 = counts.get(1, 0), counts.get(2, 0)
    if n1 == n2:
        if n1 == 0:
            return None, False
        return (tiebreak if tiebreak in (1, 2) else None), True
    return (1 if n1 > n2 else 2), False


def unit_orders(pair_id: str, mode: str, seed: int = 0) -> tuple[str, ...]:
    """Which orders a pair is judged in: ``both`` -> both, ``chosen-first`` -> the reference
    layout, ``random`` -> one order from :func:`hash_verdict` of ``"{seed}|{pair_id}"``."""
    if mode == "both":
        return (CHOSEN_FIRST, CHOSEN_SECOND)
    if mode == "chosen-first":
        return (CHOSEN_FIRST,)
    if mode == "random":
        return (CHOSEN_FIRST if hash_verdict(f"{seed}|{pair_id}") == 1 else CHOSEN_SECOND,)
    raise ValueError(f"orders must be one of {', '.join(ORDER_MODES)}; got {mode!r}")


def _displayed(pair: Any, order: str) -> tuple[str, str, int]:
    """(Response 1, Response 2, right answer) for ``pair`` shown in ``order``."""
    if pair.preferred not in (1, 2):
        raise ValueError(f"pair {pair.id!r}: preferred must be 1 or 2, got {pair.preferred!r}")
    chosen, rejected = (
        (pair.response_1, pair.response_2)
        if pair.preferred == 1
        else (pair.response_2, pair.response_1)
    )
    if order == CHOSEN_FIRST:
        return chosen, rejected, 1
    return rejected, chosen, 2


# --------------------------------------------------------------------------------------------
# Media
# --------------------------------------------------------------------------------------------


def _video_reader() -> Callable[[str | Path, int], list[Any]] | None:
    """:func:`read_video_frames` when PyAV is importable, else ``None`` (video files are skipped)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return None
    return read_video_frames


_FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _uniform(total: int, n: int) -> list[int]:
    """``min(n, total)`` indices spread uniformly over ``range(total)`` (segment midpoints)."""
    n = min(n, total)
    return sorted({int((i + 0.5) * total / n) for i in range(n)})


def read_video_frames(path: str | Path, n_frames: int = 8) -> list[Any]:
    """``n_frames`` RGB PIL frames sampled uniformly over a video file (needs PyAV, ``av``)."""
    import av

    with av.open(str(path)) as container:
        total = int(container.streams.video[0].frames or 0)
        if total <= 0:  # the container does not say: count in a first pass
            total = sum(1 for _ in container.decode(video=0))
            container.seek(0)
        if total <= 0:
            raise ValueError(f"{path}: no video frames")
        wanted = set(_uniform(total, n_frames))
        frames = []
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames.append(frame.to_image().convert("RGB"))
            if len(frames) == len(wanted):
                break
    return frames


def _read_frame_folder(path: Path, n_frames: int) -> list[Any]:
    """Frames sampled uniformly from a folder of image files (sorted by name); no PyAV needed."""
    from PIL import Image

    files = sorted(f for f in path.iterdir() if f.suffix.lower() in _FRAME_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: a video folder without image frames ({sorted(_FRAME_SUFFIXES)})")
    frames = []
    for i in _uniform(len(files), n_frames):
        with Image.open(files[i]) as img:
            frames.append(img.convert("RGB"))
    return frames


def _rooted(item: Any, root: Path | None) -> Any:
    """A relative path string joined to ``root``; anything else (PIL image, data URI) unchanged."""
    if isinstance(item, (str, Path)) and not str(item).startswith("data:"):
        path = Path(item)
        if root is not None and not path.is_absolute():
            return str(root / path)
        return str(path)
    return item


def _needs_reader(pair: Any, root: Path | None) -> bool:
    """True when a video of ``pair`` is a file (not a frame folder): decoding it needs PyAV.

    A video that is not there at all is not a reason to skip the pair: loading it raises the
    one-line "video not found" error naming the data file, line and id."""
    for item in pair.videos or ():
        if isinstance(item, (str, Path)) and Path(_rooted(item, root)).is_file():
            return True
    return False


def _load_images(pair: Any, root: Path | None) -> list[Any]:
    """The pair's images as RGB PIL images; a missing file raises naming the data line and id."""
    from dataclasses import replace

    from r1reward.data.schema import open_images

    if not pair.images:
        return []
    return open_images(replace(pair, images=[_rooted(im, root) for im in pair.images]))


def _load_videos(pair: Any, root: Path | None, reader: Callable | None, n_frames: int) -> list[Any]:
    """Each video as a list of ``n_frames`` PIL frames (a frame folder, or a file via PyAV)."""
    videos = []
    for item in pair.videos or ():
        if not isinstance(item, (str, Path)):  # already a list of frames
            videos.append(item)
            continue
        path = Path(_rooted(item, root))
        if path.is_dir():
            videos.append(_read_frame_folder(path, n_frames))
        elif not path.exists():
            from r1reward.data.schema import DataError

            meta = pair.meta or {}
            raise DataError(
                f"video not found: {path} (expected a file or a folder of frames; benchmark media"
                " ship separately: pass --image-root DIR)",
                path=meta.get("source_file"),
                line=meta.get("source_line"),
                record_id=pair.id,
                where=meta.get("source_where", "line"),
            )
        elif reader is None:
            raise RuntimeError(f"pair {pair.id!r}: decoding {path} needs PyAV (pip install av)")
        else:
            videos.append(reader(path, n_frames))
    return videos


# --------------------------------------------------------------------------------------------
# Judging one pair (shared with the reward service)
# --------------------------------------------------------------------------------------------


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
    from r1reward.prompt import build_messages, parse_judgment

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


# --------------------------------------------------------------------------------------------
# Results store
# --------------------------------------------------------------------------------------------


def _key(record: dict[str, Any]) -> tuple[str, str, str]:
    return (str(record["pair_id"]), str(record["order"]), str(record["sample"]))


class ResultsStore:
    """Append-only JSONL of judgment records, keyed by (pair_id, order, sample).

    Opening it reads what is there, cuts off a torn last line (a kill during a write) and
    remembers the keys; :meth:`append` writes only records whose key is new, in one write, then
    flushes and fsyncs.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys: set[tuple[str, str, str]] = set()
        self.torn_lines = 0
        if self.path.exists():
            self._load_and_repair()

    def _load_and_repair(self) -> None:
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        line_no = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl + 1
            line = data[pos:end]
            line_no += 1
            try:
                if nl < 0:
                    raise ValueError("no newline: the write was cut")
                if line.strip():
                    rec = json.loads(line)
                    self.keys.add(_key(rec))
                good_end = end
            except (ValueError, KeyError) as exc:
                if end < len(data):  # damage in the middle is not a torn tail: refuse to guess
                    raise ValueError(
                        f"{self.path}:{line_no}: not a judgment record ({exc}); the file is"
                        " damaged before its last line"
                    ) from exc
                self.torn_lines += 1
            pos = end
        if good_end < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self.keys

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Write the records whose key is not stored yet; return how many were written."""
        lines = []
        for rec in records:
            key = _key(rec)
            if key in self.keys:
                continue
            self.keys.add(key)
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        if lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
        return len(lines)


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a results file (a torn last line is ignored, not repaired)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if line.endswith("\n"):
                    raise ValueError(f"{path}:{line_no}: not a JSON record ({exc})") from exc
    return records


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@dataclass
class _Unit:
    pair_id: str
    order: str
    category: str
    group: str | None
    greedy: int | None = None
    has_greedy: bool = False
    samples: dict[int, int | None] = field(default_factory=dict)
    well_formed: dict[str, bool] = field(default_factory=dict)  # sample key -> Table-1 format


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _metric_names(ks: Sequence[int]) -> list[str]:
    return ["greedy"] + [f"voting@{k}" for k in ks] + [f"any@{k}" for k in ks]


def summarize(
    records: Iterable[dict[str, Any]],
    *,
    ks: Sequence[int] = (1, 5, 15),
    units: Iterable[tuple[str, str]] | None = None,
    skipped: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metrics of the module docstring, from judgment records.

    Args:
        records: dicts with ``pair_id``, ``order``, ``sample`` (``"greedy"`` or an index),
            ``answer`` (1/2/None, as displayed), ``category`` (a ``"parent/child"`` label, as
            Multimodal RewardBench's ``reasoning/math``, is also rolled up into ``parent``) and
            ``group``.
        ks: the K of Voting@K / Any-correct@K; each must be <= the samples stored per unit.
        units: restrict to these (pair_id, order); default every unit in ``records``.
        skipped: reported as is (e.g. video pairs without a video reader).

    Returns:
        A JSON-ready dict: ``overall``, ``macro``, ``by_category``, ``by_parent_category``,
        ``by_order``, ``acc_plus`` (when groups exist), ``ties``, ``unparseable``,
        ``well_formed`` (share in the exact Table-1 format, when records carry it),
        ``position_bias``, ``swap_consistency``, ``counts``, ``skipped``.

    Raises:
        ValueError: a unit lacks its greedy record or some of the first ``max(ks)`` samples.
    """
    ks = sorted({int(k) for k in ks})
    wanted = None if units is None else {(str(p), str(o)) for p, o in units}
    table: dict[tuple[str, str], _Unit] = {}
    for rec in records:
        uid = (str(rec["pair_id"]), str(rec["order"]))
        if wanted is not None and uid not in wanted:
            continue
        unit = table.get(uid)
        if unit is None:
            unit = table[uid] = _Unit(
                pair_id=uid[0],
                order=uid[1],
                category=str(rec.get("category") or "all"),
                group=rec.get("group"),
            )
        answer = rec.get("answer")
        answer = answer if answer in (1, 2) else None
        if rec["sample"] == GREEDY:
            unit.greedy = answer
            unit.has_greedy = True
        else:
            unit.samples[int(rec["sample"])] = answer
        if "well_formed" in rec:
            unit.well_formed[str(rec["sample"])] = bool(rec["well_formed"])
    if wanted is not None and set(table) != wanted:
        missing = sorted(wanted - set(table))[:5]
        raise ValueError(f"no records for units {missing} (of {len(wanted - set(table))})")

    kmax = max(ks) if ks else 0
    names = _metric_names(ks)
    per_unit: dict[tuple[str, str], dict[str, bool]] = {}
    verdicts: dict[tuple[str, str], dict[str, int | None]] = {}
    ties = Counter()
    for uid, unit in table.items():
        if not unit.has_greedy:
            raise ValueError(f"unit {uid}: no greedy record")
        if any(i not in unit.samples for i in range(kmax)):
            have = len(unit.samples)
            raise ValueError(f"unit {uid}: {have} samples stored, Voting@{kmax} needs {kmax}")
        right = 1 if unit.order == CHOSEN_FIRST else 2
        got: dict[str, bool] = {"greedy": unit.greedy == right}
        said: dict[str, int | None] = {"greedy": unit.greedy}
        for k in ks:
            first = [unit.samples[i] for i in range(k)]
            tiebreak = unit.greedy if unit.greedy is not None else hash_verdict("|".join(uid))
            verdict, tie = vote(first, tiebreak=tiebreak)
            ties[f"voting@{k}"] += int(tie)
            got[f"voting@{k}"] = verdict == right
            said[f"voting@{k}"] = verdict
            got[f"any@{k}"] = any(a == right for a in first)
        per_unit[uid] = got
        verdicts[uid] = said

    def block(uids: Sequence[tuple[str, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(uids)}
        for name in names:
            out[name] = _mean([float(per_unit[u][name]) for u in uids])
        return out

    all_uids = sorted(table)
    by_cat: dict[str, list] = defaultdict(list)
    by_parent: dict[str, list] = defaultdict(list)
    by_order: dict[str, list] = defaultdict(list)
    for uid in all_uids:
        unit = table[uid]
        by_cat[unit.category].append(uid)
        by_order[unit.order].append(uid)
        if "/" in unit.category:
            by_parent[unit.category.split("/", 1)[0]].append(uid)
    by_category = {c: block(u) for c, u in sorted(by_cat.items())}
    macro: dict[str, Any] = {"n_categories": len(by_category)}
    for name in names:
        macro[name] = _mean([b[name] for b in by_category.values() if b[name] is not None])

    summary: dict[str, Any] = {
        "ks": ks,
        "counts": {
            "pairs": len({u[0] for u in all_uids}),
            "units": len(all_uids),
            "samples_per_unit": kmax,
        },
        "overall": block(all_uids),
        "macro": macro,
        "by_category": by_category,
        "by_parent_category": {c: block(u) for c, u in sorted(by_parent.items())},
        "by_order": {o: block(u) for o, u in sorted(by_order.items())},
        "ties": {name: ties[name] for name in names if name.startswith("voting@")},
    }

    # acc+: a group is right only when every unit of every pair in it is right.
    groups: dict[str, list] = defaultdict(list)
    for uid in all_uids:
        if table[uid].group:
            groups[str(table[uid].group)].append(uid)
    if groups:
        acc_plus: dict[str, Any] = {"n_groups": len(groups)}
        for name in names:
            acc_plus[name] = _mean(
                [float(all(per_unit[u][name] for u in g)) for g in groups.values()]
            )
        summary["acc_plus"] = acc_plus

    greedy_answers = [table[u].greedy for u in all_uids]
    sample_answers = [a for u in all_uids for i, a in table[u].samples.items() if i < kmax]
    wf_greedy = [u.well_formed[GREEDY] for u in table.values() if GREEDY in u.well_formed]
    wf_samples = [
        ok
        for u in table.values()
        for key, ok in u.well_formed.items()
        if key != GREEDY and int(key) < kmax
    ]
    summary["well_formed"] = {
        "greedy": _mean([float(x) for x in wf_greedy]),
        "samples": _mean([float(x) for x in wf_samples]),
    }
    summary["unparseable"] = {
        "greedy": _mean([float(a is None) for a in greedy_answers]),
        "greedy_count": sum(a is None for a in greedy_answers),
        "samples": _mean([float(a is None) for a in sample_answers]),
        "samples_count": sum(a is None for a in sample_answers),
    }

    def share_one(answers: Sequence[int | None]) -> float | None:
        parsed = [a for a in answers if a is not None]
        return _mean([float(a == 1) for a in parsed])

    summary["position_bias"] = {
        "greedy": share_one(greedy_answers),
        "samples": share_one(sample_answers),
    }

    # Swap consistency: pairs judged in both orders name the same underlying response.
    both = [
        p
        for p in sorted({u[0] for u in all_uids})
        if (p, CHOSEN_FIRST) in table and (p, CHOSEN_SECOND) in table
    ]
    swap: dict[str, Any] = {"n_pairs": len(both)}
    if both:
        for name in ["greedy"] + [f"voting@{k}" for k in ks]:
            consistent = []
            both_right = []
            for p in both:
                a, b = verdicts[(p, CHOSEN_FIRST)][name], verdicts[(p, CHOSEN_SECOND)][name]
                consistent.append(float(a is not None and b is not None and a + b == 3))
                both_right.append(float(a == 1 and b == 2))
            swap[name] = _mean(consistent)
            swap[f"{name}_both_right"] = _mean(both_right)
    summary["swap_consistency"] = swap
    summary["skipped"] = skipped or {"count": 0}
    return summary


def accuracy_vs_k(
    records: Iterable[dict[str, Any]], max_k: int, *, units: Iterable[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The test-time scaling curve (the shape of the paper's Figure 4) from stored records.

    Returns:
        ``{"k": [1..max_k], "voting": [...], "any": [...], "ties": [...], "greedy": float,
        "summary": <summarize() with ks=1..max_k>}``; accuracies are fractions over units.
    """
    ks = list(range(1, int(max_k) + 1))
    s = summarize(records, ks=ks, units=units)
    return {
        "k": ks,
        "voting": [s["overall"][f"voting@{k}"] for k in ks],
        "any": [s["overall"][f"any@{k}"] for k in ks],
        "ties": [s["ties"][f"voting@{k}"] for k in ks],
        "greedy": s["overall"]["greedy"],
        "summary": s,
    }


def layout_report(summary: dict[str, Any]) -> dict[str, float]:
    """What a single-order evaluation hides, in percent (NaN where nothing was measured).

    From a ``summarize``/``evaluate`` summary of a run in both orders: greedy accuracy when only
    the chosen-first half is counted (the reference's layout), greedy accuracy over both orders,
    position bias (share of "1") and swap consistency.
    """

    def pct(value: Any) -> float:
        return float("nan") if value is None else 100.0 * float(value)

    first = summary["by_order"].get(CHOSEN_FIRST, {})
    return {
        "accuracy, chosen-first layout only %": pct(first.get("greedy")),
        "accuracy, both orders %": pct(summary["overall"]["greedy"]),
        "position bias %": pct(summary["position_bias"]["greedy"]),
        "swap consistency %": pct(summary["swap_consistency"].get("greedy")),
    }


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}"


def summary_markdown(summary: dict[str, Any], title: str | None = "Evaluation") -> str:
    """A Markdown report: accuracy table (percent) by slice, then the bias diagnostics.

    ``title=None`` leaves out the heading (for display inside a notebook chapter).
    """
    ks = summary["ks"]
    names = _metric_names(ks)
    header = "| slice | n | " + " | ".join(names) + " |"
    rule = "|---|---:|" + "---:|" * len(names)
    rows = [f"# {title}", ""] if title else []
    if "scoring" in summary:  # written by evaluate(); a bare summarize() has no such keys
        after = (
            "; each benchmark's **official** numbers follow below"
            if summary.get("official")
            else ""
        )
        rows += [
            f"Scoring: **strict** in this table (every unit counts, unparseable is wrong){after}."
            f" Orders: {_ORDER_LABELS.get(summary.get('orders'), summary.get('orders'))}."
            f" Prompt style: {summary.get('prompt_style', 'paper')}.",
            "",
        ]
    rows += ["Accuracy (%) per unit (pair x order).", "", header, rule]

    def row(label: str, block: dict[str, Any], n: Any) -> str:
        return f"| {label} | {n} | " + " | ".join(_pct(block.get(m)) for m in names) + " |"

    rows.append(row("**overall**", summary["overall"], summary["overall"]["n"]))
    rows.append(row("macro (categories)", summary["macro"], summary["macro"]["n_categories"]))
    for cat, block in summary["by_category"].items():
        rows.append(row(f"category: {cat}", block, block["n"]))
    for parent, block in summary.get("by_parent_category", {}).items():
        rows.append(row(f"category group: {parent}/*", block, block["n"]))
    for order, block in summary["by_order"].items():
        rows.append(row(f"order: {order}", block, block["n"]))
    if "acc_plus" in summary:
        rows.append(row("acc+ (groups)", summary["acc_plus"], summary["acc_plus"]["n_groups"]))
    un, pb, sw = summary["unparseable"], summary["position_bias"], summary["swap_consistency"]
    wf = summary.get("well_formed", {})
    rows += [
        "",
        "| diagnostic | value |",
        "|---|---:|",
        f"| unparseable greedy (%) | {_pct(un['greedy'])} ({un['greedy_count']}) |",
        f"| unparseable samples (%) | {_pct(un['samples'])} ({un['samples_count']}) |",
        f"| well formed greedy / samples (%) | {_pct(wf.get('greedy'))} /"
        f" {_pct(wf.get('samples'))} |",
        f"| position bias greedy: share of '1' (%) | {_pct(pb['greedy'])} |",
        f"| position bias samples: share of '1' (%) | {_pct(pb['samples'])} |",
    ]
    if sw.get("n_pairs"):
        rows.append(
            f"| swap consistency greedy (%), {sw['n_pairs']} pairs | {_pct(sw['greedy'])} |"
        )
        if ks:
            k = max(ks)
            rows.append(f"| swap consistency voting@{k} (%) | {_pct(sw[f'voting@{k}'])} |")
    for name, n in summary["ties"].items():
        rows.append(f"| ties broken in {name} | {n} |")
    sk = summary.get("skipped") or {}
    rows.append(f"| pairs skipped | {sk.get('count', 0)} |")
    for why, n in (sk.get("reasons") or {}).items():
        rows.append(f"| skipped: {why} | {n} |")
    rows += _official_markdown(summary.get("official"))
    return "\n".join(rows) + "\n"


_ORDER_LABELS = {
    "both": "both (each pair judged with the chosen response first and second)",
    "random": "random (one order per pair, by a hash of its id)",
    CHOSEN_FIRST: "chosen-first (the paper's protocol: the chosen response always shown as"
    " Response 1)",
}


def _official_markdown(official: dict[str, Any] | None) -> list[str]:
    """The ``official`` scoring block as Markdown rows (greedy verdicts, percent)."""
    if not official:
        return []
    rows = ["", "Scoring: **official** (greedy verdicts scored by each benchmark's own rules).", ""]
    rows += ["| benchmark | slice | n | accuracy | acc+ |", "|---|---|---:|---:|---:|"]
    for bench, block in official.items():
        if block.get("script") is None:
            rows.append(f"| {bench} | {block.get('note', '')} | - | - | - |")
            continue
        rows.append(
            f"| {bench} | **overall** | {block['n']} | {_pct(block['overall'])} |"
            f" {_pct(block.get('acc_plus'))} |"
        )
        if "macro" in block:
            rows.append(
                f"| {bench} | macro | {len(block['by_category'])} | {_pct(block['macro'])} | - |"
            )
        for cat, b in block["by_category"].items():
            rows.append(
                f"| {bench} | category: {cat} | {b['n']} | {_pct(b['accuracy'])} |"
                f" {_pct(b.get('acc_plus'))} |"
            )
        for key in ("unparseable_excluded", "unparseable_counted_wrong", "unparseable_coin_flips"):
            if key in block:
                rows.append(f"| {bench} | {key.replace('_', ' ')} | {block[key]} | | |")
        rows.append(f"| {bench} | script | {block['script']} | | |")
    return rows


# --------------------------------------------------------------------------------------------
# The evaluator
# --------------------------------------------------------------------------------------------


class SettingsMismatch(ValueError):
    """The output folder holds records made with other settings (resuming would mix them)."""


def _check_config(path: Path, config: dict[str, Any]) -> None:
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        if diff:
            raise SettingsMismatch(
                f"{path}: this output folder holds a run with other settings {diff} (old, new);"
                " resuming would mix them: use a new --out"
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class OutputLocked(RuntimeError):
    """Another run holds the output folder's lock (two writers would duplicate records)."""


@contextlib.contextmanager
def output_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``out_dir/.lock`` while a run writes there.

    A second run on the same folder (another process, or another call in this one) raises
    :class:`OutputLocked` at once instead of appending duplicate lines to ``results.jsonl``. The
    lock goes with the process: a killed run leaves no stale lock behind.
    """
    import fcntl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handle = (out / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputLocked(
            f"{out}: another evaluation is writing here (it holds {out / LOCK_FILE}); wait for "
            "it to finish or use another --out"
        ) from None
    try:
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _holding_output_lock(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with output_lock(kwargs["out_dir"]):
            return fn(*args, **kwargs)

    return locked


@_holding_output_lock
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
    from r1reward.prompt import PROMPT_STYLES, build_messages, parse_judgment
    from r1reward.scoring import SCORING_MODES

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
    kmax = ks[-1] if ks else 0  # no ks: greedy judgments only
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(image_root) if image_root is not None else None

    seen: set[str] = set()
    for pair in pairs:
        if pair.id in seen:
            raise ValueError(f"pair id {pair.id!r} appears twice; ids must be unique")
        seen.add(pair.id)

    config = {
        "samples_per_unit": kmax,
        "orders": orders,
        "seed": int(seed),
        "batch_size": int(batch_size),
        "video_frames": int(video_frames),
        "sampler": _describe(sampler),
    }
    if prompt_style != "paper":  # only when set, so folders of earlier runs still resume
        config["prompt_style"] = prompt_style
    _check_config(out / CONFIG_FILE, config)
    store = ResultsStore(out / RESULTS_FILE)
    if store.torn_lines:
        warnings.warn(
            f"{out / RESULTS_FILE}: cut a torn last line (an interrupted write)", stacklevel=2
        )

    reader = _video_reader()
    needs_media = bool(getattr(sampler, "needs_media", True))
    supports_video = bool(getattr(sampler, "supports_video", True))

    def skip_reason(pair: Any) -> str | None:
        if not needs_media or not pair.videos:
            return None
        if not supports_video:
            return (
                "video pair: the model's processor takes no video (transformers needs torchvision)"
            )
        if reader is None and _needs_reader(pair, root):
            return "video pair: no video reader installed (pip install av)"
        return None

    reasons = {p.id: skip_reason(p) for p in pairs}
    skipped_ids = [pid for pid, why in reasons.items() if why is not None]
    skipped_set = set(skipped_ids)
    units = [
        (pair, order)
        for pair in pairs
        if pair.id not in skipped_set
        for order in unit_orders(pair.id, orders, seed)
    ]
    samples_keys = [GREEDY] + [str(i) for i in range(kmax)]

    def done(unit: tuple[Any, str]) -> bool:
        return all((unit[0].id, unit[1], s) in store for s in samples_keys)

    chunks = [units[i : i + batch_size] for i in range(0, len(units), batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc="judging", unit="prompt")
    try:
        for index, chunk in enumerate(chunks):
            if all(done(u) for u in chunk):
                if bar is not None:
                    bar.update(len(chunk))
                continue
            # The whole chunk is regenerated (same prompts, same seed) so that its samples equal
            # those of an uninterrupted run; only missing keys are written.
            convs = []
            rights = []
            for pair, order in chunk:
                r1, r2, right = _displayed(pair, order)
                images: list[Any] = []
                videos: list[Any] = []
                if needs_media:
                    images = _load_images(pair, root)
                    videos = _load_videos(pair, root, reader, video_frames)
                convs.append(
                    build_messages(
                        pair.question, r1, r2, images=images, videos=videos, style=prompt_style
                    )
                )
                rights.append(right)
            s = chunk_seed(seed, index)
            greedy_texts = sampler.sample(convs, k=1, greedy=True, seed=s)
            sampled_texts = (sampler.sample(convs, k=kmax, greedy=False, seed=s) if kmax
                             else [[] for _ in convs])
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
            store.append(records)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()

    skipped: dict[str, Any] = {"count": len(skipped_ids)}
    if skipped_ids:
        skipped["reasons"] = dict(Counter(reasons[pid] for pid in skipped_ids))
        skipped["ids"] = skipped_ids[:50]
    records = load_records(out / RESULTS_FILE)
    unit_ids = [(p.id, o) for p, o in units]
    summary = summarize(records, ks=ks, units=unit_ids, skipped=skipped)
    summary["orders"] = orders
    summary["sampler"] = _describe(sampler)
    summary["prompt_style"] = prompt_style
    summary["scoring"] = scoring
    if scoring == "official":
        from r1reward.scoring import official_scores

        summary["official"] = official_scores(
            records, unit_ids, {p.id: str(getattr(p, "source", "") or "") for p in pairs}
        )
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / SUMMARY_MD).write_text(summary_markdown(summary, title), encoding="utf-8")
    return summary


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--k expects integers like 1,5,15; got {text!r}") from exc
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"--k expects positive integers; got {text!r}")
    return ks


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help; description and examples kept line by line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1reward eval",
        description=textwrap.fill(
            "Evaluate a generative multimodal reward model on preference pairs: greedy accuracy,"
            " Voting@K and Any-correct@K (R1-Reward, Sec. 4), per category and macro, acc+ where"
            " groups exist, unparseable rate, position bias and swap consistency. Every pair is"
            " judged in both answer orders by default, because a judge that always answers '1'"
            " scores 100% when the chosen response is always shown first. Results are"
            " resumable: rerun the same command after an interruption.",
            width=88,
        ),
        formatter_class=_HelpFormatter,
        epilog=(
            "examples (each runs as printed, in this order, from an empty folder):\n"
            "  r1reward toy --n 8 --split heldout --out toy\n"
            "  r1reward eval --model const:1 --data toy/toy_heldout_seed0.jsonl --k 1,3"
            " --out runs/const --quiet\n"
            "  r1reward eval --model const:1 --data toy/toy_heldout_seed0.jsonl --k 1"
            " --orders chosen-first --scoring official --out runs/const-paper --quiet\n"
            "  r1reward build-tiny --out tiny\n"
            "  r1reward eval --model tiny --data toy/toy_heldout_seed0.jsonl --k 1,3"
            " --max-new-tokens 16 --out runs/tiny --quiet\n"
            "\n"
            + textwrap.fill(
                "The always-'1' judge (const:1) scores 100% with --orders chosen-first and 50%"
                " in both orders. For the released checkpoint on a benchmark as published (GPU,"
                " network): --model yifanzhang114/R1-Reward (the released prompt layout is then"
                " chosen) --data MMInstruction/VL-RewardBench --scoring official --orders"
                " chosen-first --dtype bfloat16 --device-map auto.",
                width=88,
            )
        ),
    )
    parser.add_argument(
        "--model",
        required=True,
        help="model folder or Hub id (loaded with r1reward.models.load_model); 'const:1' or"
        " 'const:2' is a judge that always gives that answer (shows position bias)",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="preference pairs: a file, a folder of shards, or a Hub dataset id owner/name[:split]",
    )
    parser.add_argument(
        "--format",
        default="auto",
        help="data format: auto (detected from the fields), vl-rewardbench-hub,"
        " vl-rewardbench-github, vl-rewardbench (R1-Reward's export), mm-rlhf-rewardbench,"
        " multimodal-rewardbench, r1-reward-rl, pairs (see r1reward.data.load)",
    )
    parser.add_argument("--k", type=_parse_ks, default="1,5,15", help="K values, comma separated")
    parser.add_argument(
        "--orders",
        choices=ORDER_MODES,
        default="both",
        help="answer orders: both (each pair twice), random (one per pair, by"
        " hash of its id), chosen-first (the paper's protocol: the chosen response always"
        " shown first, which a judge biased to '1' exploits)",
    )
    parser.add_argument(
        "--scoring",
        choices=("strict", "official"),
        default="strict",
        help="strict: every unit counts and unparseable is wrong; official: also each"
        " benchmark's own script's numbers (VL-RewardBench cal.py, MM-RLHF get_acc.py,"
        " Multimodal RewardBench 2_get_accuracy.py; see r1reward.scoring)",
    )
    parser.add_argument(
        "--prompt-style",
        choices=("auto", "paper", "released"),
        default="auto",
        help="prompt layout: paper (Table 1 as printed), released (the layout"
        " yifanzhang114/R1-Reward was trained with); auto picks released for that model id",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback on errors")
    parser.add_argument("--out", required=True, help="output folder (resumable)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens per judgment")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument(
        "--image-root",
        default=None,
        help="folder that relative media paths are under; absolute paths that do not exist"
        " (another machine's) are looked for under it by their tail",
    )
    parser.add_argument("--video-frames", type=int, default=8, help="frames sampled per video")
    parser.add_argument("--seed", type=int, default=0, help="sampling and random-order seed")
    parser.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16")
    parser.add_argument("--device-map", default=None, help="e.g. auto (GPU)")
    add_engine_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _load_pairs(path: str, fmt: str, image_root: str | None) -> list[Any]:
    from r1reward.data import load

    return list(load(path, None if fmt == "auto" else fmt, image_root=image_root))


def main(argv: list[str] | None = None) -> int:
    """``r1reward eval``: see ``r1reward eval --help``.

    A data, recipe or model-path error prints one line (``r1reward eval: error: ...`` naming the
    file, row and what was expected) and returns 2 without a traceback, unless ``--debug``.
    Judgments already in ``--out`` stay there (the results file is append-only).
    """
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError, RuntimeError, KeyError, ImportError) as exc:  # DataError: ValueError
        if args.debug:
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"r1reward eval: error: {text} (--debug shows the traceback)", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from r1reward.prompt import default_prompt_style

    pairs = _load_pairs(args.data, args.format, args.image_root)
    if args.limit is not None:
        pairs = pairs[: args.limit]
    if not pairs:
        print(f"r1reward eval: error: {args.data}: no pairs to evaluate", file=sys.stderr)
        return 2
    style = default_prompt_style(args.model) if args.prompt_style == "auto" else args.prompt_style
    if args.prompt_style == "auto" and style != "paper":
        print(
            f"r1reward eval: prompt style {style!r} (the layout {args.model} was trained with)",
            file=sys.stderr,
        )
    sampler: Any
    if args.model.startswith("const:"):
        answer = args.model.split(":", 1)[1]
        if answer not in ("1", "2"):
            raise ValueError(f"--model {args.model!r}: expected const:1 or const:2")
        sampler = ConstantSampler(
            f"<think>Response {answer} is better.</think><answer>{answer}</answer>"
        )
    else:
        from r1reward.models import load_model

        engine = resolve_engine(args.engine)
        # without --device-map the transformers copy stays on the CPU and only feeds vLLM its
        # weights, so vLLM may take most of the GPU
        reserve_gpu(engine, 0.3 if args.device_map else 0.85)
        kwargs: dict[str, Any] = {}
        if args.dtype:
            import torch

            kwargs["dtype"] = getattr(torch, args.dtype)
        if args.device_map:
            kwargs["device_map"] = args.device_map
        model, processor = load_model(args.model, **kwargs)
        sampler = ModelSampler(
            model,
            processor,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
            name=args.model,
            engine=engine,
        )
    summary = evaluate(
        sampler,
        pairs,
        ks=args.k,
        orders=args.orders,
        out_dir=args.out,
        batch_size=args.batch_size,
        seed=args.seed,
        video_frames=args.video_frames,
        progress=not args.quiet,
        title=f"{args.model} on {args.data}",
        prompt_style=style,
        scoring=args.scoring,
    )
    print((Path(args.out) / SUMMARY_MD).read_text(encoding="utf-8"))
    print(f"results: {Path(args.out) / RESULTS_FILE}  summary: {Path(args.out) / SUMMARY_JSON}")
    return 0 if summary["counts"]["units"] else 1


if __name__ == "__main__":
    sys.exit(main())
