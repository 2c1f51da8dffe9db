"""The artifact cache of r1reward.chapters.artifacts: marker written last, recipe-keyed, crash-safe."""

from __future__ import annotations

import pytest

from r1reward.chapters import artifacts


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("R1REWARD_ARTIFACTS", str(tmp_path))


def test_artifacts_dir_follows_the_env_var(tmp_path):
    assert artifacts.artifacts_dir("ci") == tmp_path / "ci"
    assert (tmp_path / "ci").is_dir()


def test_profiles_map_to_recipes():
    assert artifacts.recipe_for("ci")["name"] == "toy-ci"
    assert artifacts.recipe_for("cpu")["name"] == "toy-cpu"
    assert artifacts.recipe_for("gpu")["model"]["path"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(ValueError, match="profile 'tpu'"):
        artifacts.recipe_for("tpu")


def test_cache_builds_once_and_rebuilds_on_a_new_key(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "weights").write_text(str(len(calls)))

    folder = tmp_path / "ci" / "thing"
    folder.parent.mkdir(parents=True)
    assert artifacts._cached(folder, "k1", build) == folder
    assert artifacts._cached(folder, "k1", build) == folder
    assert len(calls) == 1
    artifacts._cached(folder, "k2", build)  # the recipe changed
    assert len(calls) == 2 and (folder / "weights").read_text() == "2"


def test_a_crashed_build_never_looks_complete(tmp_path):
    folder = tmp_path / "ci" / "thing"
    folder.parent.mkdir(parents=True)

    def crash(out):
        (out / "half-written").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        artifacts._cached(folder, "k", crash)
    assert not (folder / artifacts.MARKER).exists()
    built = []
    artifacts._cached(folder, "k", lambda out: built.append(out))
    assert built and not (folder / "half-written").exists()  # rebuilt from scratch
    assert (folder / artifacts.MARKER).is_file()


def test_heldout_pairs_extend_the_recipes_split():
    base = artifacts.heldout_pairs("ci")
    more = artifacts.heldout_pairs("ci", len(base) + 3)
    assert len(more) == len(base) + 3
    assert [p.id for p in more[: len(base)]] == [p.id for p in base]
    assert all(p.meta["split"] == "heldout" for p in more)
    with pytest.raises(ValueError, match="n=-1"):
        artifacts.heldout_pairs("ci", -1)
