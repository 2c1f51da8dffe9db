"""The GPU researcher's path, checked on CPU: the GPU recipes read real data (a placeholder that
fails clearly until set) with an OpenAI-compatible judge, a pixel cap and 1,024-token evaluation;
``--accelerate-config NAME`` resolves from any directory into an ``accelerate launch`` line; the
pixel cap reaches the processor."""

from __future__ import annotations

import pytest
from PIL import Image

from r1reward import cli
from r1reward.recipes import accelerate_config, available, load_recipe
from r1reward.train import sft

GPU = [n for n in available() if n.startswith("qwen")]


@pytest.mark.parametrize("name", GPU)
def test_gpu_recipes_are_set_for_real_runs(name):
    r = load_recipe(name)
    assert r["data"]["source"].startswith("<") and 0 < r["data"]["heldout_fraction"] < 1
    assert r["rl"]["judge"]["kind"] == "openai"
    assert r["model"]["max_pixels"] <= 1280 * 28 * 28
    assert r["eval"]["max_new_tokens"] >= 1024


def test_the_data_placeholder_fails_before_any_model_or_curation(tmp_path, capsys):
    rc = sft.main(["--recipe", "qwen2.5-vl-7b-lora", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "data.source is still the placeholder" in err and "data.source=" in err


def test_accelerate_config_by_name_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = accelerate_config("zero3")
    assert path.is_absolute() and path.name == "deepspeed-zero3.yaml" and path.is_file()
    assert accelerate_config("fsdp").name == "fsdp.yaml"
    with pytest.raises(FileNotFoundError, match="known: .*ddp-cpu-2"):
        accelerate_config("zero9")
    seen = {}
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: seen.setdefault("argv", argv))
    cli.main(["rl", "--accelerate-config", "zero3", "--recipe", "toy-ci", "--out", "o"])
    argv = seen["argv"]
    assert argv[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(path)]
    assert argv[5:] == ["-m", "r1reward.cli", "rl", "--recipe", "toy-ci", "--out", "o"]
    assert cli.main(["sft", "--accelerate-config", "nope", "--recipe", "toy-ci"]) == 2
    assert "accelerate config 'nope'" in capsys.readouterr().err


def test_max_pixels_caps_the_visual_tokens(tmp_path):
    from r1reward.models import build_tiny_model, cap_pixels, load_processor

    tiny = build_tiny_model(tmp_path / "tiny", size="tiny", seed=0)
    image = Image.new("RGB", (448, 448), "white")

    def patches(processor) -> int:
        out = processor.image_processor(images=[image], return_tensors="pt")
        return int(out["image_grid_thw"].prod())

    full = patches(load_processor(tiny))
    capped = patches(cap_pixels(load_processor(tiny), 112 * 112))
    assert capped < full and capped <= (112 * 112) // (14 * 14)
