"""Generated pair sources: a name that ``data.source`` may hold instead of a pairs file.

A generated source is any object (usually a module) with

- ``make_pairs(n, *, seed, split, image_size) -> list[PreferencePair]``: the first ``n`` pairs of
  split ``split`` (``"train"`` or ``"heldout"``, never overlapping) of the stream ``seed``, with
  images of ``image_size`` pixels -- what :mod:`r1reward.data.splits` reads for ``data.source:
  NAME``;
- optionally ``on_swap(pair) -> None``: called by :meth:`PreferencePair.swap
  <r1reward.data.schema.PreferencePair.swap>` on the swapped copy of a pair whose ``source`` is
  the name, to rewrite in place what its ``meta`` says about the responses by position (the toy
  world's stored teacher analysis).

The toy world is shipped as a *lazy* entry of :data:`BUILTIN` (a module path imported the first
time its name is used, as transformers' auto mappings do), not registered by the toy itself: the
toy world imports this data layer, so a module-level import here would be a circle, and a toy
pair read back from a file must swap the same way in a process that never imported the toy.
Nothing in :mod:`r1reward.data` imports the toy package; ``split_pairs({"source": "toy"})`` still
works from plain Python. :func:`register_source` adds (or replaces) a source at run time.
"""

from __future__ import annotations

from typing import Any

from r1reward.lazy import import_object

__all__ = ["BUILTIN", "get_source", "is_generated", "on_swap", "register_source"]

#: Generated sources shipped with the package: name -> module path, imported on first use.
BUILTIN: dict[str, str] = {"toy": "r1reward.toy.world"}

_registered: dict[str, Any] = {}


def register_source(name: str, source: Any) -> None:
    """Make ``data.source: name`` generate its pairs with ``source`` (see the module docstring).

    Raises:
        TypeError: ``source`` has no callable ``make_pairs``.
    """
    if not callable(getattr(source, "make_pairs", None)):
        raise TypeError(
            f"register_source({name!r}): {source!r} has no make_pairs(n, *, seed, split, "
            "image_size)"
        )
    _registered[name] = source


def is_generated(name: str) -> bool:
    """Whether ``name`` is a generated source (registered or in :data:`BUILTIN`), not a file."""
    return name in _registered or name in BUILTIN


def get_source(name: str) -> Any:
    """The generated source ``name``; a :data:`BUILTIN` one is imported on first use.

    Raises:
        KeyError: ``name`` is not a generated source.
    """
    if name not in _registered:
        if name not in BUILTIN:
            raise KeyError(
                f"data.source {name!r}: not a generated source; expected a pairs file or one of "
                f"{sorted(set(BUILTIN) | set(_registered))}"
            )
        register_source(name, import_object(BUILTIN[name]))
    return _registered[name]


def on_swap(pair: Any) -> None:
    """Run the ``on_swap`` hook of ``pair.source`` on a just-swapped ``pair`` (a no-op for pairs
    of files and of sources without the hook)."""
    if is_generated(pair.source):
        hook = getattr(get_source(pair.source), "on_swap", None)
        if hook is not None:
            hook(pair)
