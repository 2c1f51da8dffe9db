"""Recipes: one YAML file per training setup, loaded the same way by the CLI and the notebooks.

A recipe is a nested dict with the sections ``model`` (path or hub id, dtype, LoRA/QLoRA),
``data`` (pairs, teacher, tries), ``sft`` (cold-start SFT, paper Sec. 4.3), ``scalar`` (the
Bradley-Terry baseline), ``rl`` (StableReinforce, Sec. 3) and ``eval``. Shipped names:
``toy-ci``, ``toy-cpu`` (the tiny model on 2 CPU cores) and ``qwen2.5-vl-7b-lora`` (one GPU).

Overrides are dotted ``key=value`` strings whose values are parsed as YAML, so ``sft.lr=1e-3``
gives a float, ``model.lora=null`` gives ``None`` and ``model.lora={r: 8}`` gives a dict. A value
of the wrong kind (``sft.lr=abc``) is refused with the key and the expected type: the type is the
one declared in :data:`OPTIONAL_KEYS`, or else that of the value the recipe already holds.
Keys declared in :data:`OPTIONAL_KEYS` may be set even when the YAML file leaves them out.
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

from r1reward.toy.tiny_model import MARKER, build_tiny_model

__all__ = [
    "check_section",
    "RECIPE_DIR",
    "OPTIONAL_KEYS",
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


#: Keys a recipe may leave out, which then take their default; settable from the command line.
#: ``section -> key -> (expected kind, help)``; kinds are those of :func:`_kind_of`.
OPTIONAL_KEYS: dict[str, dict[str, tuple[str, str]]] = {
    "data": {
        "heldout": ("str", "held-out pairs file, never trained on (r1reward.data.splits)"),
        "heldout_fraction": (
            "number",
            "seeded share of the data.source file held out and never trained on",
        ),
    },
    "model": {
        "max_pixels": ("int", "cap on the pixels of each image given to the processor"),
    },
    "sft": {
        "report_to": ("list", "transformers trackers, e.g. [tensorboard] or [wandb]"),
        "save_steps": ("int", "checkpoint every N optimizer steps (0: only the final one)"),
        "save_total_limit": ("int", "checkpoints kept (the oldest are removed)"),
    },
}


def _kind_of(value: Any) -> str | None:
    """The kind an override must have to replace ``value`` (None: anything goes)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return None


_KIND_TEXT = {
    "bool": "true or false",
    "int": "an integer",
    "number": "a number",
    "str": "a string",
    "list": "a list such as [a, b]",
    "mapping": "a mapping such as {key: value}",
}


def _check_kind(key: str, raw: str, value: Any, kind: str | None, source: str) -> None:
    """Raise ``ValueError`` naming ``key`` when ``value`` is not of ``kind`` (``null`` passes)."""
    if kind is None or value is None:
        return
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "str": isinstance(value, str | int | float) and not isinstance(value, bool),
        "list": isinstance(value, list),
        "mapping": isinstance(value, dict),
    }.get(kind, True)
    if not ok:
        raise ValueError(
            f"{source}: override {key}={raw!r}: expected {_KIND_TEXT.get(kind, kind)}, "
            f"got {type(value).__name__} {value!r}"
        )


#: Short names of the shipped accelerate configs (``r1reward/recipes/accelerate/*.yaml``).
ACCELERATE_ALIASES = {"zero3": "deepspeed-zero3", "deepspeed": "deepspeed-zero3",
                      "ddp-cpu": "ddp-cpu-2"}


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
            optional = OPTIONAL_KEYS.get(parts[0], {}) if depth == 1 else {}
            if part not in node and not (last and part in optional):
                where = ".".join(parts[:depth]) or "top level"
                known = ", ".join(sorted({*node, *optional})) or "(none)"
                raise KeyError(
                    f"{source}: unknown key {key!r} ({part!r} is not in {where}; known: {known})"
                )
            if last:
                value = _parse_value(raw)
                kind = optional[part][0] if part in optional else _kind_of(node.get(part))
                if kind != "str":  # a string value may hold anything YAML reads (paths, ids)
                    _check_kind(key, raw, value, kind, source)
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
        ValueError: the file is not a YAML mapping.
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
    return apply_overrides(data, overrides, source=str(path))


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
    the section (``rl``, ``lab``, ...) and listing the keys it does have."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise ValueError(f"recipe {name}: unknown keys {unknown}; expected some of {sorted(names)}")


def recipe_hash(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable values (recipe sections), for cache keys."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def resolve_model_path(recipe: dict, cache_dir: str | Path = "artifacts/models") -> str:
    """The model path or hub id of a recipe; builds the tiny model when ``model.path`` is null.

    With ``model.path: null`` and ``model.tiny: {size, seed}``, the tiny Qwen2.5-VL is built once
    by :func:`r1reward.toy.tiny_model.build_tiny_model` under ``cache_dir/tiny-{size}-seed{seed}``
    (``-pt{steps}`` appended when ``model.tiny.pretrain_steps`` asks for caption pretraining).
    """
    model = recipe.get("model") or {}
    if model.get("path"):
        return str(model["path"])
    tiny = model.get("tiny")
    if not tiny:
        raise KeyError(f"recipe {recipe.get('name')!r}: model.path is null and model.tiny is unset")
    size, seed = tiny.get("size", "tiny"), int(tiny.get("seed", 0))
    pretrain = tiny_pretrain_kwargs(tiny)
    name = f"tiny-{size}-seed{seed}" + (f"-pt{pretrain['pretrain_steps']}" if pretrain else "")
    return str(build_tiny_cached(Path(cache_dir) / name, size=size, seed=seed, **pretrain))


def tiny_pretrain_kwargs(tiny: dict) -> dict[str, Any]:
    """The caption-pretraining keywords of a recipe's ``model.tiny`` for ``build_tiny_model``
    (``pretrain_steps``, ``pretrain_lr``, ``pretrain_batch_size``, ``pretrain_text_batch_size``);
    empty when there are none."""
    casts = {
        "pretrain_steps": int,
        "pretrain_lr": float,
        "pretrain_batch_size": int,
        "pretrain_text_batch_size": int,
    }
    out = {k: cast(tiny[k]) for k, cast in casts.items() if tiny.get(k) is not None}
    return out if out.get("pretrain_steps") else {}


def build_tiny_cached(folder: str | Path, *, size: str, seed: int, **pretrain: Any) -> Path:
    """:func:`r1reward.toy.tiny_model.build_tiny_model` into a cache folder that this package owns.

    A complete tiny-model folder built with other settings (e.g. an older default corpus) is a
    stale cache entry here: it is removed and rebuilt instead of raising ``FileExistsError``.
    ``pretrain`` holds the caption-pretraining keywords (:func:`tiny_pretrain_kwargs`).
    """
    folder = Path(folder)
    try:
        return build_tiny_model(folder, size=size, seed=seed, **pretrain)
    except FileExistsError:
        if not (folder / MARKER).is_file():
            raise  # not a tiny-model folder: never delete what we did not build
        shutil.rmtree(folder)
        return build_tiny_model(folder, size=size, seed=seed, **pretrain)
