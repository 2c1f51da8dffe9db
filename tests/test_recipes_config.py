"""Typed recipe sections (r1reward.recipes.config): every field documented, every shipped key
declared, typos and wrong types refused when the recipe loads, and the defaults the trainers use."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from r1reward.recipes import RECIPE_DIR, available, load_recipe
from r1reward.recipes import config as rc
from r1reward.recipes.fields import field_types, section_help

SECTION_CLASSES = [*rc.SECTIONS.values(), rc.TinyModelConfig]


@pytest.mark.parametrize("cls", SECTION_CLASSES, ids=lambda c: c.__name__)
def test_every_field_of_every_section_has_help(cls):
    helps = section_help(cls)
    assert helps, cls
    missing = [name for name, text in helps.items() if len(text.strip()) < 8]
    assert not missing, f"{cls.__name__}: fields without a help string: {missing}"


def test_the_module_docstring_lists_every_section():
    for name, cls in rc.SECTIONS.items():
        assert f"``{name}:``" in rc.__doc__ and cls.__name__ in rc.__doc__, name


def _walk(cls: type, mapping: dict, where: str):
    """Yield ``(where.key, declared?)`` for every key of ``mapping``, into nested sections."""
    types = field_types(cls)
    for key, value in mapping.items():
        yield f"{where}.{key}", key in types
        tp = types.get(key)
        nested = [a for a in getattr(tp, "__args__", (tp,)) if dataclasses.is_dataclass(a)]
        if nested and isinstance(value, dict):
            yield from _walk(nested[0], value, f"{where}.{key}")


@pytest.mark.parametrize("name", available())
def test_every_key_of_every_shipped_recipe_is_declared(name):
    raw = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())
    assert set(raw) - {"name"} <= set(rc.SECTIONS), name
    undeclared = [
        key
        for section, body in raw.items()
        if section != "name" and body
        for key, ok in _walk(rc.SECTIONS[section], body, section)
        if not ok
    ]
    assert not undeclared, f"{name}: keys no section declares: {undeclared}"
    cfg = rc.resolve_recipe(load_recipe(name))  # and every value has its declared type
    assert isinstance(cfg.sft, rc.SFTConfig) and isinstance(cfg.rl, rc.RLConfig)


def _recipe(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("sft: {lrr: 0.1}\n", r"mine\.yaml: unknown keys: sft\.lrr; sft has: epochs, "),
        ("sft: {lr: fast}\n", r"mine\.yaml: sft\.lr: expected a number, got str 'fast'"),
        ("scalar: {epochs: 1.5}\n", r"scalar\.epochs: expected an integer, got float 1\.5"),
        ("model: {tiny: {size: tiny, sed: 1}}\n", r"unknown keys: model\.tiny\.sed"),
        ("model: {lora: 8}\n", r"model\.lora: expected a mapping .* or null, got int 8"),
        ("data: {max_tries: [3]}\n", r"data\.max_tries: expected an integer, got list"),
        ("eval: {heldout: 3}\n", r"unknown keys: eval\.heldout"),
        ("hardware: {gpu: 2}\n", r"unknown keys: hardware\.gpu; hardware has: gpus"),
        ("rl: {adam_betas: [0.9]}\n", r"rl\.adam_betas: expected a list of 2 numbers"),
        ("rl: {data: {n: 6}}\n", r"unknown keys: rl\.data\.n; rl\.data has: source"),
        ("lab: {lrs: [1e-4, big]}\n", r"lab\.lrs: expected a list of numbers"),
        ("lab: {rl: {kl_cof: 0}}\n", r"unknown keys: lab\.rl\.kl_cof; lab\.rl has: algo"),
        ("modle: {path: x}\n", r"mine\.yaml: unknown section 'modle'; a recipe has: name, "),
        ("sft: 3\n", r"mine\.yaml: sft: expected a mapping"),
    ],
)
def test_a_bad_key_or_value_in_the_file_fails_at_load_in_one_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message) as info:
        load_recipe(_recipe(tmp_path, text))
    assert "\n" not in str(info.value)


def test_yaml_1_1_number_strings_become_floats_and_trackers_lists(tmp_path):
    path = _recipe(tmp_path, "sft: {lr: 1e-4, report_to: wandb}\nrl: {lr: 3e-5}\n")
    recipe = load_recipe(path)
    assert recipe["sft"]["lr"] == "1e-4"  # the dict is the file as written (its hash is kept)
    cfg = rc.resolve_recipe(recipe)
    assert cfg.sft.lr == 1e-4 and cfg.rl.lr == 3e-5 and cfg.sft.report_to == ["wandb"]
    assert cfg.lab is None and cfg.hardware is None and cfg.model == rc.ModelConfig()


def test_any_declared_key_may_be_set_from_the_command_line():
    r = load_recipe("toy-ci", ["sft.save_steps=5", "scalar.max_length=512", "model.max_pixels=9"])
    cfg = rc.resolve_recipe(r)
    assert (cfg.sft.save_steps, cfg.scalar.max_length, cfg.model.max_pixels) == (5, 512, 9)
    with pytest.raises(ValueError, match=r"override scalar\.epochs='2\.5': expected an integer"):
        load_recipe("toy-ci", ["scalar.epochs=2.5"])
    with pytest.raises(ValueError, match=r"model\.tiny\.seed: expected an integer"):
        load_recipe("toy-ci", ["model.tiny.seed=x"])
    # a path or id that YAML reads as a number stays the text written
    assert load_recipe("toy-ci", ["model.path=0001"])["model"]["path"] == "0001"


def test_rl_config_has_one_definition():
    from r1reward.recipes.rl import RLConfig
    from r1reward.train import rl

    assert rc.RLConfig is RLConfig is rl.RLConfig
    assert rc.SECTIONS["rl"] is RLConfig


def test_sft_defaults_are_what_the_trainer_used():
    """The trainer's former ``.get()`` defaults, now the dataclass's, reach TRL unchanged."""
    from r1reward.train.sft import sft_config

    args = sft_config({}, "/tmp/unused")
    assert (args.num_train_epochs, args.max_steps, args.per_device_train_batch_size) == (1.0, -1, 8)
    assert (args.learning_rate, args.gradient_accumulation_steps, args.logging_steps) == (
        1e-4,
        1,
        10,
    )
    assert getattr(args.lr_scheduler_type, "value", None) == "linear" and args.max_grad_norm == 1.0
    assert args.save_strategy == "no" and args.report_to in ([], ["none"], "none")
    typed = sft_config(rc.SFTConfig(lr=2e-3, save_steps=3, report_to=[]), "/tmp/unused")
    assert typed.learning_rate == 2e-3 and typed.save_steps == 3
    assert rc.ScalarConfig() == rc.ScalarConfig(
        epochs=1, lr=1e-4, batch_size=8, seed=0, freeze_vision=False
    )
    assert rc.DataConfig().max_tries == 3 and rc.DataConfig().image_size == 56


def test_the_tiny_model_is_resolved_from_the_typed_section(monkeypatch, tmp_path):
    import r1reward.recipes as recipes

    built = []
    monkeypatch.setattr(
        recipes, "build_tiny_cached", lambda folder, **kw: built.append(kw) or folder
    )
    path = recipes.resolve_model_path(load_recipe("toy-cpu"), cache_dir=tmp_path)
    assert path == str(tmp_path / "tiny-tiny-seed0-pt1200")
    assert built == [
        {
            "size": "tiny",
            "seed": 0,
            "pretrain_steps": 1200,
            "pretrain_lr": 1e-3,
            "pretrain_batch_size": 16,
            "pretrain_text_batch_size": 32,
        }
    ]
    plain = load_recipe("toy-ci", ["model.tiny={size: tiny, seed: 2, pretrain_steps: 0}"])
    assert recipes.resolve_model_path(plain, cache_dir=tmp_path).endswith("tiny-tiny-seed2")
    assert recipes.resolve_model_path(load_recipe("toy-ci", ["model.path=/m"])) == "/m"
    with pytest.raises(KeyError, match="model.tiny is unset"):
        recipes.resolve_model_path(load_recipe("toy-ci", ["model.tiny=null"]))
