"""Speed of the toy world and the readers (goal: 10,000 toy pairs in under 10 s on one core).

Run: ``.venv/bin/python benchmarks/bench_toy.py [--n 10000]``. Prints measured figures side by
side with the goal; exits 1 if the toy goal is missed. Pure Python + PIL, so one core is used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from r1reward.data import load
from r1reward.toy import world as toy

GOAL_S = 10.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = ap.parse_args(argv)

    rows = []
    for split in ("train", "heldout"):
        t0 = time.process_time()
        w0 = time.perf_counter()
        pairs = toy.make_pairs(args.n, seed=0, split=split)
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        assert len(pairs) == args.n
        rows.append((f"toy make_pairs({args.n}, split={split!r})", cpu, wall, GOAL_S))
    bench = args.shared / "benchmarks"
    for name in ("vl_rewardbench.jsonl", "mm_rlhf_rewardbench.jsonl"):
        if (bench / name).is_file():
            t0, w0 = time.process_time(), time.perf_counter()
            n = len(load(bench / name))
            rows.append(
                (
                    f"load({name}) -> {n} pairs",
                    time.process_time() - t0,
                    time.perf_counter() - w0,
                    None,
                )
            )
    print(f"{'what':50s} {'cpu s':>8s} {'wall s':>8s} {'goal s':>8s}")
    for what, cpu, wall, goal in rows:
        g = f"{goal:8.1f}" if goal else f"{'-':>8s}"
        print(f"{what:50s} {cpu:8.2f} {wall:8.2f} {g}")
    ok = all(cpu < goal for _, cpu, _, goal in rows if goal)
    print("toy speed goal:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
