"""An RL run's folder: its identity, checkpoints, resume, metrics file and final model.

A run folder holds ``run.json`` (a run id and the settings that fix the computation),
``checkpoints/step-N`` (written by :func:`save_checkpoint`, complete once ``trainer_state.json``
is there), ``metrics.jsonl`` (one record per step), ``final`` and ``summary.json``. ``--resume``
continues the folder's own run only, from its last complete checkpoint, with the same settings
(:func:`resume_point`); a fresh run first removes an earlier run's outputs (:func:`start_run`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1reward.data.jsonl import read_jsonl
from r1reward.recipes import save_recipe
from r1reward.recipes.config import ModelConfig
from r1reward.recipes.rl import RLConfig

__all__ = [
    "RESUME_MAY_CHANGE",
    "RUN_FILE",
    "RUN_OUTPUTS",
    "ResumeError",
    "append_metrics",
    "data_position",
    "open_run",
    "read_metrics",
    "restore",
    "resume_point",
    "run_identity",
    "save_checkpoint",
    "save_final",
    "start_run",
    "truncate_metrics",
    "used_outputs",
    "write_summary",
]

RUN_FILE = "run.json"
#: What a resumed run may change: how far it runs and how it reports, not what it computes.
RESUME_MAY_CHANGE = frozenset(
    {"steps", "progress", "save_every", "save_total_limit", "report_to", "stop_on_nonfinite"}
)
#: The files of a run in its folder; a fresh run removes those of an earlier one.
RUN_OUTPUTS = (
    RUN_FILE,
    "metrics.jsonl",
    "summary.json",
    "rl_config.json",
    "recipe.yaml",
    "checkpoints",
    "final",
)


class ResumeError(RuntimeError):
    """``--resume`` cannot continue this folder's run (the message says why and what to do)."""


def run_identity(
    cfg: RLConfig, pairs: Sequence[Any], *, model: ModelConfig, model_path: str
) -> dict:
    """What fixes a run's computation: the resolved ``rl`` settings (minus
    :data:`RESUME_MAY_CHANGE`), the ``model`` section, the model it starts from and the ids of
    its training pairs; with their hash."""
    rl_part = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUME_MAY_CHANGE}
    config = {"model": dataclasses.asdict(model), "model_path": str(model_path), "rl": rl_part}
    config = json.loads(json.dumps(config, sort_keys=True, default=str))
    ids = [str(getattr(p, "id", "")) for p in pairs]
    blob = json.dumps([config, ids], sort_keys=True).encode()
    return {
        "config": config,
        "n_pairs": len(ids),
        "config_hash": hashlib.sha256(blob).hexdigest()[:16],
    }


def start_run(out_dir: Path, identity: dict) -> dict:
    """A fresh run in ``out_dir``: remove an earlier run's outputs (:data:`RUN_OUTPUTS`, so
    neither its checkpoints nor its metrics can be mistaken for this run's) and write
    ``run.json`` with a new run id. Main process only."""
    for name in RUN_OUTPUTS:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    run = {
        "run_id": uuid.uuid4().hex[:12],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **identity,
    }
    (out_dir / RUN_FILE).write_text(json.dumps(run, indent=1))
    return run


def resume_point(out_dir: Path, identity: dict) -> tuple[dict, Path]:
    """``(run, checkpoint)`` to continue from: this folder's run and its last complete
    checkpoint, which must carry the same run id and the same settings.

    Raises:
        ResumeError: no run, no checkpoint, a checkpoint of another run, or other settings.
    """
    path = out_dir / RUN_FILE
    if not path.is_file():
        raise ResumeError(
            f"--resume: {out_dir} holds no run ({RUN_FILE} missing); start it without --resume"
        )
    run = json.loads(path.read_text())
    found = _checkpoints(out_dir)
    if not found:
        raise ResumeError(
            f"--resume: run {run['run_id']} in {out_dir} saved no complete checkpoint (with "
            "rl.save_every=0 the only one is written at the end); nothing to resume -- rerun "
            "with --overwrite"
        )
    last = found[-1]
    state = json.loads((last / "trainer_state.json").read_text())
    if state.get("run_id") != run["run_id"]:
        raise ResumeError(
            f"--resume: {last} belongs to run {state.get('run_id')}, not to this "
            f"folder's run {run['run_id']}; refusing to continue another run"
        )
    if state.get("config_hash") != identity["config_hash"]:
        diff = _diff(state.get("config") or {}, identity["config"])
        if state.get("n_pairs") != identity["n_pairs"]:
            diff.append(f"training pairs {state.get('n_pairs')} -> {identity['n_pairs']}")
        raise ResumeError(
            f"--resume: {last} was written with other settings: "
            f"{'; '.join(diff[:8]) or 'other training pairs'}; only "
            f"rl.{{{', '.join(sorted(RESUME_MAY_CHANGE))}}} may change"
        )
    return run, last


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(a.keys() | b.keys())
            for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        ]
    return [] if a == b else [f"{prefix[:-1]} {a!r} -> {b!r}"]


def _checkpoints(out_dir: Path) -> list[Path]:
    root = out_dir / "checkpoints"
    done = [p for p in root.glob("step-*") if (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def data_position(cfg: RLConfig, step: int, world: int) -> int:
    """Pairs the whole run (``world`` processes) has read after ``step`` steps."""
    return step * cfg.pairs_per_step * world


def save_checkpoint(
    accelerator: Any, out_dir: Path, step: int, cfg: RLConfig, run: dict | None = None
) -> Path:
    """Model/adapter, optimizer and RNG states (torch, python, numpy) through
    ``accelerator.save_state``, then ``trainer_state.json`` last (its presence marks a complete
    checkpoint) with the data position, the run's id and resolved settings (``run``, see
    :func:`start_run`). Older checkpoints beyond ``save_total_limit`` are removed."""
    path = out_dir / "checkpoints" / f"step-{step:06d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        position = data_position(cfg, step, accelerator.num_processes)
        state = {
            "step": step,
            "data_position": position,
            "seed": cfg.seed,
            **{k: (run or {}).get(k) for k in ("run_id", "config_hash", "n_pairs", "config")},
        }
        (path / "trainer_state.json").write_text(json.dumps(state))
        for old in _checkpoints(out_dir)[: -max(1, cfg.save_total_limit)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the metric lines of steps ``<= last_step`` (a killed run may have logged past its
    last checkpoint; those steps are recomputed identically)."""
    if not path.exists():
        return
    keep = [
        ln
        for ln in path.read_text().splitlines()
        if ln.strip() and json.loads(ln)["step"] <= last_step
    ]
    path.write_text("".join(ln + "\n" for ln in keep))


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The per-step records of a run (``metrics.jsonl``)."""
    path = Path(out_dir) / "metrics.jsonl"
    return list(read_jsonl(path)) if path.exists() else []


def append_metrics(out_dir: Path, rec: dict) -> None:
    """Append one step's record to ``metrics.jsonl`` (main process only)."""
    with (out_dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def used_outputs(out: Path) -> list[str]:
    """The outputs of an earlier run in ``out`` (:data:`RUN_OUTPUTS` that exist)."""
    return [name for name in RUN_OUTPUTS if (out / name).exists()]


def open_run(
    accelerator: Any,
    out_dir: Path,
    identity: dict,
    cfg: RLConfig,
    resume: bool,
    record: dict | None = None,
) -> tuple[dict, Path | None]:
    """``(run, checkpoint)``: with ``resume`` this folder's run and the checkpoint to continue
    from (:func:`resume_point` on ``identity``, see :func:`run_identity`; checked before any
    model is loaded), else a fresh run (:func:`start_run`) and ``None``. The main process writes
    the resolved ``rl_config.json`` beside it, and ``record`` (the recipe the run came from, for
    the record; nothing reads it back) as ``recipe.yaml``."""
    last = None
    if resume:
        _, last = resume_point(out_dir, identity)
    elif accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        start_run(out_dir, identity)
    accelerator.wait_for_everyone()
    run = json.loads((out_dir / RUN_FILE).read_text())
    if accelerator.is_main_process:
        (out_dir / "rl_config.json").write_text(
            json.dumps(dataclasses.asdict(cfg), indent=1, default=str)
        )
        if record is not None:
            save_recipe(record, out_dir)  # recipe.yaml: the resolved recipe beside the run
    return run, last


def restore(accelerator: Any, out_dir: Path, last: Path, cfg: RLConfig) -> int:
    """Load checkpoint ``last`` into the prepared model and optimizer (and the RNG states), drop
    the metric lines a killed run wrote past it, and return its step."""
    accelerator.load_state(str(last))
    state = json.loads((last / "trainer_state.json").read_text())
    start = int(state["step"])
    world = accelerator.num_processes
    assert state["data_position"] == data_position(cfg, start, world), (
        f"{last}: data position {state['data_position']} does not match step {start} with "
        f"{world} processes x {cfg.pairs_per_step} pairs"
    )
    if accelerator.is_main_process:
        truncate_metrics(out_dir / "metrics.jsonl", start)
    return start


def save_final(accelerator: Any, model: Any, processor: Any, final: Path) -> None:
    """The trained policy (model or adapter, gathered from every process) and its processor."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(
        str(final),
        is_main_process=accelerator.is_main_process,
        save_function=accelerator.save,
        state_dict=accelerator.get_state_dict(model),
    )
    if accelerator.is_main_process:
        processor.save_pretrained(str(final))


def write_summary(
    out_dir: Path, algo: str, collapsed: bool, stopped: str | None, final: Path
) -> None:
    """``summary.json``: steps done, whether the run collapsed or stopped early, the final model."""
    summary = {
        "algo": algo,
        "steps_done": len(read_metrics(out_dir)),
        "collapsed": collapsed,
        "stopped": stopped,
        "final": str(final) if not collapsed else None,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
