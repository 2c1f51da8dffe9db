"""Voting@K sampling speed: batched evaluator vs one ``generate`` call per sample.

The released R1-Reward evaluation code (paper Sec. 4.3, Voting@K) draws the K judgments of a
pair by calling ``model.generate`` once per sample. ``r1reward.evaluate`` draws them in one call
per batch of prompts, the K samples sharing each prompt through ``num_return_sequences``
(left padding). This script runs both on the same toy pairs with the same tiny model, in one
process, and prints the two wall-clock times, the speedup and the Voting@K / Any-correct@K
accuracies each path measured (they differ only by sampling noise: the RNG streams differ).

    .venv/bin/python benchmarks/bench_voting.py              # 8 pairs x 2 orders x K=15
    .venv/bin/python benchmarks/bench_voting.py --pairs 4 --max-new-tokens 32

The model is the tiny Qwen2.5-VL (``r1reward.toy.tiny_model.build_tiny_model``) or any ``--model`` path.
Goal (issue 5): batched at least 5x faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def reference_loop(model, processor, conversations, *, k, max_new_tokens, temperature, seed):
    """The reference's pattern: for each prompt, for each of the K samples, one generate call."""
    from r1reward.rollout import generate

    texts = []
    for i, conv in enumerate(conversations):
        samples = []
        for j in range(k):
            out = generate(
                model,
                processor,
                [conv],
                num_return_sequences=1,
                do_sample=True,
                temperature=temperature,
                max_new_tokens=max_new_tokens,
                batch_size=1,
                seed=seed + i * k + j,
            )
            samples.append(out[0][0].text)
        texts.append(samples)
    return texts


def voting_accuracy(texts, rights, k):
    """(Voting@k, Any-correct@k) over units, with the evaluator's parse and vote."""
    from r1reward.evaluate import hash_verdict, vote
    from r1reward.prompt import parse_judgment

    n_vote = n_any = 0
    for u, (samples, right) in enumerate(zip(texts, rights)):
        answers = [parse_judgment(t).answer for t in samples[:k]]
        verdict, _ = vote(answers, tiebreak=hash_verdict(str(u)))
        n_vote += verdict == right
        n_any += right in answers
    return n_vote / len(rights), n_any / len(rights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: build the tiny one)")
    parser.add_argument("--pairs", type=int, default=8, help="toy held-out pairs (x2 orders)")
    parser.add_argument("--k", type=int, default=15, help="samples per prompt (Voting@K)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batched call")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from r1reward.evaluate import ModelSampler, displayed, evaluate, unit_orders
    from r1reward.models import load_model
    from r1reward.prompt import build_messages
    from r1reward.toy.tiny_model import build_tiny_model
    from r1reward.toy.world import make_pairs

    tmp = Path(tempfile.mkdtemp(prefix="bench_voting_"))
    try:
        model_path = args.model or build_tiny_model(tmp / "tiny")
        model, processor = load_model(model_path)
        pairs = make_pairs(args.pairs, split="heldout")
        units = [(p, o) for p in pairs for o in unit_orders(p.id, "both")]
        convs, rights = [], []
        for pair, order in units:
            r1, r2, right = displayed(pair, order)
            convs.append(build_messages(pair.question, r1, r2, images=pair.images))
            rights.append(right)
        sampler = ModelSampler(
            model,
            processor,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
        sampler.sample(convs[:1], k=2, greedy=False)  # warm-up (lazy init, first-call costs)

        t0 = time.perf_counter()
        batched = []
        for start in range(0, len(convs), args.batch_size):
            batched += sampler.sample(
                convs[start : start + args.batch_size], k=args.k, greedy=False, seed=args.seed
            )
        t_batched = time.perf_counter() - t0

        t0 = time.perf_counter()
        looped = reference_loop(
            model,
            processor,
            convs,
            k=args.k,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
        t_loop = time.perf_counter() - t0

        # the full evaluator (greedy + K samples, parsing, JSONL, summary) for reference
        t0 = time.perf_counter()
        summary = evaluate(
            sampler,
            pairs,
            ks=(1, 5, args.k),
            orders="both",
            out_dir=tmp / "eval",
            batch_size=args.batch_size,
            seed=args.seed,
            progress=False,
        )
        t_eval = time.perf_counter() - t0

        n_samples = len(convs) * args.k
        n_tokens_b = sum(len(t) for s in batched for t in s)
        n_tokens_l = sum(len(t) for s in looped for t in s)
        vb, ab = voting_accuracy(batched, rights, args.k)
        vl, al = voting_accuracy(looped, rights, args.k)
        print(f"Voting@{args.k} sampling on {len(pairs)} toy held-out pairs x 2 orders")
        print(f"model: {model_path}  ({sum(p.numel() for p in model.parameters()):,} params)")
        print(
            f"machine: {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__},"
            f" {args.threads} thread(s), max_new_tokens={args.max_new_tokens},"
            f" batch_size={args.batch_size}"
        )
        print()
        print(
            f"| path | generate calls | samples | chars generated | seconds | Voting@{args.k} | Any@{args.k} |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        n_calls_b = -(-len(convs) // args.batch_size)
        print(
            f"| batched (num_return_sequences={args.k}) | {n_calls_b} | {n_samples} |"
            f" {n_tokens_b} | {t_batched:.2f} | {100 * vb:.1f} | {100 * ab:.1f} |"
        )
        print(
            f"| one generate call per sample (reference) | {n_samples} | {n_samples} |"
            f" {n_tokens_l} | {t_loop:.2f} | {100 * vl:.1f} | {100 * al:.1f} |"
        )
        print()
        print(f"speedup: {t_loop / t_batched:.1f}x (goal >= 5x)")
        print(
            f"full evaluate() with greedy + K samples, parsing, JSONL and summary:"
            f" {t_eval:.2f} s; its Voting@{args.k} = {100 * summary['overall'][f'voting@{args.k}']:.1f} %,"
            f" unparseable samples {100 * summary['unparseable']['samples']:.1f} %"
        )
        print(
            f"(accuracies differ between the three runs by sampling noise alone: other random"
            f" streams, {len(convs)} units)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
