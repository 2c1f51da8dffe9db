"""RL step throughput: r1reward's trainer against TRL's GRPOTrainer, side by side in one run.

Both train the same tiny Qwen2.5-VL on the same toy prompts (Table-1 prompt + one 56x56 image),
with the same batch (``--prompts`` prompts x ``--generations`` samples = one optimizer step),
the same completion budget (``--max-new-tokens``), one PPO/GRPO iteration per batch, no
reference model (KL coefficient 0), sampling at temperature 1, float32 on the CPU, and the same
reward (format + result of the R1-Reward). Both are GRPO here (r1reward ``--algo grpo``), so the
algorithm is the same and only the machinery differs. Each runs ``--warmup`` steps that are not
timed, then ``--steps`` timed steps, and the two alternate for ``--rounds`` rounds (the machine
may be shared: alternating spreads outside load over both); the script prints the median
seconds per step, samples/s, the mean completion length each produced, and the ratios.

By default every completion of both trainers is exactly ``--max-new-tokens`` long: a patch of
``GenerationMixin.generate`` (TRL's sampler) and of ``r1reward.decode.sample`` (r1reward's) adds
``min_new_tokens`` (the stop tokens are masked until then) and suppresses the vision tokens. Without it the two sample different lengths from an untrained model
(their random streams differ), and samples/s would compare different amounts of work;
``--free-length`` turns the patch off.

    .venv/bin/python benchmarks/bench_rl_vs_trl.py                   # defaults: 4 x 2, 64 tokens
    .venv/bin/python benchmarks/bench_rl_vs_trl.py --model artifacts/cpu/sft-... --steps 6

TRL's defaults assume a GPU; the CPU-safe arguments are set explicitly below (``use_cpu``, no
bf16/fp16, no vLLM, ``report_to="none"``, no checkpoints, no dataloader workers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _model(path: str | None, tmp: str) -> str:
    if path:
        return path
    from r1reward.toy.tiny_model import build_tiny_model  # a fresh tiny model per run (seconds)

    return str(build_tiny_model(Path(tmp) / "tiny-model", size="tiny", seed=0))


VISION_TOKENS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def _fix_length(n: int) -> None:
    """Make every ``generate`` call produce exactly ``n`` new tokens (both trainers call it):
    the stop tokens are masked until ``n`` (``min_new_tokens``) and the vision tokens always
    (``suppress_tokens``; TRL suppresses the image token itself, r1reward cuts a completion
    before a sampled vision token, so an untrained model's completions would be cut short).
    r1reward samples through :func:`r1reward.decode.sample`, which does not go through
    ``generate``, so the same two settings are given to it as well."""
    from transformers import GenerationMixin

    original = GenerationMixin.generate

    def generate(self, *args, **kwargs):
        vision = [
            getattr(self.config, k)
            for k in VISION_TOKENS
            if getattr(self.config, k, None) is not None
        ]
        kwargs.update(min_new_tokens=n, suppress_tokens=vision)
        return original(self, *args, **kwargs)

    GenerationMixin.generate = generate

    from r1reward import decode  # r1reward's sampler (model.generate's tokens, its own loop)

    sample = decode.sample

    def fixed_sample(model, inputs, **kwargs):
        config = decode.base_model(model).config
        vision = [getattr(config, k) for k in VISION_TOKENS if getattr(config, k, None) is not None]
        kwargs.update(min_new_tokens=n, suppress_tokens=vision)
        return sample(model, inputs, **kwargs)

    decode.sample = fixed_sample


def run_r1reward(model: str, args, out: Path) -> dict:
    from r1reward.train.rl import read_metrics, rl_inputs, train_rl

    recipe = {
        "name": "bench",
        "model": {"path": model, "dtype": "float32", "lora": None, "quantization": None},
        "data": {"source": "toy", "train_pairs": 64, "seed": 0, "image_size": 56},
        "rl": {
            "algo": "grpo",
            "samples_per_prompt": args.generations,
            "steps": args.warmup + args.steps,
            "prompts_per_step": args.prompts,
            "mini_batch_size": args.prompts * args.generations,
            "micro_batch_size": args.prompts * args.generations,
            "ppo_epochs": 1,
            "lr": 1e-5,
            "kl_coef": 0.0,
            "temperature": 1.0,
            "max_new_tokens": args.max_new_tokens,
            "rollout_batch_size": args.prompts,
            "swap_prob": 0.0,
            "seed": args.seed,
            "progress": False,
        },
    }
    train_rl(**rl_inputs(recipe), out_dir=out)
    recs = read_metrics(out)[args.warmup :]
    return {
        "step_seconds": [r["seconds"] for r in recs],
        "samples": recs[0]["samples"],
        "completion_tokens": [r["length_mean"] for r in recs],
    }


def run_trl(model: str, args, out: Path) -> dict:
    import datasets
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from r1reward.integrations.trl import cpu_grpo_config
    from r1reward.models import load_model
    from r1reward.prompt import build_prompt
    from r1reward.rewards import combine_batch, format_rewards, result_rewards
    from r1reward.toy.world import make_pairs

    pairs = make_pairs(64, seed=0)
    ds = datasets.Dataset.from_list(
        [
            {
                "prompt": [
                    {
                        "role": "user",
                        "content": build_prompt(p.question, p.response_1, p.response_2),
                    }
                ],
                "image": p.images[0],
                "label": int(p.preferred),
            }
            for p in pairs
        ]
    )

    def r1_reward(completions, label, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        fmt, res = format_rewards(texts), result_rewards(texts, list(label))
        return combine_batch(fmt, res, [0.0] * len(texts))

    times, lengths = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    policy, processor = load_model(model)
    n = args.prompts * args.generations
    config = cpu_grpo_config(
        out,
        seed=args.seed,
        per_device_train_batch_size=n,
        num_generations=args.generations,
        max_completion_length=args.max_new_tokens,
        beta=0.0,
        learning_rate=1e-5,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_steps=args.warmup + args.steps,
        loss_type="grpo",
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[r1_reward],
        args=config,
        train_dataset=ds,
        processing_class=processor,
        callbacks=[Timer()],
    )
    trainer.train()
    return {
        "step_seconds": times[args.warmup :],
        "samples": n,
        "completion_tokens": lengths[args.warmup :],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the tiny model)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each trainer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument(
        "--free-length",
        action="store_true",
        help="let completions stop at a stop token (default: all exactly "
        "--max-new-tokens long in both trainers)",
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if not args.free_length:
        _fix_length(args.max_new_tokens)
    runs: dict[str, list[dict]] = {"r1reward": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(args.model, tmp)
        # alternate the two trainers so that load from other processes hits both alike
        for k in range(args.rounds):
            runs["r1reward"].append(run_r1reward(model, args, Path(tmp) / f"r1reward-{k}"))
            runs["trl"].append(run_trl(model, args, Path(tmp) / f"trl-{k}"))
    results = {}
    for name, rs in runs.items():
        secs = [x for r in rs for x in r["step_seconds"]]
        toks = [x for r in rs for x in r["completion_tokens"]]
        med = statistics.median(secs)
        results[name] = {
            "median_seconds_per_step": med,
            "mean_seconds_per_step": statistics.mean(secs),
            "timed_steps": len(secs),
            "samples": rs[0]["samples"],
            "completion_tokens": statistics.mean(toks) if toks else float("nan"),
            "step_seconds": secs,
        }
    print(
        f"model {args.model or 'tiny (fresh)'}; {args.prompts} prompts x {args.generations} "
        f"generations per step, {'<=' if args.free_length else 'exactly'} {args.max_new_tokens} new tokens, {args.rounds} alternating "
        f"rounds x {args.steps} timed steps after {args.warmup} warm-up, torch threads "
        f"{args.threads}, CPU"
    )
    print(
        f"{'trainer':<12}{'median s/step':>15}{'samples/s':>12}{'mean completion tokens':>26}"
        f"{'completion tokens/s':>22}"
    )
    for name, r in results.items():
        r["samples_per_s"] = r["samples"] / r["median_seconds_per_step"]
        r["tokens_per_s"] = r["samples_per_s"] * r["completion_tokens"]
        print(
            f"{name:<12}{r['median_seconds_per_step']:>15.3f}{r['samples_per_s']:>12.2f}"
            f"{r['completion_tokens']:>26.1f}{r['tokens_per_s']:>22.1f}"
        )
    ratio = results["r1reward"]["samples_per_s"] / results["trl"]["samples_per_s"]
    tok_ratio = results["r1reward"]["tokens_per_s"] / results["trl"]["tokens_per_s"]
    print(
        f"ratio r1reward / TRL GRPOTrainer: {ratio:.2f}x samples/s (goal of issue 21: >= 1.5x), "
        f"{tok_ratio:.2f}x completion tokens/s"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": vars(args), "results": results, "ratio": ratio, "token_ratio": tok_ratio},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
