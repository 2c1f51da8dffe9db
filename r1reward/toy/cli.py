"""The toy's command lines: ``r1reward toy`` (pairs as a ``pairs`` JSONL with PNG images) and
``r1reward build-tiny`` (the tiny model folder).

Kept apart from :mod:`r1reward.toy.world` so that the toy world does not import the readers and
writers of :mod:`r1reward.data.io`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from r1reward.data.io import write_pairs
from r1reward.toy.tiny_model import SIZES, build_tiny_model, read_marker
from r1reward.toy.world import IMAGE_SIZE, SPLITS, make_pairs


def main(argv: list[str] | None = None) -> int:
    """``r1reward toy --n N --split S --seed K --out DIR``: write a pairs JSONL plus PNG images."""
    ap = argparse.ArgumentParser(
        prog="r1reward toy",
        description="Write toy multimodal preference pairs as a 'pairs' JSONL with PNG images "
        "(read back with r1reward.data.load).",
    )
    ap.add_argument("--n", type=int, default=1000, help="number of pairs (default 1000)")
    ap.add_argument("--split", choices=SPLITS, default="train", help="train or heldout")
    ap.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")
    ap.add_argument(
        "--image-size",
        type=int,
        default=IMAGE_SIZE,
        help=f"image side in pixels (default {IMAGE_SIZE})",
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    pairs = make_pairs(args.n, seed=args.seed, split=args.split, image_size=args.image_size)
    path = args.out / f"toy_{args.split}_seed{args.seed}.jsonl"
    write_pairs(pairs, path)
    dt = time.perf_counter() - t0
    print(f"wrote {len(pairs)} {args.split} pairs to {path} in {dt:.1f} s", file=sys.stderr)
    return 0


def build_tiny_main(argv: list[str] | None = None) -> int:
    """``r1reward build-tiny --out DIR [--size tiny|small] [--seed N] [--pretrain-steps N]``."""
    parser = argparse.ArgumentParser(
        prog="r1reward build-tiny",
        description=(
            "Build a tiny, randomly initialised Qwen2.5-VL model folder (real "
            "Qwen2_5_VLForConditionalGeneration, tokenizer trained on the toy corpus, Qwen's "
            "special tokens and chat template, image processor for 56x56 toy images). "
            "Reuses a complete folder built with the same settings."
        ),
    )
    parser.add_argument("--out", required=True, help="folder to write (reused if complete)")
    parser.add_argument(
        "--size",
        default="tiny",
        choices=sorted(SIZES),
        help="tiny: about 0.9M parameters (tests, ci); small: about 3M (cpu profile)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and corpus seed")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="steps of caption pretraining on toy scenes after initialisation (default 0: none)",
    )
    parser.add_argument("--pretrain-lr", type=float, default=3e-3, help="its learning rate")
    parser.add_argument("--pretrain-batch-size", type=int, default=16, help="scenes per step")
    parser.add_argument(
        "--pretrain-text-batch-size",
        type=int,
        default=0,
        help="analysis-shaped texts per step read alongside the captions (default 0: none; the "
        "cpu recipe uses 32)",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = build_tiny_model(
            args.out,
            size=args.size,
            seed=args.seed,
            pretrain_steps=args.pretrain_steps,
            pretrain_lr=args.pretrain_lr,
            pretrain_batch_size=args.pretrain_batch_size,
            pretrain_text_batch_size=args.pretrain_text_batch_size,
        )
    except FileExistsError as err:
        print(f"r1reward build-tiny: {err}", file=sys.stderr)
        return 1
    info = read_marker(out) or {}
    print(
        f"{out}: {info.get('n_params', 0):,} parameters, size={args.size}, seed={args.seed} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    held = (info.get("pretrain_report") or {}).get("heldout")
    if held:
        print(
            f"caption pretraining, {args.pretrain_steps} steps: held-out caption loss "
            f"{held['loss']:.3f}, token accuracy {held['token_accuracy']:.3f}, fact accuracy "
            f"{held['fact_accuracy']:.3f}"
        )
    reading = (info.get("pretrain_report") or {}).get("reading")
    if reading:
        print(
            f"reading analysis text: first right/wrong {reading['first_mark_accuracy']:.3f} "
            f"(chance 0.5), verdict {reading['verdict_accuracy']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
