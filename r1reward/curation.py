"""Teacher traces with difficulty: the data curation of R1-Reward's cold start (paper Sec. 4.3).

For every preference pair a teacher (GPT-4o in the paper) is asked for a Table-1 judgment, up to
``max_tries`` times (3) at temperature 1, until its verdict matches the human label. The number of
tries is the pair's *difficulty*: 1, 2, 3, or 4 when the teacher was never right. Cold-start SFT
trains on the accepted analyses; RL then trains only on the hard pairs (difficulty >= 2), which
:func:`select_hard` picks.

Teachers share one small protocol, :class:`Teacher`: ``analyse(pairs, attempt) -> list[Reply]``,
one :class:`Reply` (generated text or an error string) per pair. Three are provided:

- :class:`~r1reward.toy.teacher.ToyTeacher` (kind ``toy``): a noisy oracle for the toy world whose
  error grows with the pair's level; it lives in :mod:`r1reward.toy.teacher` and is imported only
  when asked for (:data:`TEACHERS`), so nothing on the real path imports the toy world;
- :class:`TransformersTeacher`: any local Qwen2.5-VL-style model through :func:`r1reward.models.load_model`;
- :class:`OpenAITeacher`: any OpenAI-compatible chat-completions endpoint (GPT-4o, vLLM,
  ``r1reward serve``) through the shared :class:`r1reward.clients.ChatClient` (a concurrency
  limit, timeouts and retries with exponential backoff).

:func:`curate` writes an append-only JSONL (one record per finished pair, flushed and fsynced),
so a killed run restarts where it stopped; a torn last line is dropped and that pair redone.
Transport failures never crash the run: they are recorded per attempt, and a pair whose tries
were cut short by them is recorded as ``failed`` (no difficulty) and retried on the next run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from r1reward.clients import ChatClient, ChatError, endpoint, image_to_data_url
from r1reward.data.jsonl import read_jsonl
from r1reward.data.sources import get_source
from r1reward.lazy import import_object
from r1reward.prompt import build_prompt, pair_messages, parse_judgment

__all__ = [
    "Reply",
    "Teacher",
    "TransformersTeacher",
    "OpenAITeacher",
    "curate",
    "read_records",
    "select_hard",
    "difficulty_histogram",
    "make_teacher",
    "TEACHERS",
    "main",
]

#: The teacher kinds :func:`make_teacher` knows: kind -> ``"module:Class"``, imported on first use
#: (:func:`r1reward.lazy.import_object`), so the toy teacher costs no import of the toy world until
#: a recipe asks for it.
TEACHERS: dict[str, str] = {
    "toy": "r1reward.toy.teacher:ToyTeacher",
    "transformers": "r1reward.curation:TransformersTeacher",
    "openai": "r1reward.curation:OpenAITeacher",
}

NEVER = 4  #: difficulty of a pair the teacher never got right within ``max_tries``


@dataclass(frozen=True)
class Reply:
    """One teacher answer: the generated text, or ``error`` when none could be obtained."""

    text: str | None
    error: str | None = None


@runtime_checkable
class Teacher(Protocol):
    """Anything that writes Table-1 judgments for a batch of pairs.

    ``attempt`` is 1-based; sampling teachers use it (with their seed) so every try differs.
    ``analyse`` must not raise for per-pair failures: it returns ``Reply(None, error)``.
    """

    name: str

    def analyse(self, pairs: Sequence[Any], attempt: int) -> list[Reply]: ...


# --------------------------------------------------------------------------------------------
# Teachers
# --------------------------------------------------------------------------------------------


class TransformersTeacher:
    """A local model as teacher: :func:`r1reward.models.load_model` + :func:`r1reward.rollout.generate`.

    Each try samples at ``temperature`` (1.0 as in the paper) with seed ``seed + attempt``.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        temperature: float = 1.0,
        max_new_tokens: int = 512,
        batch_size: int = 8,
        seed: int = 0,
        model: Any = None,
        processor: Any = None,
    ) -> None:
        if model is None or processor is None:
            from r1reward.models import load_model

            model, processor = load_model(str(model_path))
        self.model, self.processor = model, processor
        self.name = f"transformers:{model_path}"
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed

    def analyse(self, pairs: Sequence[Any], attempt: int) -> list[Reply]:
        from r1reward.rollout import generate

        try:
            outs = generate(
                self.model,
                self.processor,
                [pair_messages(p) for p in pairs],
                do_sample=True,
                temperature=self.temperature,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
                seed=self.seed + attempt,
            )
        except Exception as exc:  # a failed batch is recorded for every pair, never raised
            return [Reply(None, f"{type(exc).__name__}: {exc}") for _ in pairs]
        return [Reply(group[0].text) for group in outs]


class OpenAITeacher:
    """Any OpenAI-compatible ``/chat/completions`` endpoint as teacher (paper: GPT-4o).

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``; default
            ``$R1REWARD_TEACHER_BASE_URL``.
        model: model name sent in the request; default ``$R1REWARD_TEACHER_MODEL``.
        api_key: default ``$R1REWARD_TEACHER_API_KEY``, then ``$OPENAI_API_KEY`` (may be empty for
            local servers).
        concurrency: at most this many requests in flight.
        timeout: seconds per request (connect, read, write).
        max_retries: retries after the first request on connection errors, timeouts, HTTP 429
            and 5xx, and on a 200 that is not a chat completion (a sampled reply may come right
            next time), waiting ``backoff * 2**(k-1)`` seconds (plus up to 10 % jitter) before
            retry k. Other HTTP errors are not retried.
        temperature, max_tokens: sampling settings (temperature 1 as in the paper).

    Images are sent inline as ``data:`` URLs (``image_url`` content parts).
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        temperature: float = 1.0,
        max_tokens: int = 1024,
    ) -> None:
        base_url, model, api_key = endpoint(
            "OpenAITeacher",
            "R1REWARD_TEACHER",
            base_url,
            model,
            api_key,
            key_fallback="OPENAI_API_KEY",
        )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client = ChatClient(
            "OpenAITeacher",
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            jitter=0.1,
            retry_bad_replies=True,
            concurrency=concurrency,
        )

    def close(self) -> None:
        """Close the HTTP client and the worker threads."""
        self._client.close()

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_body(self, pair: Any) -> dict:
        """The chat-completions request for one pair (Table-1 prompt, images as data URLs)."""
        content: list[dict] = [
            {"type": "image_url", "image_url": {"url": image_to_data_url(img)}}
            for img in (pair.images or [])
        ]
        content.append(
            {"type": "text", "text": build_prompt(pair.question, pair.response_1, pair.response_2)}
        )
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _one(self, pair: Any) -> Reply:
        try:
            body = self.request_body(pair)
        except Exception as exc:  # unreadable image etc.: recorded, not raised
            return Reply(None, f"request for pair {pair.id!r}: {type(exc).__name__}: {exc}")
        try:
            return Reply(self._client.complete(body))
        except ChatError as exc:
            return Reply(None, str(exc))

    def analyse(self, pairs: Sequence[Any], attempt: int) -> list[Reply]:
        return list(self._client.pool.map(self._one, pairs))


def make_teacher(spec: dict) -> Teacher:
    """Build a teacher from a recipe's ``data.teacher`` section: ``kind`` (a key of
    :data:`TEACHERS`, default ``toy``) and the class's keyword arguments (``transformers`` takes
    its model as ``model_path``).

    Raises:
        ValueError: ``kind`` is not in :data:`TEACHERS`.
    """
    spec = dict(spec or {"kind": "toy"})
    kind = spec.pop("kind", "toy")
    if kind not in TEACHERS:
        raise ValueError(f"data.teacher.kind={kind!r}: expected one of {sorted(TEACHERS)}")
    return import_object(TEACHERS[kind])(**spec)


def __getattr__(name: str) -> Any:
    """``from r1reward.curation import ToyTeacher`` keeps working: the toy teacher is imported from
    :mod:`r1reward.toy.teacher` when that name is first asked for, not when this module loads."""
    if name == "ToyTeacher":
        return import_object(TEACHERS["toy"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# The resumable curation loop
# --------------------------------------------------------------------------------------------


def read_records(path: str | Path, *, repair: bool = False) -> dict[str, dict]:
    """Read a curation JSONL into ``{pair id: last record}``.

    A torn last line (a run killed mid-write) is ignored, and removed from the file when
    ``repair`` is true so that appends start on a clean line. A bad line anywhere else raises.

    Raises:
        ValueError: a malformed line that is not the last one, naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return {}
    lines = read_jsonl(
        path, torn_tail="cut" if repair else "drop", check=_check_record, what="curation record"
    )
    return {str(rec["id"]): rec for rec in lines}


def _check_record(rec: Any) -> None:
    if not isinstance(rec, dict) or "id" not in rec or "status" not in rec:
        raise ValueError("expected an object with 'id' and 'status'")


def _append(fh: Any, record: dict) -> None:
    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _apply(pair: Any, rec: dict) -> Any:
    meta = dict(pair.meta or {})
    # `difficulty` becomes the number of tries; the pair's own level stays where ToyTeacher.level
    # (and any analysis by level) looks for it
    if pair.difficulty is not None:
        meta.setdefault("level", pair.difficulty)
    meta["teacher_analysis"] = rec.get("analysis")
    meta["curation"] = {"teacher": rec.get("teacher"), "tries": len(rec.get("attempts", []))}
    return dataclasses.replace(pair, difficulty=rec["difficulty"], meta=meta)


def curate(
    pairs: Sequence[Any],
    teacher: Teacher,
    out_path: str | Path,
    max_tries: int = 3,
    *,
    batch_size: int = 32,
    retry_failed: bool = True,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
) -> list[Any]:
    """Ask ``teacher`` up to ``max_tries`` times per pair; record difficulty (paper Sec. 4.3).

    A try is *correct* when its reply parses (:func:`r1reward.prompt.parse_judgment`) to the
    label ``pair.preferred``; the first correct try's analysis is kept and its index is the
    difficulty (1..max_tries); a pair never answered correctly gets difficulty ``4``. A reply
    without a usable verdict counts as a wrong try (outcome ``no_verdict``). A try that got no
    reply at all (connection refused, timeout, HTTP 500 after the teacher's own retries) is
    outcome ``error``; if the pair then has no correct try it is recorded with status
    ``failed`` and no difficulty (the teacher, not the pair, was at fault) and is redone on the
    next run when ``retry_failed``.

    Output: ``out_path`` JSONL, one record per pair
    ``{"id", "status": "done"|"failed", "difficulty", "analysis", "preferred", "teacher",
    "attempts": [{"try", "outcome", "verdict", "error", "text"}]}``, appended, flushed and
    fsynced one by one. Pairs already ``done`` in the file are skipped (resume); a torn last
    line is dropped and its pair redone.

    Returns:
        The curated pairs (status ``done``), in input order, as copies with ``difficulty`` set,
        ``meta["teacher_analysis"]`` = the accepted analysis (``None`` for difficulty 4) and
        ``meta["level"]`` = the pair's difficulty before curation, when it had one (the toy's
        own level).

    Raises:
        ValueError: duplicate pair ids, or ``max_tries < 1``.
    """
    if max_tries < 1:
        raise ValueError(f"curate: max_tries must be >= 1, got {max_tries}")
    ids = [str(p.id) for p in pairs]
    dup = [i for i, n in Counter(ids).items() if n > 1]
    if dup:
        raise ValueError(f"curate: duplicate pair ids {dup[:5]}; ids must be unique")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_records(out_path, repair=True)
    todo = [
        p
        for p in pairs
        if str(p.id) not in done or (retry_failed and done[str(p.id)].get("status") != "done")
    ]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(pairs),
        initial=len(pairs) - len(todo),
        desc=f"curate ({getattr(teacher, 'name', 'teacher')})",
        disable=not progress,
        unit="pair",
    )
    with out_path.open("a", encoding="utf-8") as fh:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            attempts: dict[str, list[dict]] = {str(p.id): [] for p in chunk}
            accepted: dict[str, tuple[int, str]] = {}
            pending = list(chunk)
            for attempt in range(1, max_tries + 1):
                if not pending:
                    break
                try:
                    replies = teacher.analyse(pending, attempt)
                    if len(replies) != len(pending):
                        raise RuntimeError(f"returned {len(replies)} replies for {len(pending)}")
                except Exception as exc:  # a teacher bug must not lose the run
                    replies = [Reply(None, f"teacher raised {type(exc).__name__}: {exc}")] * len(
                        pending
                    )
                still = []
                for pair, reply in zip(pending, replies):
                    pid = str(pair.id)
                    entry: dict[str, Any] = {
                        "try": attempt,
                        "error": reply.error,
                        "text": reply.text,
                    }
                    if reply.text is None:
                        entry.update(outcome="error", verdict=None)
                    else:
                        j = parse_judgment(reply.text)
                        entry["verdict"] = j.answer
                        if j.answer is None:
                            entry.update(outcome="no_verdict", error=reply.error or "no verdict")
                        elif j.answer == pair.preferred:
                            entry["outcome"] = "correct"
                            accepted[pid] = (attempt, j.analysis)
                        else:
                            entry["outcome"] = "wrong"
                    attempts[pid].append(entry)
                    if pid not in accepted:
                        still.append(pair)
                pending = still
            for pair in chunk:
                pid = str(pair.id)
                tries = attempts[pid]
                if pid in accepted:
                    status, difficulty, analysis = "done", accepted[pid][0], accepted[pid][1]
                elif any(t["outcome"] == "error" for t in tries):
                    status, difficulty, analysis = "failed", None, None
                else:
                    status, difficulty, analysis = "done", NEVER, None
                rec = {
                    "id": pid,
                    "status": status,
                    "difficulty": difficulty,
                    "analysis": analysis,
                    "preferred": pair.preferred,
                    "teacher": getattr(teacher, "name", type(teacher).__name__),
                    "attempts": tries,
                }
                _append(fh, rec)
                done[pid] = rec
                if on_record is not None:
                    on_record(rec)
                bar.update(1)
    bar.close()
    return [
        _apply(p, done[str(p.id)]) for p in pairs if done.get(str(p.id), {}).get("status") == "done"
    ]


def select_hard(pairs: Iterable[Any], min_difficulty: int = 2) -> list[Any]:
    """The RL training set: pairs the teacher needed ``>= min_difficulty`` tries for (Sec. 4.3).

    Difficulty 4 (never right) is included. Pairs without a difficulty are left out.
    """
    return [p for p in pairs if p.difficulty is not None and p.difficulty >= min_difficulty]


def difficulty_histogram(pairs: Iterable[Any], max_tries: int = 3) -> dict[int, int]:
    """``{1: n1, ..., max_tries: n, 4: never}`` counts of curated difficulty."""
    counts = Counter(p.difficulty for p in pairs if p.difficulty is not None)
    return {d: counts.get(d, 0) for d in [*range(1, max_tries + 1), NEVER]}


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="r1reward curate",
        description=(
            "Teacher traces with difficulty (R1-Reward Sec. 4.3): ask a teacher up to N times per "
            "pair for a Table-1 judgment, keep the first whose verdict matches the label, and "
            "record the number of tries (4 = never right). Output is an append-only JSONL that "
            "resumes: run the same command again after a crash."
        ),
        epilog=(
            "examples:\n"
            "  r1reward curate --toy 1000 --out runs/curated.jsonl\n"
            "  R1REWARD_TEACHER_BASE_URL=http://localhost:8000/v1 R1REWARD_TEACHER_MODEL=gpt-4o \\\n"
            "    r1reward curate --pairs data/pairs.jsonl --teacher openai --out runs/curated.jsonl\n"
            "  r1reward curate --pairs data/pairs.jsonl --teacher transformers "
            "--model-path artifacts/cpu/sft-model --out runs/c.jsonl"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="input pairs file (any format r1reward.data.load reads)")
    src.add_argument("--toy", type=int, metavar="N", help="use N toy pairs (train split)")
    p.add_argument("--toy-seed", type=int, default=0, help="seed of the toy pairs (default 0)")
    p.add_argument("--out", required=True, help="output JSONL (appended to; resumes)")
    p.add_argument("--teacher", choices=sorted(TEACHERS), default="toy", help="teacher kind")
    p.add_argument("--max-tries", type=int, default=3, help="tries per pair (default 3)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs sent to the teacher at once")
    p.add_argument("--no-retry-failed", action="store_true", help="do not redo 'failed' pairs")
    p.add_argument("--seed", type=int, default=0, help="toy/transformers teacher seed")
    g = p.add_argument_group("toy teacher")
    g.add_argument("--base-error", type=float, default=0.1)
    g.add_argument("--error-per-difficulty", type=float, default=0.15)
    g = p.add_argument_group("transformers teacher")
    g.add_argument("--model-path", help="local model folder or hub id")
    g.add_argument("--max-new-tokens", type=int, default=512)
    g = p.add_argument_group("openai teacher (defaults from R1REWARD_TEACHER_* env vars)")
    g.add_argument("--base-url", help="default $R1REWARD_TEACHER_BASE_URL")
    g.add_argument("--model", help="default $R1REWARD_TEACHER_MODEL")
    g.add_argument(
        "--api-key", help="default $R1REWARD_TEACHER_API_KEY, then $OPENAI_API_KEY (prefer env)"
    )
    g.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    g.add_argument("--max-retries", type=int, default=4, help="retries per request")
    g.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """``r1reward curate``: see ``r1reward curate --help``."""
    args = _parser().parse_args(argv)
    if args.toy is not None:
        pairs = get_source("toy").make_pairs(args.toy, seed=args.toy_seed, split="train")
    else:
        from r1reward.data import load

        pairs = load(args.pairs)
    if args.teacher == "toy":
        teacher: Teacher = make_teacher(
            {
                "kind": "toy",
                "seed": args.seed,
                "base_error": args.base_error,
                "error_per_difficulty": args.error_per_difficulty,
            }
        )
    elif args.teacher == "transformers":
        if not args.model_path:
            print("r1reward curate: --teacher transformers needs --model-path", file=sys.stderr)
            return 2
        teacher = TransformersTeacher(
            args.model_path, max_new_tokens=args.max_new_tokens, seed=args.seed
        )
    else:
        try:
            teacher = OpenAITeacher(
                args.base_url,
                args.model,
                args.api_key,
                concurrency=args.concurrency,
                timeout=args.timeout,
                max_retries=args.max_retries,
                backoff=args.backoff,
            )
        except ValueError as exc:
            print(f"r1reward curate: {exc}", file=sys.stderr)
            return 2
    curated = curate(
        pairs,
        teacher,
        args.out,
        args.max_tries,
        batch_size=args.batch_size,
        retry_failed=not args.no_retry_failed,
        progress=not args.quiet,
    )
    records = read_records(args.out)
    failed = sum(1 for r in records.values() if r["status"] == "failed")
    hist = difficulty_histogram(curated, args.max_tries)
    print(
        f"curated {len(curated)}/{len(pairs)} pairs -> {args.out}; difficulty {hist}; "
        f"hard (>=2): {len(select_hard(curated))}; failed (redo on rerun): {failed}"
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
