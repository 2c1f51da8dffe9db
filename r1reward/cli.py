"""The ``r1reward`` command: one sub-command per stage of the recipe.

Each sub-command lives in the module that does the work and exposes ``main(argv) -> int`` (or
the function named after ``module:``); this file only dispatches, so ``r1reward rl --help`` imports nothing but the RL trainer.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "build-tiny": ("r1reward.models", "write the tiny Qwen2.5-VL model folder used on CPU"),
    "toy": ("r1reward.data.toy", "write toy preference pairs (JSONL + images)"),
    "curate": ("r1reward.curation", "teacher traces with difficulty (up to N tries per pair)"),
    "sft": ("r1reward.train.sft", "cold-start long-CoT supervised fine-tuning"),
    "scalar": ("r1reward.train.scalar", "Bradley-Terry scalar reward model baseline"),
    "rl": ("r1reward.train.rl", "StableReinforce / Reinforce++ / GRPO training"),
    "eval": ("r1reward.evaluate", "benchmarks in both answer orders, Voting@K, Any-correct@K"),
    "serve": ("r1reward.serve", "HTTP service: OpenAI-compatible chat + /v1/reward"),
    "merge": ("r1reward.models:merge_main", "merge a LoRA/QLoRA adapter folder into a full model"),
}


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
    module_name, _, func = COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, func or "main")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
