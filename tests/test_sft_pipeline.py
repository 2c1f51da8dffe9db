"""The artifact cache of r1reward.pipeline: marker written last, recipe-keyed, crash-safe."""

from __future__ import annotations

import pytest

from r1reward import pipeline


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("R1REWARD_ARTIFACTS", str(tmp_path))


def test_artifacts_dir_follows_the_env_var(tmp_path):
    assert pipeline.artifacts_dir("ci") == tmp_path / "ci"
    assert (tmp_path / "ci").is_dir()


def test_profiles_map_to_recipes():
    assert pipeline.recipe_for("ci")["name"] == "toy-ci"
    assert pipeline.recipe_for("cpu")["name"] == "toy-cpu"
    assert pipeline.recipe_for("gpu")["model"]["path"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(ValueError, match="profile 'tpu'"):
        pipeline.recipe_for("tpu")


def test_cache_builds_once_and_rebuilds_on_a_new_key(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "weights").write_text(str(len(calls)))

    folder = tmp_path / "ci" / "thing"
    folder.parent.mkdir(parents=True)
    assert pipeline._cached(folder, "k1", build) == folder
    assert pipeline._cached(folder, "k1", build) == folder
    assert len(calls) == 1
    pipeline._cached(folder, "k2", build)  # the recipe changed
    assert len(calls) == 2 and (folder / "weights").read_text() == "2"


def test_a_crashed_build_never_looks_complete(tmp_path):
    folder = tmp_path / "ci" / "thing"
    folder.parent.mkdir(parents=True)

    def crash(out):
        (out / "half-written").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        pipeline._cached(folder, "k", crash)
    assert not (folder / pipeline.MARKER).exists()
    built = []
    pipeline._cached(folder, "k", lambda out: built.append(out))
    assert built and not (folder / "half-written").exists()  # rebuilt from scratch
    assert (folder / pipeline.MARKER).is_file()


def test_heldout_pairs_extend_the_recipes_split():
    base = pipeline.heldout_pairs("ci")
    more = pipeline.heldout_pairs("ci", len(base) + 3)
    assert len(more) == len(base) + 3
    assert [p.id for p in more[: len(base)]] == [p.id for p in base]
    assert all(p.meta["split"] == "heldout" for p in more)
    with pytest.raises(ValueError, match="n=-1"):
        pipeline.heldout_pairs("ci", -1)
