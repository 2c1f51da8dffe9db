"""Where the time of one RL step goes: phase timings of ``r1reward.train.rl.train_rl``.

Runs ``--steps`` steps of the trainer on the tiny model with the batch shape of a recipe's ``rl:``
section (``toy-cpu`` by default) or of its collapse-lab grid (``--lab``), every completion exactly
``--max-new-tokens`` long (the patch of ``benchmarks/bench_rl_vs_trl.py``: an untrained model would
stop at random lengths), one torch thread, and prints the seconds each phase took per step:

- ``generate``: sampling the rollout (``rollout.generate`` inside ``sample_rollout``);
- ``encode``: the rest of ``sample_rollout`` (prompt encoding, tensors);
- ``rewards``: format/result/consistency (``score``);
- ``reference``: the reference model's log-probs (only with ``kl_coef > 0``);
- ``old logprobs``: the no-grad pass over the samples before the update;
- ``update``: the PPO epochs (forward + backward + optimizer), without the old-logprob pass.

    .venv/bin/python benchmarks/profile_rl_step.py                 # toy-cpu's rl batch, 2 steps
    .venv/bin/python benchmarks/profile_rl_step.py --lab --steps 3 # the lab's run shape

The first step is reported apart (it pays one-off costs). Figures are medians over the others.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="toy-cpu")
    ap.add_argument(
        "--lab", action="store_true", help="the recipe's lab run shape (kl 0, 32 samples)"
    )
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--model", default=None, help="model folder (default: a fresh tiny model)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an rl.* setting for this profile, e.g. --set micro_batch_size=16",
    )
    args = ap.parse_args(argv)

    import torch
    import yaml
    from bench_rl_vs_trl import _fix_length, _model

    from r1reward.lab import lab_section
    from r1reward.profile import quiet_libraries
    from r1reward.recipes import load_recipe
    from r1reward.train import rl

    torch.set_num_threads(1)
    quiet_libraries()
    _fix_length(args.max_new_tokens)
    recipe = load_recipe(args.recipe)
    overrides = {
        "steps": args.steps,
        "max_new_tokens": args.max_new_tokens,
        "save_every": 0,
        "progress": False,
    }
    if args.lab:
        lab = lab_section(recipe["lab"])
        overrides |= {**lab.rl, "prompts_per_step": lab.samples_per_step}
    recipe["rl"].update(overrides)
    for item in args.set:
        key, _, value = item.partition("=")
        recipe["rl"][key.removeprefix("rl.")] = yaml.safe_load(value)

    times: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    step = {"i": 0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[step["i"]][name] += time.perf_counter() - t0

        return wrapper

    import r1reward.rollout as rollout

    gen = rollout.generate
    rollout.generate = timed("generate", gen)
    sample = rl.sample_rollout

    def sample_rollout(*a, **k):
        step["i"] += 1
        t0 = time.perf_counter()
        out = sample(*a, **k)
        times[step["i"]]["encode"] += time.perf_counter() - t0 - times[step["i"]]["generate"]
        return out

    rl.sample_rollout = sample_rollout
    rl.score = timed("rewards", rl.score)
    rl.reference_logprobs = timed("reference", rl.reference_logprobs)
    rl.batched_logprobs = timed("old logprobs", rl.batched_logprobs)
    update = rl.ppo_update

    def ppo_update(*a, **k):
        before = times[step["i"]]["old logprobs"]
        t0 = time.perf_counter()
        out = update(*a, **k)
        inner = times[step["i"]]["old logprobs"] - before
        times[step["i"]]["update"] += time.perf_counter() - t0 - inner
        return out

    rl.ppo_update = ppo_update
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(sys.stderr):
        model = _model(args.model, tmp)
        recipe["rl"]["init_model"] = model
        recipe["model"]["path"] = model
        rl.train_rl(**rl.rl_inputs(recipe), out_dir=Path(tmp) / "run")
        recs = rl.read_metrics(Path(tmp) / "run")
    phases = ["generate", "encode", "rewards", "reference", "old logprobs", "update"]
    rest = sorted(times)[1:] or sorted(times)
    per = {p: statistics.median(times[i][p] for i in rest) for p in phases}
    step_s = statistics.median(r["seconds"] for r in recs[1:] or recs)
    samples = recs[-1]["samples"]
    print(
        f"{args.recipe}{' lab' if args.lab else ''}: {samples} samples a step, "
        f"{args.max_new_tokens} tokens each, 1 thread; first step {recs[0]['seconds']:.1f} s, "
        f"then {step_s:.1f} s a step (median of {len(rest)})"
    )
    for p in phases:
        print(f"  {p:<13} {per[p]:7.2f} s  {100 * per[p] / step_s:5.1f} %")
    other = step_s - sum(per.values())
    print(f"  {'other':<13} {other:7.2f} s  {100 * other / step_s:5.1f} %")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"step_s": step_s, "phases": per, "samples": samples, "args": vars(args)}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
