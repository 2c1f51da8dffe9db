"""Profiles and the ``gpu`` stand-in: ``R1REWARD_GPU_STANDIN=tiny`` makes the ``gpu`` profile take
the ``ci`` recipe and artifact folder (so CI runs the chapters' ``gpu`` branches on the tiny model);
unset, the ``gpu`` profile is the real 7B one."""

from __future__ import annotations

import pytest

from r1reward.chapters import artifacts
from r1reward.profile import STANDIN_VAR, get_profile, gpu_standin, toy_profile


@pytest.fixture(autouse=True)
def _clean(tmp_path, monkeypatch):
    monkeypatch.setenv("R1REWARD_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv(STANDIN_VAR, raising=False)
    monkeypatch.delenv("R1REWARD_PROFILE", raising=False)


def test_profile_names_are_checked(monkeypatch):
    assert get_profile() == "cpu"
    monkeypatch.setenv("R1REWARD_PROFILE", " GPU ")
    assert get_profile() == "gpu"
    monkeypatch.setenv("R1REWARD_PROFILE", "tpu")
    with pytest.raises(ValueError, match="R1REWARD_PROFILE='tpu' is not a profile"):
        get_profile()


def test_without_the_stand_in_gpu_is_the_real_model(tmp_path):
    assert gpu_standin() is None
    assert artifacts.recipe_name("gpu") == "qwen2.5-vl-7b-lora"
    assert artifacts.recipe_for("gpu")["model"]["path"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert artifacts.artifacts_dir("gpu") == tmp_path / "gpu"
    assert [toy_profile(p) for p in ("ci", "cpu", "gpu")] == ["ci", "cpu", "cpu"]


def test_the_stand_in_gives_gpu_the_ci_recipe_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv(STANDIN_VAR, "tiny")
    assert gpu_standin() == "tiny"
    assert artifacts.recipe_for("gpu") == artifacts.recipe_for("ci")
    assert artifacts.recipe_for("gpu")["model"]["path"] is None  # the tiny model is built
    assert artifacts.artifacts_dir("gpu") == artifacts.artifacts_dir("ci") == tmp_path / "ci"
    assert toy_profile("gpu") == "ci"
    # the other profiles are untouched
    assert artifacts.recipe_name("cpu") == "toy-cpu" and toy_profile("cpu") == "cpu"
    assert artifacts.artifacts_dir("cpu") == tmp_path / "cpu"


def test_unknown_stand_in_and_profile_are_one_line_errors(monkeypatch):
    monkeypatch.setenv(STANDIN_VAR, "7b")
    with pytest.raises(ValueError, match=r"R1REWARD_GPU_STANDIN='7b' is not a stand-in; expected"):
        artifacts.recipe_for("gpu")
    with pytest.raises(ValueError, match="profile 'tpu'"):
        toy_profile("tpu")
    with pytest.raises(ValueError, match="profile 'tpu'"):
        artifacts.recipe_name("tpu")
