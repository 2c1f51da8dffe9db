"""How fast this machine multiplies float32 matrices: the ceiling under the toy's training time.

The toy model's training steps (caption pretraining, SFT, the RL update) are mostly matrix
products of the tiny Qwen2.5-VL's shapes (hidden 96, MLP 384, vocabulary ~1,000). This prints
the GFLOP/s torch reaches on one large product and on those shapes, at 1 and 2 threads, so a
reader can compare the machine that measured ``make book`` with their own.

    .venv/bin/python benchmarks/bench_matmul.py
"""

from __future__ import annotations

import argparse
import sys
import time

SHAPES = [  # (M, K, N): rows x inner x outputs
    (1024, 1024, 1024),  # a large square product: the machine's ceiling
    (3344, 96, 384),  # a pretraining step's tokens through an MLP projection (gate/up)
    (3344, 384, 96),  # ... and back (down)
    (3344, 96, 1024),  # ... through the language-model head
    (32, 96, 384),  # one decode step of 32 rows (sampling)
]


def gflops(m: int, k: int, n: int, threads: int, seconds: float) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - t0) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per shape and thread count")
    args = parser.parse_args(argv)
    import torch

    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'M x K x N':>18s} {'1 thread':>10s} {'2 threads':>10s}   GFLOP/s")
    for m, k, n in SHAPES:
        one, two = (gflops(m, k, n, t, args.seconds) for t in (1, 2))
        print(f"{f'{m} x {k} x {n}':>18s} {one:10.1f} {two:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
