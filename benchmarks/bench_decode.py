"""Sampling speed: r1reward's decode loop against ``model.generate``, side by side in one run.

Both sample the same toy prompts (Table-1 prompt + one 56x56 image) from the same model with the
same seed through :func:`r1reward.rollout.generate`; once with :mod:`r1reward.decode` (the
default) and once with it switched off, so that ``model.generate`` produces every token. The
two alternate for ``--rounds`` rounds; the script prints the median seconds per call, new tokens
per second, the ratio, and whether the two produced the same completions and log-probabilities
(they must: the loop is bit-for-bit ``generate``).

    .venv/bin/python benchmarks/bench_decode.py                  # tiny model, 8 x 2 samples
    .venv/bin/python benchmarks/bench_decode.py --model artifacts/cpu/sft-... --prompts 32 --k 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: a fresh tiny model)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=2, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from r1reward import decode
    from r1reward.models import load_model
    from r1reward.prompt import pair_messages
    from r1reward.rollout import generate
    from r1reward.toy.tiny_model import build_tiny_model
    from r1reward.toy.world import make_pairs

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or build_tiny_model(Path(tmp) / "tiny", size="tiny", seed=0)
        model, processor = load_model(path)
    convs = [pair_messages(p) for p in make_pairs(args.prompts, seed=0)]
    kw = dict(
        num_return_sequences=args.k,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.prompts,
        seed=0,
        return_logprobs=True,
    )
    supported = decode.supported

    def run(loop: bool):
        decode.supported = supported if loop else (lambda *a, **k: False)
        try:
            t0 = time.perf_counter()
            out = generate(model, processor, convs, **kw)
            return time.perf_counter() - t0, out
        finally:
            decode.supported = supported

    run(True), run(False)  # warm-up
    times: dict[str, list[float]] = {"decode loop": [], "generate": []}
    outs: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, loop in (("decode loop", True), ("generate", False)):
            dt, out = run(loop)
            times[name].append(dt)
            outs[name] = [[(c.token_ids, c.logprobs) for c in g] for g in out]
    tokens = sum(len(ids) for g in outs["generate"] for ids, _ in g)
    print(
        f"model {args.model or 'tiny (fresh)'}; {args.prompts} prompts x {args.k} samples, "
        f"<= {args.max_new_tokens} new tokens ({tokens} sampled), {args.rounds} alternating "
        f"rounds, torch threads {args.threads}, {'supported' if supported(model) else 'NOT supported: both are generate'}"
    )
    print(f"{'sampler':12s} {'median s':>9s} {'tokens/s':>9s}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, m in med.items():
        print(f"{name:12s} {m:9.3f} {tokens / m:9.0f}")
    same = outs["decode loop"] == outs["generate"]
    print(
        f"ratio generate / decode loop: {med['generate'] / med['decode loop']:.2f}x; "
        f"identical tokens and log-probs: {'yes' if same else 'NO'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
