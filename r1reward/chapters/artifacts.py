"""Artifacts shared between chapters, built on first use and cached under ``artifacts/<profile>/``.

Every notebook calls these with the profile it read in its first cell, so the tiny model, the
curated pairs and the cold-start SFT model are built once and reused by the evaluation,
consistency and RL chapters:

- :func:`tiny_model` -- the randomly initialised tiny Qwen2.5-VL folder;
- :func:`curated_pairs` -- the profile's toy train pairs, curated by the toy teacher (Sec. 4.3);
- :func:`heldout_pairs` -- the held-out toy split;
- :func:`sft_model` -- the cold-start SFT model folder (what RL starts from);
- :func:`sft_report` -- its held-out well-formed rate and accuracy (greedy);
- :func:`scalar_baseline` -- the Bradley-Terry baseline's held-out accuracy and loss curve.

With ``R1REWARD_GPU_STANDIN=tiny`` (:func:`r1reward.profile.gpu_standin`) the ``gpu`` profile
takes the ``ci`` profile's recipe and artifact folder, so CI executes the chapters' ``gpu``
branches on the tiny model and reuses what the ``ci`` run built.

A cached folder is keyed by a hash of the recipe sections it depends on, so a recipe change
rebuilds it; a marker file is written last, so a crash never leaves a folder that looks complete
(it is removed and rebuilt). A file lock serialises concurrent builders.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from r1reward.curation import read_records
from r1reward.data.markers import read_marker, write_marker
from r1reward.models import load_model
from r1reward.profile import gpu_standin
from r1reward.recipes import build_tiny_cached, load_recipe, recipe_hash, tiny_pretrain_kwargs
from r1reward.train.scalar import scalar_inputs, train_scalar
from r1reward.train.sft import judge_pairs, load_pairs, sft_inputs, train_sft

__all__ = [
    "PROFILE_RECIPES",
    "artifacts_dir",
    "recipe_name",
    "recipe_for",
    "tiny_model",
    "curated_pairs",
    "curation_records",
    "heldout_pairs",
    "sft_model",
    "sft_report",
    "scalar_baseline",
    "voting_dir",
]

#: The recipe each profile uses.
PROFILE_RECIPES = {"ci": "toy-ci", "cpu": "toy-cpu", "gpu": "qwen2.5-vl-7b-lora"}
MARKER = "r1reward_complete.json"


def _standing_in(profile: str) -> str:
    """The profile whose recipe and artifacts ``profile`` uses: itself, or ``ci`` for ``gpu``
    under ``R1REWARD_GPU_STANDIN``."""
    return "ci" if profile == "gpu" and gpu_standin() else profile


def recipe_name(profile: str) -> str:
    """The recipe ``profile`` uses (:data:`PROFILE_RECIPES`; ``toy-ci`` for a stand-in ``gpu``)."""
    if profile not in PROFILE_RECIPES:
        raise ValueError(f"profile {profile!r}: expected one of {', '.join(PROFILE_RECIPES)}")
    return PROFILE_RECIPES[_standing_in(profile)]


def artifacts_dir(profile: str) -> Path:
    """``$R1REWARD_ARTIFACTS/<profile>``, else ``artifacts/<profile>`` at the repository root
    (the folder holding ``pyproject.toml`` above the package), else under the working directory.
    A stand-in ``gpu`` profile shares the ``ci`` folder (same recipe, same cached artifacts)."""
    env = os.environ.get("R1REWARD_ARTIFACTS")
    if env:
        root = Path(env)
    else:
        repo = Path(__file__).resolve().parents[2]
        root = repo / "artifacts" if (repo / "pyproject.toml").is_file() else Path("artifacts")
    path = root / _standing_in(profile)
    path.mkdir(parents=True, exist_ok=True)
    return path


def recipe_for(profile: str, overrides: Sequence[str] = ()) -> dict:
    """The profile's recipe (``ci`` -> ``toy-ci``, ``cpu`` -> ``toy-cpu``, ``gpu`` -> 7B LoRA, or
    ``toy-ci`` under ``R1REWARD_GPU_STANDIN``)."""
    return load_recipe(recipe_name(profile), overrides)


@contextlib.contextmanager
def _lock(folder: Path, name: str) -> Iterator[None]:
    with (folder / f".{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(folder: Path, key: str, build: Callable[[Path], Any]) -> Path:
    """Return ``folder`` if its marker holds ``key``; else (re)build it and write the marker."""
    marker = folder / MARKER
    with _lock(folder.parent, folder.name):
        if (read_marker(marker) or {}).get("key") == key:
            return folder
        if folder.exists():
            shutil.rmtree(folder)  # half-built or built from another recipe
        folder.mkdir(parents=True)
        build(folder)
        write_marker(marker, {"key": key})  # last: the folder is complete
    return folder


def _tiny_spec(recipe: dict) -> dict:
    return recipe["model"].get("tiny") or load_recipe("toy-cpu")["model"]["tiny"]


def tiny_model(profile: str) -> Path:
    """The tiny Qwen2.5-VL folder of ``profile`` (``artifacts/<profile>/tiny-model``)."""
    spec = _tiny_spec(recipe_for(profile))
    folder = artifacts_dir(profile) / "tiny-model"
    with _lock(folder.parent, folder.name):
        return build_tiny_cached(
            folder,
            size=spec.get("size", "tiny"),
            seed=int(spec.get("seed", 0)),
            **tiny_pretrain_kwargs(spec),
        )


def _tiny_build_info(profile: str, recipe: dict) -> Any:
    """What the cached SFT/scalar folders depend on: the tiny model's build marker, or the hub id."""
    if recipe["model"].get("path"):
        return recipe["model"]["path"]

    # the toy's modules are imported where a toy artifact is asked for, so importing this cache
    # (as r1reward.lab does) leaves the toy unloaded for a lab on real data
    from r1reward.toy.tiny_model import MARKER as TINY_MARKER

    return json.loads((tiny_model(profile) / TINY_MARKER).read_text())


def _curation_path(profile: str, recipe: dict) -> Path:
    from r1reward.toy.world import TOY_VERSION

    return artifacts_dir(profile) / f"curated-{recipe_hash(recipe['data'], TOY_VERSION)}.jsonl"


def curated_pairs(profile: str) -> list[Any]:
    """The profile's training pairs curated by its teacher (difficulty 1-4, accepted analyses).

    The curation JSONL (``artifacts/<profile>/curated-<hash>.jsonl``) resumes, so a second call
    only reads it.
    """
    recipe = recipe_for(profile)
    path = _curation_path(profile, recipe)
    with _lock(path.parent, path.name):
        return load_pairs(recipe["data"], "train", curated_path=path)


def curation_records(profile: str) -> dict[str, dict]:
    """The raw curation records (every try's outcome) behind :func:`curated_pairs`."""
    curated_pairs(profile)
    return read_records(_curation_path(profile, recipe_for(profile)))


def heldout_pairs(profile: str, n: int | None = None) -> list[Any]:
    """The held-out pairs of ``profile`` (disjoint from every training pair): the recipe's
    ``data.heldout_pairs`` of them, or the first ``n`` of the same stream (a toy split is
    prefix-stable, so ``heldout_pairs(p, 500)[:200] == heldout_pairs(p)`` when the recipe
    holds out 200)."""
    data = dict(recipe_for(profile)["data"])
    if n is not None:
        if n < 0:
            raise ValueError(f"n={n}: expected >= 0")
        data["heldout_pairs"] = n
    return load_pairs(data, "heldout")


def _model_overrides(profile: str, recipe: dict) -> list[str]:
    return [] if recipe["model"].get("path") else [f"model.path={tiny_model(profile)}"]


def sft_model(profile: str) -> Path:
    """The cold-start SFT model of ``profile``; ``load_model(sft_model(p))`` loads it.

    Built on the first call (curation + TRL SFT, :func:`r1reward.train.sft.train_sft`) into
    ``artifacts/<profile>/sft-<hash>``; the folder also holds ``sft_log.jsonl`` (loss curve) and
    ``sft_summary.json`` (time, peak memory).
    """
    base = recipe_for(profile)
    recipe = recipe_for(profile, _model_overrides(profile, base))
    info = _tiny_build_info(profile, base)
    key = recipe_hash(recipe["model"], recipe["data"], recipe["sft"], info)
    pairs = curated_pairs(profile)
    folder = artifacts_dir(profile) / f"sft-{key}"
    # in a notebook, transformers' progress callback prints one HTML table row per logging step
    # (about 300 rows in the cpu profile) into the chapter; the loss curve is plotted instead
    quiet = {**recipe, "sft": {**recipe["sft"], "disable_tqdm": True}}
    return _cached(
        folder, key, lambda out: train_sft(**sft_inputs(quiet, pairs=pairs), out_dir=out)
    )


def sft_report(profile: str) -> dict[str, Any]:
    """Greedy held-out judgments of :func:`sft_model`: ``{"n", "well_formed", "accuracy",
    "answered", "texts"}``, cached as ``heldout_report.json`` in the model folder."""
    folder = sft_model(profile)
    path = folder / "heldout_report.json"
    with _lock(folder, "heldout_report"):
        if path.is_file():
            return json.loads(path.read_text())

        recipe = recipe_for(profile)
        model, processor = load_model(folder)
        report = judge_pairs(
            model,
            processor,
            heldout_pairs(profile),
            max_new_tokens=int(recipe["sft"].get("max_new_tokens", 256)),
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        tmp.replace(path)
        return report


def voting_dir(profile: str, model_dir: str | Path, n_pairs: int) -> Path:
    """Where a model's sampled judgments of the first ``n_pairs`` held-out pairs are kept:
    ``artifacts/<profile>/rl-runs/<model folder name>-voting-<n_pairs>``. Chapter 6 draws them
    for the cold-start model (:func:`r1reward.chapters.experiments.voting_eval`); the Results
    chapter reads the same folder instead of drawing the same samples again."""
    return artifacts_dir(profile) / "rl-runs" / f"{Path(model_dir).name}-voting-{n_pairs}"


def scalar_baseline(profile: str) -> dict[str, Any]:
    """The Bradley-Terry baseline of ``profile``: held-out accuracy, loss log (cached)."""
    base = recipe_for(profile)
    recipe = recipe_for(profile, _model_overrides(profile, base))
    info = _tiny_build_info(profile, base)
    key = recipe_hash(recipe["model"], recipe["data"], recipe["scalar"], info)
    folder = artifacts_dir(profile) / f"scalar-{key}"

    def build(out: Path) -> None:
        result = train_scalar(**scalar_inputs(recipe), out_dir=out, progress=False)
        (out / "scalar_result.json").write_text(json.dumps(result))

    _cached(folder, key, build)
    return json.loads((folder / "scalar_result.json").read_text())
