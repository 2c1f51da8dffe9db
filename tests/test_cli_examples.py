"""Every example in every ``r1reward COMMAND --help`` and every ``r1reward`` command in the README
parses as printed: the command exists, its flags and arguments are accepted by the command's own
parser (stopped right after parsing, so nothing is trained or loaded), ``--accelerate-config``
resolves, recipe names and dotted overrides resolve with typed values, and an ``eval --format``
is a format ``r1reward.data.load`` knows. Examples of commands owned elsewhere that are known to
be wrong are marked ``xfail(strict=True)``: fixing them turns the mark into a failure to remove.

The commands that need a GPU (a Qwen2.5-VL recipe, or ``eval`` on a GPU device map) also run with
``--dry-run`` from an empty folder and no network: the recipe resolves, the 7B model is built on
the meta device and the plan is printed (see :mod:`r1reward.dryrun`)."""

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
    [
        pytest.param(x, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BAD[x]))
        if x in KNOWN_BAD
        else x
        for x in EXAMPLES
    ],
)
def test_example_parses_as_printed(line, monkeypatch):
    check_example(line, monkeypatch)


def test_the_checker_catches_wrong_examples(monkeypatch):
    for bad in [
        "r1reward sft --recipe toy-ci --outt x",
        "r1reward sft --recipe toy-cii --out x",
        "r1reward rl --recipe toy-ci --out x rl.lr=abc",
        "r1reward nope --x",
        "r1reward rl --accelerate-config zero9 --recipe toy-ci",
    ]:
        with pytest.raises((SystemExit, KeyError, ValueError, FileNotFoundError, AssertionError)):
            check_example(bad, monkeypatch)


# ------------------------------------------------------------------ the GPU commands, dry-run

#: Qwen2.5-VL-7B(-Instruct)'s parameter count (r1reward.scaling's exact shape, meta device)
SEVEN_B_PARAMS = "8,292,166,656"


def _needs_gpu(line: str) -> bool:
    words = line.split()
    return words[1] in cli.DRY_RUN and ("qwen2.5-vl" in line or "--device-map" in words)


GPU_EXAMPLES = [x for x in EXAMPLES if _needs_gpu(x)]


def test_the_readme_gpu_commands_are_all_dry_run():
    readme = [x for x in _examples((ROOT / "README.md").read_text()) if _needs_gpu(x)]
    assert len(readme) >= 6 and set(readme) <= set(GPU_EXAMPLES)


@pytest.mark.parametrize("line", GPU_EXAMPLES)
def test_gpu_example_dry_runs(line, tmp_path, monkeypatch, capsys):
    """The command as printed plus ``--dry-run``, from an empty folder with no network: the
    7B recipe resolves, the model is built on the meta device and the plan is printed. A
    ``--model`` folder of a run that does not exist here gets a stand-in ``config.json`` with the
    7B shape (what that run's folder would hold)."""
    from r1reward.scaling import qwen25_vl_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = shlex.split(line)[1:]
    if "--model" in argv:
        qwen25_vl_config("7b").save_pretrained(tmp_path / argv[argv.index("--model") + 1])
    if "--dry-run" not in argv:
        argv.append("--dry-run")
    assert cli.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "model built on the meta device" in out and "output:" in out
    assert SEVEN_B_PARAMS in out and "memory:" in out
    if argv[0] != "eval":
        assert "trainable of" in out and "steps:" in out and "processes:" in out
    if "--accelerate-config" in argv:
        assert "8 processes" in out
    assert not list(tmp_path.glob("runs/*/*.safetensors"))  # nothing was written or trained


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from r1reward.toy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("dry") / "tiny", seed=0)


def test_dry_run_counts_what_the_trainer_would_train(tiny, capsys):
    """On the tiny model the meta-device counts equal those of the model really loaded with the
    recipe's LoRA (QLoRA recipe, quantization switched off: bitsandbytes needs CUDA)."""
    from r1reward.models import load_model
    from r1reward.recipes import load_recipe

    over = [f"model.path={tiny}", "model.quantization=null"]
    assert (
        cli.main(["sft", "--recipe", "qwen2.5-vl-7b-qlora", "--out", "x", *over, "--dry-run"]) == 0
    )
    out = capsys.readouterr().out
    lora = load_recipe("qwen2.5-vl-7b-qlora", over)["model"]["lora"]
    model, _ = load_model(tiny, lora=lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    assert f"parameters: {trainable:,} trainable of {total:,}" in " ".join(out.split())
    assert f"[config: {tiny / 'config.json'}]" in out


def test_dry_run_without_a_config_says_so_in_one_line(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = cli.main(
        [
            "eval",
            "--model",
            "someone/not-cached-anywhere",
            "--data",
            "x.jsonl",
            "--out",
            "runs/x",
            "--dry-run",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "needs the model's config.json" in err and "someone/not-cached-anywhere" in err
    assert cli.main(["rl", "--recipe", "qwen2.5-vl-7b-lora", "rl.lr=abc", "--dry-run"]) == 2
    assert "rl.lr" in capsys.readouterr().err


# ------------------------------------------------------------------ the quick walkthrough, run

#: what shrinks the README's toy-quick commands to seconds: the same commands and code path
#: (tiny-model build with pretraining, curation, SFT, held-out report, RL from the SFT model),
#: fewer steps and pairs; the full-size run and its numbers are the README's measured log
QUICK_SHRINK = {
    "sft": [
        "model.tiny.pretrain_steps=2",
        "model.tiny.pretrain_batch_size=2",
        "model.tiny.pretrain_text_batch_size=2",
        "data.train_pairs=8",
        "data.heldout_pairs=4",
        "sft.max_new_tokens=16",
    ],
    "rl": [
        "rl.steps=1",
        "rl.prompts_per_step=4",
        "rl.mini_batch_size=4",
        "rl.micro_batch_size=4",
        "rl.rollout_batch_size=4",
        "rl.max_new_tokens=16",
    ],
}


def quick_commands() -> list[str]:
    """The README's ``--recipe toy-quick`` walkthrough, in its order."""
    return [x for x in _examples((ROOT / "README.md").read_text()) if "--recipe toy-quick" in x]


def test_the_readme_quick_walkthrough_runs(tmp_path, monkeypatch, capsys):
    """The README's quick commands, run as printed from an empty folder (shrunk by
    ``QUICK_SHRINK``): SFT builds the tiny model, curates, trains and prints its held-out report;
    RL starts from the SFT model and writes a step per ``rl.steps``."""
    from r1reward.train.rl import read_metrics

    lines = quick_commands()
    assert [shlex.split(x)[1] for x in lines] == ["sft", "rl"], lines
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for line in lines:
        argv = shlex.split(line)[1:]
        assert cli.main([*argv, *QUICK_SHRINK[argv[0]]]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    out = captured.out
    report = re.search(r"held-out: n=(\d+) well-formed=([\d.]+) accuracy=([\d.]+)", out)
    assert report and int(report.group(1)) == 4, out
    sft_out = tmp_path / shlex.split(lines[0])[shlex.split(lines[0]).index("--out") + 1]
    assert (sft_out / "model.safetensors").is_file() and (sft_out / "recipe.yaml").is_file()
    assert list((tmp_path / "artifacts" / "models").glob("tiny-tiny-seed0-pt2/model.safetensors"))
    rl_out = tmp_path / shlex.split(lines[1])[shlex.split(lines[1]).index("--out") + 1]
    steps = read_metrics(rl_out)
    assert [s["step"] for s in steps] == [1] and steps[0]["loss"] == steps[0]["loss"]  # finite
    assert "warning: rl.init_model is null" not in captured.err  # RL started from the SFT model


def test_the_readme_python_walkthrough_runs(tmp_path, monkeypatch):
    """The README's Python block (after ``<!-- python: quick -->``), executed as printed from an
    empty folder, every recipe it loads shrunk by ``QUICK_SHRINK``: SFT then RL from its model."""
    import r1reward.recipes as recipes
    from r1reward.train.rl import read_metrics

    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- python: quick -->\n```python\n(.*?)```", text, re.S)
    assert block, "README: the Python walkthrough block is gone"
    load = recipes.load_recipe
    shrink = [*QUICK_SHRINK["sft"], *QUICK_SHRINK["rl"]]
    monkeypatch.setattr(recipes, "load_recipe", lambda name, ovr=(): load(name, [*ovr, *shrink]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scope: dict = {}
    exec(compile(block.group(1), "README.md:python-quick", "exec"), scope)
    assert Path(scope["sft_model"]) == Path("runs/quick")
    assert (tmp_path / "runs/quick/model.safetensors").is_file()
    assert Path(scope["final"]).is_dir() and (Path(scope["final"]) / "config.json").is_file()
    steps = read_metrics(tmp_path / "runs/quick-rl")
    assert [s["step"] for s in steps] == [1] and steps[0]["loss"] == steps[0]["loss"]  # finite
