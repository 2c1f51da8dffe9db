"""StableReinforce (with Reinforce++ and GRPO beside it): the RL trainer of R1-Reward, on accelerate.

Paper: *R1-Reward* (arXiv 2505.02835), Section 3 (StableReinforce) and Section 4.1 (training).
The maths lives in :mod:`r1reward.algorithms`; :func:`train_rl` is the loop and reads top to
bottom like a CleanRL script. One RL step is:

1. **rollout** -- take the next batch of preference pairs (each process its own slice), build the
   Table-1 chat messages with the images, and sample ``samples_per_prompt`` answers per prompt
   with :func:`r1reward.rollout.generate`;
2. **rewards** -- format, result and (StableReinforce) consistency through a :class:`Judge`,
   combined as ``Result * (1 + 0.5 * Consistency) + 0.5 * Format`` (Eq. 5-7);
3. **old and reference log-probs** of the sampled tokens under the policy before the update and
   under the frozen reference (skipped when ``kl_coef == 0``);
4. **returns** with the token-level KL penalty inside the reward (:func:`algorithms.token_rewards`,
   Reinforce++), or GRPO's per-group advantages;
5. **advantages** normalised over the *whole* batch across all processes (all-gather, then one
   call to :func:`algorithms.normalize_advantages`), with the Advantage Filter (``|A| > 3`` -> 0);
6. **policy loss** with Pre-Clip (:func:`algorithms.policy_loss`), ``ppo_epochs`` passes over the
   batch in mini-batches, gradient accumulation over micro-batches, gradient clipping.

``--algo`` picks a preset; ``pre_clip``, ``advantage_filter`` and ``consistency_reward`` override
the preset one at a time for the ablations of Table 6.

Where the parts are: the ``rl:`` section and the presets in :mod:`r1reward.recipes.rl`;
pairs, rollouts, log-probs and rewards (steps 1-3) in :mod:`r1reward.train.rl_data`; advantages
and the update (4-6) in :mod:`r1reward.train.rl_update`; the run folder, checkpoints, resume and
metrics file in :mod:`r1reward.train.checkpoints`; a step's record and the definition of a collapsed
step in :mod:`r1reward.train.rl_metrics`. This file holds the model set-up, the loop and the
command line.

Entry points: :func:`train_rl` (typed settings, a model path and pairs; :func:`rl_inputs` resolves
a recipe into them, once) and :func:`main` (``r1reward rl --recipe NAME``, or
``accelerate launch -m r1reward.train.rl --recipe NAME`` for several processes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from r1reward import rollout_vllm
from r1reward.algorithms import kl_estimate
from r1reward.data import PreferencePair
from r1reward.models import load_model
from r1reward.recipes import load_recipe, resolve_model_path
from r1reward.recipes.config import ModelConfig
from r1reward.recipes.rl import ALGO_PRESETS, PRESET_DEFAULTS, RLConfig, default_kl_kind
from r1reward.rollout import frozen_vision_cache
from r1reward.train.checkpoints import (
    RUN_FILE,
    ResumeError,
    open_run,
    read_metrics,
    restore,
    resume_point,
    run_identity,
    save_checkpoint,
    save_final,
    used_outputs,
    write_summary,
)
from r1reward.train.common import freeze_vision, load_for_training, preflight
from r1reward.train.rl_data import (
    Rollout,
    batch_indices,
    batched_logprobs,
    conversations,
    load_pairs,
    make_judge,
    make_rollout,
    pad_token_id,
    sample_images,
    sample_rollout,
    score,
    step_batch,
)
from r1reward.train.rl_metrics import collapse_reason, flat_config, log_step, step_record
from r1reward.train.rl_update import (
    compute_advantages,
    global_normalize,
    params_finite,
    policy_loss,
    ppo_update,
)

__all__ = [
    # this file
    "build",
    "check_judge",
    "collapse_reason",
    "log_step",
    "main",
    "make_accelerator",
    "old_logprobs",
    "policy_for_generation",
    "reference_logprobs",
    "rl_inputs",
    "step_record",
    "train_rl",
    # the parts, importable from here as before
    "ALGO_PRESETS",
    "PRESET_DEFAULTS",
    "RLConfig",
    "default_kl_kind",
    "RUN_FILE",
    "ResumeError",
    "read_metrics",
    "resume_point",
    "Rollout",
    "batch_indices",
    "batched_logprobs",
    "conversations",
    "load_pairs",
    "make_judge",
    "make_rollout",
    "pad_token_id",
    "sample_rollout",
    "score",
    "compute_advantages",
    "global_normalize",
    "policy_loss",
    "ppo_update",
]

# --------------------------------------------------------------------------------------------
# The model, its reference and the processes
# --------------------------------------------------------------------------------------------


def build(
    cfg: RLConfig, model_section: ModelConfig, model_path: str, accelerator: Any
) -> tuple[Any, Any, Any, Any]:
    """Policy (with LoRA / 4-bit when asked), optional frozen reference, processor, optimizer.

    ``model_path`` is the model RL starts from (:func:`rl_inputs`: ``rl.init_model``, else
    ``model.path``); ``rl.lora``, ``rl.quantization`` and ``rl.dtype`` override the ``model``
    section's when set; its pixel cap (``model.max_pixels``) applies as in SFT."""
    lora = cfg.lora if cfg.lora is not None else model_section.lora
    quant = cfg.quantization if cfg.quantization is not None else model_section.quantization
    dtype_name = cfg.dtype or model_section.dtype
    dtype = getattr(torch, dtype_name) if dtype_name else None
    model, processor = load_for_training(
        model_path, model_section, dtype=dtype, lora=lora, quantization=quant
    )
    if cfg.freeze_vision:
        # the visual features the cold start was trained on stay as they are; on the toy
        # (StableReinforce, lr 1e-4, 24 steps from a 73 % SFT model) training the randomly
        # initialised vision tower with the policy gave 51.5 % held-out, keeping it frozen 67.5 %
        freeze_vision(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    ref = None
    if cfg.kl_coef > 0 and not lora:  # with LoRA the reference is the model, adapter off
        ref, _ = load_model(str(model_path), dtype=dtype, quantization=quant)
        ref.requires_grad_(False).eval().to(accelerator.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.adam_betas
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, ref, processor, optimizer


@contextlib.contextmanager
def policy_for_generation(accelerator: Any, model: Any) -> Iterator[Any]:
    """The plain policy module for ``generate``. Under DeepSpeed ZeRO-3 its parameters are
    sharded across processes, so they are gathered for the duration of the rollout (as TRL does);
    with DDP (and on one process) this is just ``unwrap_model``. Not exercised on the CPU test
    machine, where DeepSpeed is not installed."""
    unwrapped = accelerator.unwrap_model(model)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            yield unwrapped
    else:
        yield unwrapped


def reference_logprobs(
    accelerator: Any, model: Any, ref: Any, ro: Rollout, pad_id: int, cfg: RLConfig
) -> torch.Tensor | None:
    """Log-probs under the frozen reference ``[B, T]``: the separate copy, or the LoRA model
    with its adapter disabled. ``None`` when ``kl_coef == 0`` (no reference is kept)."""
    if cfg.kl_coef <= 0:
        return None
    if ref is not None:
        return batched_logprobs(ref, ro, pad_id, cfg.micro_batch_size, cfg.temperature)
    with accelerator.unwrap_model(model).disable_adapter():
        return batched_logprobs(model, ro, pad_id, cfg.micro_batch_size, cfg.temperature)


def old_logprobs(
    model: Any, ro: Rollout, ref_logp: torch.Tensor | None, pad_id: int, cfg: RLConfig
) -> torch.Tensor | None:
    """Log-probs ``[B, T]`` under the policy before this step's updates: as the sampler recorded
    them; else, when a reference is kept (the KL needs them now), a separate no-grad pass; else
    ``None``, left to :func:`ppo_update` (which saves a forward pass)."""
    if ro.old_logp is not None or ref_logp is None:
        return ro.old_logp
    return batched_logprobs(model, ro, pad_id, cfg.micro_batch_size, cfg.temperature)


def make_accelerator(cfg: RLConfig, out_dir: str | Path | None = None) -> Accelerator:
    """The Accelerator of a run: its gradient accumulation is ``mini_batch_size //
    micro_batch_size``; DDP/DeepSpeed/FSDP and the process count come from ``accelerate launch``
    (configs in ``r1reward/recipes/accelerate/``); trackers from ``rl.report_to``. Without a GPU
    (or other accelerator) it runs on the CPU, with gloo between processes."""
    # On a machine without any accelerator, several processes (torchrun / `accelerate launch
    # --multi_gpu`) must use gloo on the CPU; accelerate only does so when told `cpu=True`.
    has_device = (
        torch.accelerator.is_available()
        if hasattr(torch, "accelerator")
        else torch.cuda.is_available()
    )
    return Accelerator(
        cpu=not has_device,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=cfg.report_to or None,
        project_dir=str(out_dir) if out_dir is not None else None,
    )


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


def rl_inputs(recipe: dict, pairs: Sequence[PreferencePair] | None = None) -> dict[str, Any]:
    """:func:`train_rl`'s keyword arguments for a loaded recipe, resolved once, here: the ``rl``
    section with its preset, the ``model`` section, the model RL starts from (``rl.init_model``,
    else :func:`r1reward.recipes.resolve_model_path`, which builds the tiny model when
    ``model.path`` is null), the pairs (:func:`r1reward.train.rl_data.load_pairs`: ``pairs`` or
    the recipe's data, then ``rl.min_difficulty``) and the recipe as the run's ``record``."""
    cfg = RLConfig.from_dict(recipe.get("rl")).resolved()
    pairs = load_pairs(cfg, recipe.get("data"), pairs)  # before the model, as it always was
    return {
        "cfg": cfg,
        "model_cfg": ModelConfig.from_dict(recipe.get("model")),
        "model_path": str(cfg.init_model or resolve_model_path(recipe)),
        "pairs": pairs,
        "record": recipe,
    }


def train_rl(
    cfg: RLConfig,
    *,
    model_cfg: ModelConfig,
    model_path: str,
    pairs: Sequence[PreferencePair],
    out_dir: str | Path,
    resume: bool = False,
    record: dict | None = None,
) -> Path:
    """Run RL as ``cfg`` (the ``rl:`` section, preset resolved) says; return the final model's
    folder. ``train_rl(**rl_inputs(recipe), out_dir=...)`` runs a loaded recipe.

    ``model_cfg`` is the ``model`` section (dtype, LoRA, 4-bit; ``rl.*`` overrides them),
    ``model_path`` the model RL starts from, ``pairs`` the pairs it trains on, in order. Writes
    ``out_dir/metrics.jsonl`` (one record per step), ``checkpoints/step-N`` every ``save_every``
    steps, ``final`` (model or adapter + processor), ``summary.json`` and, when given, ``record``
    (the recipe, kept for the record, never read) as ``recipe.yaml``. ``resume`` continues from
    the last checkpoint of the same settings, model and pairs, reproducing the uninterrupted
    run's metrics.

    Raises:
        ValueError: no training pairs.
        ResumeError: ``resume`` without a checkpoint of this run with these settings.
    """
    # 0. processes, the run's folder (fresh or resumed), the model and judge
    if not pairs:
        raise ValueError(f"train_rl: no training pairs (out_dir {out_dir})")
    out_dir = Path(out_dir)
    accelerator = make_accelerator(cfg, out_dir)
    set_seed(cfg.seed)
    if cfg.vllm and cfg.engine != "transformers":
        rollout_vllm.configure(**cfg.vllm)
    rank, world = accelerator.process_index, accelerator.num_processes
    identity = run_identity(cfg, pairs, model=model_cfg, model_path=model_path)
    run, last = open_run(accelerator, out_dir, identity, cfg, resume, record)  # before the model
    model, ref, processor, optimizer = build(cfg, model_cfg, model_path, accelerator)
    judge, pad_id = make_judge(cfg.judge), pad_token_id(processor)
    start = restore(accelerator, out_dir, last, cfg) if last is not None else 0
    accelerator.wait_for_everyone()
    if cfg.report_to:
        accelerator.init_trackers("r1reward-rl", config=flat_config(dataclasses.asdict(cfg)))

    bar = tqdm(
        range(start, cfg.steps),
        desc=f"rl {cfg.algo}",
        initial=start,
        total=cfg.steps,
        disable=not (cfg.progress and accelerator.is_local_main_process),
    )
    collapsed, stopped = False, None  # stopped: why the run ended before cfg.steps
    collapsed_in_a_row, end = 0, cfg.steps  # rl.stop_on_collapse; the step the run ends at
    saved = start if resume else -1  # the step of the last checkpoint written
    for step in bar:
        t0 = time.perf_counter()
        # 1. rollout: this process's slice of the global batch, sampled by the plain policy
        batch = step_batch(pairs, cfg, step, world, rank)
        with frozen_vision_cache(accelerator.unwrap_model(model)):  # image features once a step
            with policy_for_generation(accelerator, model) as policy:
                ro = sample_rollout(
                    policy, processor, batch, cfg, seed=cfg.seed * 100_003 + step * world + rank
                )
            # 2. rewards (a judge that looks at images gets each sample's pair's images)
            seen = (
                {"images": sample_images(batch, ro)} if getattr(judge, "use_images", False) else {}
            )
            parts = score(ro, judge, bool(cfg.consistency_reward), **seen)
            # 3. old and reference log-probs (the policy before this step's updates), their KL
            ref_logp = reference_logprobs(accelerator, model, ref, ro, pad_id, cfg)
            old_logp = old_logprobs(model, ro, ref_logp, pad_id, cfg)
            kl = (
                None
                if ref_logp is None
                else kl_estimate(old_logp, ref_logp, kind=cfg.kl_kind, mask=ro.mask)
            )
            # 4-5. returns and advantages over the whole batch (all processes)
            adv, adv_info = compute_advantages(accelerator, cfg, parts["total"], ro.mask, kl)
            # 6. PPO epochs of the policy loss with Pre-Clip
            gen = torch.Generator().manual_seed(cfg.seed * 7_919 + step * world + rank)
            update = ppo_update(
                accelerator, model, optimizer, cfg, ro, old_logp, adv, ref_logp, pad_id, gen
            )
        # 7. the step's record; stop on non-finite weights or a run of collapsed steps; checkpoint
        rec = step_record(
            accelerator,
            cfg,
            step,
            ro,
            parts,
            update,
            kl,
            adv,
            adv_info,
            params_finite(model),
            seconds_since=t0,
        )
        log_step(accelerator, out_dir, cfg, rec, bar)
        if not rec["params_finite"] and cfg.stop_on_nonfinite:
            collapsed, stopped = True, "non-finite"
            break
        why = collapse_reason(
            rec,
            cfg.max_new_tokens,
            min_well_formed=cfg.collapse_min_well_formed,
            length_fraction=cfg.collapse_length_fraction,
        )
        collapsed_in_a_row = collapsed_in_a_row + 1 if why else 0
        if cfg.stop_on_collapse and collapsed_in_a_row >= cfg.stop_on_collapse:
            # the model still has finite weights: it is saved as the final model below
            stopped, end = f"collapsed ({why}) {collapsed_in_a_row} steps in a row", step + 1
            break
        if cfg.save_every and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(accelerator, out_dir, step + 1, cfg, run)
            saved = step + 1
    bar.close()

    # 8. the end: the last state stays resumable (to extend the run), the final model, the summary
    done = max(start, end)
    if not collapsed and saved != done:
        save_checkpoint(accelerator, out_dir, done, cfg, run)
    final = out_dir / "final"
    accelerator.wait_for_everyone()
    if not collapsed:
        save_final(accelerator, model, processor, final)
    if accelerator.is_main_process:
        write_summary(out_dir, cfg.algo, collapsed, stopped, final)
    if cfg.report_to:
        accelerator.end_training()
    return final


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def check_judge(cfg: RLConfig) -> None:
    """Before any model is loaded: an OpenAI-compatible consistency judge must have an address
    (``rl.judge.base_url`` or ``$R1REWARD_JUDGE_BASE_URL``) that answers HTTP at all.

    Raises:
        ValueError: no address, or nothing listening there.
    """
    judge = cfg.judge
    if not (cfg.consistency_reward and isinstance(judge, dict) and judge.get("kind") == "openai"):
        return
    url = judge.get("base_url") or os.environ.get("R1REWARD_JUDGE_BASE_URL")
    if not url:
        raise ValueError(
            "rl.judge is an OpenAI-compatible server but has no address: set "
            "R1REWARD_JUDGE_BASE_URL (e.g. http://127.0.0.1:8001/v1 for `vllm serve "
            "Qwen/Qwen2.5-VL-7B-Instruct --port 8001`) or rl.judge.base_url"
        )
    try:
        httpx.get(f"{str(url).rstrip('/')}/models", timeout=5.0)
    except httpx.HTTPError as exc:
        raise ValueError(
            f"rl.judge: the judge server at {url} is not reachable "
            f"({type(exc).__name__}: {exc}); start it or set "
            "rl.consistency_reward=false"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """``r1reward rl --recipe toy-ci rl.algo=reinforce++ rl.steps=40 --out runs/x [--resume]``."""
    parser = argparse.ArgumentParser(
        prog="r1reward rl",
        description="RL for the generative reward model: StableReinforce (default), Reinforce++ "
        "or GRPO. Runs on one process, or several with --accelerate-config NAME|PATH (or "
        "`accelerate launch -m r1reward.cli rl`).",
        epilog="examples:\n"
        "  r1reward rl --recipe toy-ci --out runs/rl-toy\n"
        "  r1reward rl --recipe toy-ci --out runs/rl-toy --resume rl.steps=4\n"
        "  r1reward rl --recipe toy-cpu --algo reinforce++ --out runs/rl-rpp rl.init_model=artifacts/cpu/sft\n"
        "  r1reward rl --accelerate-config ddp-cpu-2 --recipe toy-ci --out runs/rl-ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--recipe", required=True, help="recipe name (toy-ci, toy-cpu, ...) or YAML path"
    )
    parser.add_argument(
        "overrides", nargs="*", help="KEY=VALUE overrides, e.g. rl.lr=1e-5 rl.steps=10"
    )
    parser.add_argument("--algo", choices=sorted(ALGO_PRESETS), help="shortcut for rl.algo=...")
    parser.add_argument(
        "--out", default=None, help="output folder (default runs/rl-<recipe>-<algo>)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue this folder's run from its last checkpoint (same run id and "
        "settings; only rl.steps and the reporting keys may change)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a fresh run in a folder that holds an earlier one, removing "
        "its checkpoints, metrics and final model",
    )
    args = parser.parse_args(argv)

    overrides = list(args.overrides) + ([f"rl.algo={args.algo}"] if args.algo else [])
    try:
        recipe = load_recipe(args.recipe, overrides=overrides)
        cfg = RLConfig.from_dict(recipe.get("rl")).resolved()
        preflight(recipe, init_model=cfg.init_model)  # model and data paths, before any work
        check_judge(cfg)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"r1reward rl: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/rl-{Path(args.recipe).stem}-{cfg.algo}")
    if args.resume and args.overwrite:
        print(
            "r1reward rl: --resume continues a run and --overwrite replaces it; pick one",
            file=sys.stderr,
        )
        return 2
    if not args.resume and not args.overwrite and used_outputs(out):
        print(
            f"r1reward rl: {out} holds an earlier run ({', '.join(used_outputs(out))}); pass --resume "
            "to continue it or --overwrite to replace it",
            file=sys.stderr,
        )
        return 2
    if cfg.init_model is None:
        print(
            f"r1reward rl: warning: rl.init_model is null, so RL starts from model.path "
            f"({(recipe.get('model') or {}).get('path') or 'the tiny model'}), not from a "
            "cold-start SFT model (the paper starts RL from SFT, Sec. 4.1)",
            file=sys.stderr,
        )
    try:
        inputs = rl_inputs(recipe)  # the pairs and the model path (the tiny model built if asked)
    except (KeyError, ValueError) as exc:
        print(f"r1reward rl: {exc}", file=sys.stderr)
        return 2
    try:
        final = train_rl(**inputs, out_dir=out, resume=args.resume)
    except ResumeError as exc:
        print(f"r1reward rl: {exc}", file=sys.stderr)
        return 2
    recs = read_metrics(out)
    if recs and os.environ.get("RANK", "0") == "0":
        last = recs[-1]
        print(
            f"step {last['step']}: accuracy {last['accuracy']:.3f}, well-formed "
            f"{last['well_formed']:.3f}, length {last['length_mean']:.1f}; model -> {final}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
