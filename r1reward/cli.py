"""The ``r1reward`` command: one sub-command per stage of the recipe.

Each sub-command lives in the module that does the work and exposes ``main(argv) -> int`` (or
the function named after ``module:``); this file only dispatches, so ``r1reward rl --help`` imports nothing but the RL trainer.
"""

from __future__ import annotations

import os
import sys

from r1reward.lazy import import_object

COMMANDS: dict[str, tuple[str, str]] = {
    "build-tiny": (
        "r1reward.toy.cli:build_tiny_main",
        "write the tiny Qwen2.5-VL model folder used on CPU",
    ),
    "toy": ("r1reward.toy.cli", "write toy preference pairs (JSONL + images)"),
    "curate": ("r1reward.curation", "teacher traces with difficulty (up to N tries per pair)"),
    "sft": ("r1reward.train.sft", "cold-start long-CoT supervised fine-tuning"),
    "scalar": ("r1reward.train.scalar", "Bradley-Terry scalar reward model baseline"),
    "rl": ("r1reward.train.rl", "StableReinforce / Reinforce++ / GRPO training"),
    "lab": ("r1reward.lab", "the collapse lab: RL variants x learning rates x seeds, measured"),
    "eval": ("r1reward.evaluate", "benchmarks in both answer orders, Voting@K, Any-correct@K"),
    "serve": ("r1reward.serve.cli", "HTTP service: OpenAI-compatible chat + /v1/reward"),
    "merge": ("r1reward.models:merge_main", "merge a LoRA/QLoRA adapter folder into a full model"),
}


#: Commands that run under ``accelerate launch`` when given ``--accelerate-config NAME|PATH``.
LAUNCHABLE = ("sft", "scalar", "rl")

#: Commands that take ``--dry-run``: the plan (model on the meta device), nothing run
#: (:mod:`r1reward.dryrun`).
DRY_RUN = ("sft", "scalar", "rl", "eval")


def launch_command(name: str, rest: list[str]) -> list[str] | None:
    """``accelerate launch --config_file CONFIG -m r1reward.cli NAME REST`` when ``rest`` holds
    ``--accelerate-config NAME|PATH`` (resolved by :func:`r1reward.recipes.accelerate_config`,
    so a shipped name works from any directory), else ``None``.

    Raises:
        FileNotFoundError: an unknown config name or missing file.
        ValueError: ``--accelerate-config`` without a value.
    """
    from r1reward.recipes import accelerate_config

    value, kept, i = None, [], 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--accelerate-config":
            if i + 1 >= len(rest):
                raise ValueError("--accelerate-config needs a name (zero3, fsdp, ...) or a path")
            value, i = rest[i + 1], i + 2
            continue
        if arg.startswith("--accelerate-config="):
            value = arg.split("=", 1)[1]
        else:
            kept.append(arg)
        i += 1
    if value is None:
        return None
    config = accelerate_config(value)
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "-m",
        "r1reward.cli",
        name,
        *kept,
    ]


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: r1reward COMMAND [options]   (r1reward COMMAND --help for each)",
        "",
        "R1-Reward (arXiv 2505.02835): train and evaluate a multimodal generative reward model.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += [
        "",
        f"{', '.join(LAUNCHABLE)} take --accelerate-config NAME|PATH (zero3, fsdp, ddp-cpu-2, or a",
        "file) and then run under `accelerate launch` with that config, e.g.",
        "  r1reward rl --accelerate-config zero3 --recipe qwen2.5-vl-7b-full-zero3 --out runs/rl-7b",
        "",
        f"{', '.join(DRY_RUN)} take --dry-run: resolve the recipe, build the model on the meta",
        "device (no weights, no download) and print the plan (parameters, data, steps, memory):",
        "  r1reward sft --recipe qwen2.5-vl-7b-qlora --out runs/sft-7b-qlora --dry-run",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from r1reward import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"r1reward: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if "--dry-run" in rest and name in DRY_RUN:  # before any launch: the plan, no GPU work
        from r1reward import dryrun

        return dryrun.main(name, [a for a in rest if a != "--dry-run"])
    if name in LAUNCHABLE:
        try:
            launch = launch_command(name, rest)
        except (ValueError, FileNotFoundError) as exc:
            print(f"r1reward {name}: {exc}", file=sys.stderr)
            return 2
        if launch is not None:
            print("+ " + " ".join(launch), file=sys.stderr)
            os.execv(launch[0], launch)  # replaces this process; accelerate starts the workers
    spec = COMMANDS[name][0]
    entry = import_object(spec if ":" in spec else f"{spec}:main")
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
