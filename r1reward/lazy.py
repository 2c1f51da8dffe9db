"""Names resolved on first use: ``"package.module:attribute"`` strings, imported when asked for.

The shipped mappings from a name in a recipe to the code behind it (the judge kinds of
:data:`r1reward.judges.JUDGES`, the teacher kinds of :data:`r1reward.curation.TEACHERS`, the
generated data sources of :data:`r1reward.data.sources.BUILTIN`) hold import paths rather than
objects, as transformers' auto mappings do: the toy world's judge and teacher live in
:mod:`r1reward.toy`, which the real path never imports, yet ``build_judge("rule")`` works from plain
Python because the toy module is imported the first time its kind is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_object"]


def import_object(spec: str) -> Any:
    """The object that ``spec`` names: ``"package.module:attr"`` imports the module and returns
    its ``attr``; ``"package.module"`` returns the module itself.

    Raises:
        ImportError: the module cannot be imported, or has no ``attr`` (naming ``spec``).
    """
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ImportError(f"{spec!r}: module {module_name!r} has no attribute {attr!r}") from exc
