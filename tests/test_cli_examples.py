"""Every example in every ``r1reward COMMAND --help`` and every ``r1reward`` command in the README
parses as printed: the command exists, its flags and arguments are accepted by the command's own
parser (stopped right after parsing, so nothing is trained or loaded), ``--accelerate-config``
resolves, recipe names and dotted overrides resolve with typed values, and an ``eval --format``
is a format ``r1reward.data.load`` knows. Examples of commands owned elsewhere that are known to
be wrong are marked ``xfail(strict=True)``: fixing them turns the mark into a failure to remove."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from r1reward import cli
from r1reward.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
#: known wrong examples in files other issues own (the reason says which)
KNOWN_BAD: dict[str, str] = {}


class _Parsed(Exception):
    def __init__(self, namespace):
        self.namespace = namespace


def _help_text(name: str, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0, name
    return capsys.readouterr().out


def _examples(text: str) -> list[str]:
    """``r1reward ...`` command lines in a help text or a markdown file (joined across ``\\``
    continuations, split at ``&&``, backticks and trailing comments removed)."""
    text = re.sub(r"\\\n\s*", " ", text)
    found = []
    for match in re.finditer(r"(?:^|[`\s])(r1reward [^`\n]+)", text):
        for part in match.group(1).split("&&"):
            part = part.split("  #")[0].strip()
            if part.startswith("r1reward "):
                found.append(part)
    return found


def check_example(line: str, monkeypatch) -> None:
    """Parse ``line`` with its command's parser and resolve its recipe; raise on any error."""
    argv = shlex.split(line)[1:]
    if argv in (["--help"], ["-h"]):
        assert cli.main(argv) == 0
        return
    name, rest = argv[0], argv[1:]
    assert name in cli.COMMANDS, f"{line}: unknown command {name!r}"
    if name in cli.LAUNCHABLE:
        launch = cli.launch_command(name, rest)
        if launch is not None:
            rest = launch[launch.index(name) + 1 :]
    if rest in (["--help"], ["-h"]):
        return
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        with pytest.raises(_Parsed) as parsed:
            cli.main([name, *rest])
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", original)
    ns = parsed.value.namespace
    recipe = getattr(ns, "recipe", None)
    if recipe and not (recipe.endswith(".yaml") and not Path(recipe).exists()):  # a user's file
        load_recipe(recipe, getattr(ns, "overrides", None) or [])
    if name == "eval" and ns.format != "auto":
        from r1reward.data import FORMATS

        assert ns.format in FORMATS, f"{line}: --format {ns.format!r} is not one of {FORMATS}"


def _parser_of(name: str) -> argparse.ArgumentParser:
    """The parser a command builds (caught at its first ``parse_args``, so nothing runs)."""
    original = argparse.ArgumentParser.parse_args

    class _Got(Exception):
        pass

    def grab(self, args=None, namespace=None):
        raise _Got(self)

    argparse.ArgumentParser.parse_args = grab
    try:
        cli.main([name])
    except _Got as got:
        return got.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"r1reward {name} built no parser")


def _all_examples() -> list[str]:
    texts = [_parser_of(name).epilog or "" for name in cli.COMMANDS]
    texts += [cli._usage(), (ROOT / "README.md").read_text()]
    out = []
    for line in (x for text in texts for x in _examples(text)):
        words = line.split()
        if "..." in line or "|" in line or (words[1] not in cli.COMMANDS and words[1] != "--help"):
            continue  # prose or placeholders ("r1reward COMMAND [options]", table headers)
        if len(words) == 2 and words[1] in cli.COMMANDS:
            continue  # the name of a command in prose ("`r1reward eval` reads ..."), not an example
        out.append(line)
    return list(dict.fromkeys(out))


EXAMPLES = _all_examples()


def test_every_command_has_help_with_examples(capsys):
    for name in cli.COMMANDS:
        assert f"r1reward {name}" in _help_text(name, capsys) or name == "build-tiny"
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize(
    "line",
    [pytest.param(x, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BAD[x]))
     if x in KNOWN_BAD else x for x in EXAMPLES],
)
def test_example_parses_as_printed(line, monkeypatch):
    check_example(line, monkeypatch)


def test_the_checker_catches_wrong_examples(monkeypatch):
    for bad in ["r1reward sft --recipe toy-ci --outt x", "r1reward sft --recipe toy-cii --out x",
                "r1reward rl --recipe toy-ci --out x rl.lr=abc", "r1reward nope --x",
                "r1reward rl --accelerate-config zero9 --recipe toy-ci"]:
        with pytest.raises((SystemExit, KeyError, ValueError, FileNotFoundError, AssertionError)):
            check_example(bad, monkeypatch)
