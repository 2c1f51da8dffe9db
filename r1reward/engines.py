"""Which generation engine ``r1reward eval`` and ``r1reward serve`` sample with.

Both commands take ``--engine vllm|transformers|auto``. The engines are those of RL's rollouts
(:func:`r1reward.rollout.generate` with ``engine=``; vLLM through the colocated engine of
:mod:`r1reward.rollout_vllm`), so a judgment comes back as the same :class:`~r1reward.rollout.
Completion` record whichever engine wrote it, and the evaluator's result files have the same
fields. This module only decides which one runs and how much of the GPU vLLM may take:

- ``auto`` is vLLM when the ``vllm`` package is importable *and* CUDA is present, transformers
  otherwise (decided before the model loads, so the choice can shape how it loads);
- ``vllm`` without the package is a one-line ImportError saying how to install it.

Evaluation at paper scale (Voting@15 over 2,500 judgments of up to 1,024 tokens, Sec. 4.3) is
where vLLM's paged KV cache and continuous batching pay; greedy judgments are the same tokens
either way, sampled ones differ (vLLM's random streams are not torch's).
"""

from __future__ import annotations

import argparse
import os

__all__ = ["ENGINES", "GPU_SHARE_ENV", "add_engine_argument", "resolve_engine", "reserve_gpu"]

#: The values of ``--engine``.
ENGINES: tuple[str, ...] = ("auto", "transformers", "vllm")

#: Environment variable that fixes vLLM's share of GPU memory (read by r1reward.rollout_vllm).
GPU_SHARE_ENV = "R1REWARD_VLLM_GPU_MEMORY_UTILIZATION"


def resolve_engine(name: str) -> str:
    """``"transformers"`` or ``"vllm"``: the engine that ``--engine name`` runs.

    Raises:
        ValueError: ``name`` is not one of :data:`ENGINES`.
        ImportError: ``name == "vllm"`` and vllm is not installed (says how to install it).
    """
    from r1reward import rollout_vllm
    from r1reward.rollout import _check_engine

    if name == "auto":
        import torch

        return "vllm" if rollout_vllm.available() and torch.cuda.is_available() else "transformers"
    if name not in ENGINES:
        raise ValueError(f"--engine {name!r}: expected one of {', '.join(ENGINES)}")
    return _check_engine(name)


def reserve_gpu(engine: str, share: float) -> None:
    """Let vLLM take ``share`` of the GPU memory (weights + KV cache) for engines built from now
    on, unless :data:`GPU_SHARE_ENV` is set (the user's value wins). A no-op for transformers.

    ``eval`` with no ``--device-map`` keeps the transformers copy of the model on the CPU (it
    only feeds vLLM its weights), so vLLM may take most of the GPU; ``serve`` keeps the model on
    the GPU for the verdict probabilities and leaves vLLM the RL default (0.3).
    """
    if engine != "vllm" or os.environ.get(GPU_SHARE_ENV):
        return
    from r1reward import rollout_vllm

    rollout_vllm.configure(gpu_memory_utilization=float(share))


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--engine`` option, worded the same for every command that generates."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="generation engine: vllm (pip install 'r1reward[vllm]', CUDA), transformers"
        " (generate), auto (vllm when it is installed and CUDA is present, else transformers);"
        " the records are the same either way",
    )
