"""Declaring and checking typed recipe sections (the machinery behind :mod:`r1reward.recipes.config`).

A section is a dataclass whose fields are declared with :func:`knob` (a default and a help
string, TRL's ``field(default=..., metadata={"help": ...})``). :func:`section_from_dict` builds
one from the mapping a YAML file holds, refusing unknown keys and values of the wrong type with
one line that names the recipe, ``section.key`` and the expected type.

Types understood: ``bool``, ``int``, ``float`` (an integer passes; a numeric string such as
``1e-4``, which YAML 1.1 reads as a string, becomes a float), ``str``, ``list[X]``,
``tuple[X, ...]`` (a YAML list passes), ``dict``, ``Any``, unions such as ``float | None``, and
nested section dataclasses (a mapping).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Union

__all__ = [
    "Section",
    "check_keys",
    "field_types",
    "knob",
    "tracker_list",
    "describe",
    "check_value",
    "section_from_dict",
    "section_help",
]


def knob(default: Any, help: str) -> Any:  # noqa: A002 -- the name TRL's metadata uses
    """A dataclass field with ``default`` (a list or dict is copied per instance) and its help."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help}
        )
    return dataclasses.field(default=default, metadata={"help": help})


def tracker_list(section: Any) -> Any:
    """A section mapping whose ``report_to`` is a list: one tracker name ``x`` -> ``[x]``,
    ``none`` or null -> ``[]``; anything else is returned as it is (and checked as typed)."""
    if not isinstance(section, dict) or "report_to" not in section:
        return section
    value = section["report_to"]
    if value is None or value == "none":
        value = []
    elif isinstance(value, str):
        value = [value]
    return {**section, "report_to": value}


def field_types(cls: type) -> dict[str, Any]:
    """``field name -> type`` of a section dataclass (its declared fields only)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _numeric_str(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def check_value(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as YAML reads it) may fill a field annotated ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if _is_union(tp):
        return any(check_value(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)) or _numeric_str(
            value
        )
    if tp is str:
        return isinstance(value, str)
    if tp is list or origin is list:
        return isinstance(value, list) and (not args or all(check_value(v, args[0]) for v in value))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(check_value(v, args[0]) for v in value)
        return len(value) == len(args) and all(check_value(v, a) for v, a in zip(value, args))
    if tp is dict or origin is dict or dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    raise TypeError(f"recipe field type {tp!r} is not one the recipe checker understands")


_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def describe(tp: Any) -> str:
    """The expected type in words, for error messages (``a number or null``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        return " or ".join(describe(a) for a in args)
    if tp is type(None):
        return "null"
    simple = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Any: "anything",
    }
    if tp in simple:
        return simple[tp]
    if tp is list or origin is list:
        return f"a list of {_PLURAL.get(args[0], 'values')} such as [a, b]" if args else "a list"
    if origin is tuple:
        return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
    return "a mapping such as {key: value}"


def _convert(value: Any, tp: Any, where: str, source: str) -> Any:
    """``value`` as the field holds it: numeric strings of float fields as floats, lists of
    tuple fields as tuples, mappings of nested sections as dataclasses; all else unchanged."""
    if value is None:
        return None
    if _is_union(tp):
        for a in typing.get_args(tp):
            if a is not type(None) and check_value(value, a):
                return _convert(value, a, where, source)
        return value
    if tp is float and isinstance(value, str):
        return float(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        item = args[0]
        return tuple(_convert(v, item, where, source) for v in value)
    if origin is list and args:
        return [_convert(v, args[0], where, source) for v in value]
    if dataclasses.is_dataclass(tp):
        return section_from_dict(tp, value, where, source=source)
    return value


def check_keys(cls: type, data: dict, section: str, *, source: str = "recipe") -> None:
    """Refuse the keys of ``data`` that the section dataclass ``cls`` does not declare, all of
    them in one line with the keys it does declare."""
    names = list(field_types(cls))
    unknown = [k for k in data if k not in names]
    if unknown:
        listed = ", ".join(f"{section}.{k}" for k in unknown)
        raise ValueError(f"{source}: unknown keys: {listed}; {section} has: {', '.join(names)}")


def section_from_dict(cls: type, data: Any, section: str, *, source: str = "recipe") -> Any:
    """An instance of the section dataclass ``cls`` from a recipe's mapping (``None``: defaults).

    Raises:
        ValueError: one line naming ``source`` (the recipe), ``section.key`` and what was
            expected: a key ``cls`` does not declare, or a value of the wrong type.
    """
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(
            f"{source}: {section}: expected a mapping such as {{key: value}}, "
            f"got {type(data).__name__} {data!r}"
        )
    check_keys(cls, data, section, source=source)
    hints = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if not check_value(value, tp):
            raise ValueError(
                f"{source}: {section}.{key}: expected {describe(tp)}, "
                f"got {type(value).__name__} {value!r}"
            )
        kwargs[key] = _convert(value, tp, f"{section}.{key}", source)
    return cls(**kwargs)


def section_help(cls: type) -> dict[str, str]:
    """``field name -> help string`` of a section dataclass (empty string where none)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


class Section:
    """Base of a section dataclass: :meth:`from_dict` checks a recipe's mapping and builds it.
    ``key`` is where the section sits in a recipe (``sft``, ``model.tiny``), for messages."""

    key: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: dict | None, *, source: str = "recipe") -> Any:
        """The section from ``data`` (``None``: every default); see :func:`section_from_dict`."""
        return section_from_dict(cls, data, cls.key, source=source)
