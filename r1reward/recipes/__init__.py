"""Recipes: one YAML file per training setup, loaded the same way by the CLI and the notebooks.

A recipe is a nested dict with the sections ``model`` (path or hub id, dtype, LoRA/QLoRA),
``data`` (pairs, teacher, tries), ``sft`` (cold-start SFT, paper Sec. 4.3), ``scalar`` (the
Bradley-Terry baseline), ``rl`` (StableReinforce, Sec. 3), ``eval``, and optionally ``lab`` (the
collapse lab) and ``hardware`` (what a scale recipe was sized for). Every key of every section is
declared, typed and documented in :mod:`r1reward.recipes.config`; :func:`load_recipe` checks the
whole recipe against it, so a misspelt key or a value of the wrong type fails when the recipe
loads, in one line naming the recipe, ``section.key`` and the expected type. Shipped names:
``toy-ci``, ``toy-cpu`` (the tiny model on 2 CPU cores) and the ``qwen2.5-vl-*`` GPU recipes.

Overrides are dotted ``key=value`` strings whose values are parsed as YAML, so ``sft.lr=1e-3``
gives a float, ``model.lora=null`` gives ``None`` and ``model.lora={r: 8}`` gives a dict. A value
of the wrong kind (``sft.lr=abc``) is refused with the key and the expected type, the one the
section's dataclass declares; any declared key may be set even when the YAML file leaves it out.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from r1reward.lazy import import_object
from r1reward.recipes.config import (
    SECTIONS,
    ModelConfig,
    RecipeConfig,
    TinyModelConfig,
    resolve_recipe,
)
from r1reward.recipes.fields import check_keys, check_value, describe, field_types

__all__ = [
    "check_section",
    "RECIPE_DIR",
    "RecipeConfig",
    "resolve_recipe",
    "accelerate_config",
    "available",
    "load_recipe",
    "apply_overrides",
    "recipe_hash",
    "save_recipe",
    "resolve_model_path",
    "build_tiny_cached",
    "tiny_pretrain_kwargs",
]

RECIPE_DIR = Path(__file__).resolve().parent


#: Short names of the shipped accelerate configs (``r1reward/recipes/accelerate/*.yaml``).
ACCELERATE_ALIASES = {
    "zero3": "deepspeed-zero3",
    "deepspeed": "deepspeed-zero3",
    "ddp-cpu": "ddp-cpu-2",
}


def accelerate_config(name_or_path: str | Path) -> Path:
    """An accelerate config by name (``zero3``, ``deepspeed-zero3``, ``fsdp``, ``ddp-cpu-2``) or
    path, as an absolute path that works from any working directory.

    Raises:
        FileNotFoundError: neither an existing file nor a shipped name (the names are listed).
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    folder = RECIPE_DIR / "accelerate"
    name = ACCELERATE_ALIASES.get(str(name_or_path), str(name_or_path))
    shipped = folder / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted([p.stem for p in folder.glob("*.yaml")] + list(ACCELERATE_ALIASES))
    raise FileNotFoundError(
        f"accelerate config {str(name_or_path)!r}: no such file, and not a shipped name "
        f"(known: {', '.join(known)})"
    )


def available() -> list[str]:
    """Names of the recipes shipped with the package (``toy-ci``, ``toy-cpu``, ...)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _parse_value(text: str) -> Any:
    """Parse one override value as YAML (``null`` -> None, ``[a, b]`` -> list, ``1e-3`` -> float).

    PyYAML follows YAML 1.1, which reads ``1e-3`` as a string; such strings become floats here.
    """
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str) and any(c.isdigit() for c in value):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _declared(section: str) -> dict[str, Any]:
    """``field -> type`` of a recipe section's dataclass (empty for a name that is no section)."""
    cls = SECTIONS.get(section)
    return field_types(cls) if cls is not None else {}


def _checked_override(key: str, raw: str, value: Any, tp: Any, source: str) -> Any:
    """``value`` if it may fill a field of type ``tp``; a number given to a string field (a path
    or id such as ``0001``) is kept as written. Raises ``ValueError`` naming the key otherwise."""
    if check_value(value, tp):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and check_value(raw, tp):
        return raw.strip()
    raise ValueError(
        f"{source}: override {key}={raw!r}: expected {describe(tp)}, "
        f"got {type(value).__name__} {value!r}"
    )


def apply_overrides(recipe: dict, overrides: Iterable[str], *, source: str = "recipe") -> dict:
    """Return a copy of ``recipe`` with dotted ``key=value`` overrides applied.

    Raises:
        ValueError: an override without ``=``.
        KeyError: a key that the recipe does not have (the message names the key, the recipe
            and the keys that exist at that level).
    """
    out = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"{source}: override {item!r} is not of the form dotted.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if not isinstance(node, dict):
                where = ".".join(parts[:depth])
                raise KeyError(
                    f"{source}: cannot set {key!r}: {where!r} is {node!r}, not a section; "
                    f"set the whole value instead, e.g. {where}={{{part}: ...}}"
                )
            declared = _declared(parts[0]) if depth == 1 else {}
            if part not in node and not (last and part in declared):
                where = ".".join(parts[:depth]) or "top level"
                known = ", ".join(sorted({*node, *declared})) or "(none)"
                raise KeyError(
                    f"{source}: unknown key {key!r} ({part!r} is not in {where}; known: {known})"
                )
            if last:
                value = _parse_value(raw)
                if part in declared:
                    value = _checked_override(key, raw, value, declared[part], source)
                node[part] = value
            else:
                node = node[part]
    return out


def load_recipe(name_or_path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Load a recipe by name (``toy-cpu``) or YAML path and apply dotted overrides.

    Args:
        name_or_path: a shipped recipe name (see :func:`available`) or a path to a YAML file.
        overrides: ``"section.key=value"`` strings; values are YAML (``sft.lr=1e-3``).

    Returns:
        The recipe as a nested dict; ``recipe["name"]`` is set (file stem when absent).

    Raises:
        FileNotFoundError: neither a shipped name nor an existing file.
        ValueError: the file is not a YAML mapping; a key its section does not declare, or a
            value of the wrong type (:func:`r1reward.recipes.config.resolve_recipe`).
        KeyError: an override names a key the recipe does not have.
    """
    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        shipped = RECIPE_DIR / f"{text}.yaml"
        if not shipped.is_file():
            raise FileNotFoundError(
                f"recipe {text!r}: no such file, and not a shipped recipe "
                f"(known: {', '.join(available())})"
            )
        path = shipped
    with path.open(encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping of sections, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    recipe = apply_overrides(data, overrides, source=str(path))
    resolve_recipe(recipe, source=str(path))  # every section checked once, here
    return recipe


RECIPE_FILE = "recipe.yaml"


def save_recipe(recipe: dict, folder: str | Path) -> Path:
    """Write the resolved recipe (overrides applied) as ``folder/recipe.yaml`` beside a run's
    outputs, so ``r1reward ... --recipe folder/recipe.yaml`` repeats it."""
    path = Path(folder) / RECIPE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(recipe, default=str))
    path.write_text(yaml.safe_dump(clean, sort_keys=False))
    return path


def check_section(cls: type, section: dict, name: str) -> None:
    """Refuse keys of a recipe section that its dataclass ``cls`` does not have, naming them and
    the section (``rl``, ``lab``, ...) and listing the keys it does have
    (:func:`r1reward.recipes.fields.check_keys`)."""
    check_keys(cls, section, name)


def recipe_hash(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable values (recipe sections), for cache keys."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


#: What ``model.path: null`` stands for: the toy's tiny Qwen2.5-VL, built on first use. A module
#: path resolved by :func:`r1reward.lazy.import_object` when a recipe asks for it, so loading or
#: resolving a recipe that names a real model never imports the toy world.
TINY_MODEL_MODULE = "r1reward.toy.tiny_model"


def resolve_model_path(recipe: dict, cache_dir: str | Path = "artifacts/models") -> str:
    """The model path or hub id of a recipe; builds the tiny model when ``model.path`` is null.

    With ``model.path: null`` and ``model.tiny: {size, seed}``, the tiny Qwen2.5-VL is built once
    by :func:`r1reward.toy.tiny_model.build_tiny_model` under ``cache_dir/tiny-{size}-seed{seed}``
    (``-pt{steps}`` appended when ``model.tiny.pretrain_steps`` asks for caption pretraining).
    """
    model = ModelConfig.from_dict(recipe.get("model"))
    if model.path:
        return str(model.path)
    tiny = model.tiny
    if tiny is None:
        raise KeyError(f"recipe {recipe.get('name')!r}: model.path is null and model.tiny is unset")
    pretrain = tiny_pretrain_kwargs(tiny)
    name = f"tiny-{tiny.size}-seed{tiny.seed}" + (
        f"-pt{pretrain['pretrain_steps']}" if pretrain else ""
    )
    return str(
        build_tiny_cached(Path(cache_dir) / name, size=tiny.size, seed=tiny.seed, **pretrain)
    )


def tiny_pretrain_kwargs(tiny: TinyModelConfig | dict) -> dict[str, Any]:
    """The caption-pretraining keywords of a recipe's ``model.tiny`` for ``build_tiny_model``
    (``pretrain_steps``, ``pretrain_lr``, ``pretrain_batch_size``, ``pretrain_text_batch_size``);
    empty when there are none."""
    spec = tiny if isinstance(tiny, TinyModelConfig) else TinyModelConfig.from_dict(tiny)
    casts = {
        "pretrain_steps": int,
        "pretrain_lr": float,  # an integer passes a number field as written
        "pretrain_batch_size": int,
        "pretrain_text_batch_size": int,
    }
    out = {k: cast(getattr(spec, k)) for k, cast in casts.items() if getattr(spec, k) is not None}
    return out if out.get("pretrain_steps") else {}


def build_tiny_cached(folder: str | Path, *, size: str, seed: int, **pretrain: Any) -> Path:
    """:func:`r1reward.toy.tiny_model.build_tiny_model` into a cache folder that this package owns.

    A complete tiny-model folder built with other settings (e.g. an older default corpus) is a
    stale cache entry here: it is removed and rebuilt instead of raising ``FileExistsError``.
    ``pretrain`` holds the caption-pretraining keywords (:func:`tiny_pretrain_kwargs`).
    """
    folder = Path(folder)
    tiny = import_object(TINY_MODEL_MODULE)
    try:
        return tiny.build_tiny_model(folder, size=size, seed=seed, **pretrain)
    except FileExistsError:
        if not (folder / tiny.MARKER).is_file():
            raise  # not a tiny-model folder: never delete what we did not build
        shutil.rmtree(folder)
        return tiny.build_tiny_model(folder, size=size, seed=seed, **pretrain)
