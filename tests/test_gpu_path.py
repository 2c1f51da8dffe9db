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

    class Launched(Exception):  # os.execv never returns: the stand-in stops main here too
        pass

    def fake_execv(exe, argv):
        raise Launched(argv)

    monkeypatch.setattr(cli.os, "execv", fake_execv)
    with pytest.raises(Launched) as launched:
        cli.main(["rl", "--accelerate-config", "zero3", "--recipe", "toy-ci", "--out", "o"])
    argv = launched.value.args[0]
    assert argv[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(path)]
    assert argv[5:] == ["-m", "r1reward.cli", "rl", "--recipe", "toy-ci", "--out", "o"]
    assert cli.main(["sft", "--accelerate-config", "nope", "--recipe", "toy-ci"]) == 2
    assert "accelerate config 'nope'" in capsys.readouterr().err


def test_max_pixels_caps_the_visual_tokens(tmp_path):
    from r1reward.models import cap_pixels, load_processor
    from r1reward.toy.tiny_model import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny", size="tiny", seed=0)
    image = Image.new("RGB", (448, 448), "white")

    def patches(processor) -> int:
        out = processor.image_processor(images=[image], return_tensors="pt")
        return int(out["image_grid_thw"].prod())

    shipped = patches(load_processor(tiny))  # the tiny processor's own cap (56 x 56 pixels)
    assert patches(cap_pixels(load_processor(tiny), 28 * 28)) == (28 * 28) // (14 * 14) < shipped
    assert patches(cap_pixels(load_processor(tiny), 112 * 112)) == (112 * 112) // (14 * 14)


def test_rl_checks_the_judge_server_before_loading_anything(tmp_path, capsys, monkeypatch):
    from r1reward.train import rl

    monkeypatch.delenv("R1REWARD_JUDGE_BASE_URL", raising=False)
    base = ["--recipe", "toy-ci", "--out", str(tmp_path / "rl")]
    assert rl.main([*base, "rl.judge={kind: openai}"]) == 2
    assert "R1REWARD_JUDGE_BASE_URL" in capsys.readouterr().err
    # port 9 (discard) on the loopback: nothing listens in the test environment
    assert rl.main([*base, "rl.judge={kind: openai, base_url: 'http://127.0.0.1:9/v1'}"]) == 2
    assert "not reachable" in capsys.readouterr().err
    assert not (tmp_path / "rl").exists()  # refused before any output or model
