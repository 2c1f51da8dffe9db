"""``r1reward eval``: the command line of :func:`r1reward.evaluate.evaluate` (``--help`` runs as
printed)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

from r1reward.data import load
from r1reward.engines import add_engine_argument, reserve_gpu, resolve_engine
from r1reward.evaluate.run import evaluate
from r1reward.evaluate.samplers import ConstantSampler, ModelSampler
from r1reward.evaluate.store import RESULTS_FILE, SUMMARY_JSON, SUMMARY_MD
from r1reward.evaluate.voting import ORDER_MODES
from r1reward.models import load_model
from r1reward.prompt import default_prompt_style

__all__ = ["build_parser", "main"]


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
    """The parser of ``r1reward eval`` (its epilog's examples run as printed)."""
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


def main(argv: list[str] | None = None) -> int:
    """``r1reward eval``: see ``r1reward eval --help``.

    A data, recipe or model-path error prints one line (``r1reward eval: error: ...`` naming the
    file, row and what was expected) and returns 2 without a traceback, unless ``--debug``.
    Judgments already in ``--out`` stay there (the results file is append-only).
    """
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError, RuntimeError, KeyError, ImportError) as exc:  # DataError too
        if args.debug:
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"r1reward eval: error: {text} (--debug shows the traceback)", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    pairs = list(load(args.data, args.format, image_root=args.image_root))
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
    sampler = _sampler(args)
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


def _sampler(args: argparse.Namespace) -> ConstantSampler | ModelSampler:
    """The judge ``--model`` names: a constant (``const:1``/``const:2``) or a loaded model."""
    if args.model.startswith("const:"):
        answer = args.model.split(":", 1)[1]
        if answer not in ("1", "2"):
            raise ValueError(f"--model {args.model!r}: expected const:1 or const:2")
        return ConstantSampler(
            f"<think>Response {answer} is better.</think><answer>{answer}</answer>"
        )
    engine = resolve_engine(args.engine)
    # without --device-map the transformers copy stays on the CPU and only feeds vLLM its
    # weights, so vLLM may take most of the GPU
    reserve_gpu(engine, 0.3 if args.device_map else 0.85)
    kwargs: dict[str, Any] = {}
    if args.dtype:
        kwargs["dtype"] = getattr(torch, args.dtype)
    if args.device_map:
        kwargs["device_map"] = args.device_map
    model, processor = load_model(args.model, **kwargs)
    return ModelSampler(
        model,
        processor,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        name=args.model,
        engine=engine,
    )


if __name__ == "__main__":
    sys.exit(main())
