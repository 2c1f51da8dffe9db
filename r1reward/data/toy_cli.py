"""``r1reward toy``: write toy preference pairs as a ``pairs`` JSONL with PNG images.

The command line of :mod:`r1reward.data.toy`, kept apart from it so that the toy world does not
import the readers and writers of :mod:`r1reward.data.io` (which import the schema, which uses the
toy teacher to swap toy pairs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from r1reward.data.io import write_pairs
from r1reward.data.toy import SPLITS, make_pairs


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
    ap.add_argument("--image-size", type=int, default=56, help="image side in pixels (default 56)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    pairs = make_pairs(args.n, seed=args.seed, split=args.split, image_size=args.image_size)
    path = args.out / f"toy_{args.split}_seed{args.seed}.jsonl"
    write_pairs(pairs, path)
    dt = time.perf_counter() - t0
    print(f"wrote {len(pairs)} {args.split} pairs to {path} in {dt:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
