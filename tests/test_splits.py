"""Honest splits (r1reward.data.splits): held-out pairs come from a declared source and no
held-out pair id is ever in a training set -- SFT's, the scalar baseline's or RL's."""

from __future__ import annotations

import json

import pytest

from r1reward.data import write_pairs
from r1reward.data.splits import heldout_ids, load_split, split_pairs
from r1reward.recipes import load_recipe
from r1reward.toy.world import make_pairs
from r1reward.train import rl
from r1reward.train.sft import load_pairs


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    return write_pairs(make_pairs(40, seed=2, image_size=28), folder / "pairs.jsonl")


def _ids(pairs) -> set[str]:
    return {p.id for p in pairs}


def test_heldout_fraction_is_carved_out_and_never_trained_on(pairs_file):
    recipe = load_recipe(
        "toy-ci", [f"data.source={pairs_file}", "data.heldout_fraction=0.25", "data.seed=7"]
    )
    data = {**recipe["data"], "train_pairs": None, "heldout_pairs": None}
    train, held = load_split(data, "train"), load_split(data, "heldout")
    assert len(held) == 10 and len(train) == 30
    assert not _ids(train) & _ids(held)
    assert _ids(train) | _ids(held) == _ids(make_pairs(40, seed=2, image_size=28))
    # every trainer reads the same training side
    assert _ids(load_pairs(data, "train")) == _ids(train)
    cfg = rl.RLConfig.from_dict(recipe["rl"]).resolved()
    assert _ids(rl.load_pairs(cfg, data)) == _ids(train)
    # seeded: the same seed gives the same split whatever the file order, another seed another
    lines = pairs_file.read_text().splitlines()
    shuffled = pairs_file.with_name("shuffled.jsonl")
    shuffled.write_text("\n".join(reversed(lines)) + "\n")
    again = load_split({**data, "source": str(shuffled)}, "heldout")
    assert _ids(again) == _ids(held)
    assert _ids(load_split({**data, "seed": 8}, "heldout")) != _ids(held)
    # the caps apply after the split, so a capped training set still excludes held-out ids
    capped = load_split({**data, "train_pairs": 5, "heldout_pairs": 3}, "train")
    assert len(capped) == 5 and not _ids(capped) & _ids(held)


def test_heldout_file_ids_are_removed_from_training(pairs_file, tmp_path):
    lines = pairs_file.read_text().splitlines()
    held_file = tmp_path / "held.jsonl"
    # the held-out file repeats 4 training pairs (images resolved against the pairs' folder)
    recs = [json.loads(x) for x in lines[:4]]
    for r in recs:
        r["images"] = [str(pairs_file.parent / i) for i in r["images"]]
    held_file.write_text("".join(json.dumps(r) + "\n" for r in recs))
    data = {"source": str(pairs_file), "heldout": str(held_file), "train_pairs": None}
    train, held = split_pairs(data)
    assert len(held) == 4 and len(train) == 36
    assert not _ids(train) & _ids(held)


def test_a_file_without_a_declared_heldout_source_refuses_to_report_one(pairs_file):
    data = {"source": str(pairs_file), "train_pairs": 10, "heldout_pairs": 5}
    assert len(load_split(data, "train")) == 10
    with pytest.raises(ValueError, match="data.heldout=PATH or data.heldout_fraction"):
        load_split(data, "heldout")
    with pytest.raises(ValueError, match="not both"):
        load_split({**data, "heldout": "x.jsonl", "heldout_fraction": 0.1}, "train")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        load_split({**data, "heldout_fraction": 1.5}, "train")
    with pytest.raises(FileNotFoundError, match="data.heldout: .*nowhere.jsonl"):
        load_split({**data, "heldout": "nowhere.jsonl"}, "heldout")


def test_scalar_cli_checks_the_split_before_loading_a_model(pairs_file, tmp_path, capsys):
    from r1reward.train.scalar import main

    # a Hub id passes the path check; loading it (no network here) would fail differently
    rc = main(
        [
            "--recipe",
            "toy-ci",
            "--out",
            str(tmp_path / "s"),
            f"data.source={pairs_file}",
            "model.path=no-such-org/no-such-model",
        ]
    )
    assert rc == 2
    assert "data.heldout_fraction" in capsys.readouterr().err


def test_toy_splits_are_disjoint_and_heldout_ids_are_exact():
    data = load_recipe("toy-ci")["data"]
    assert not _ids(load_split(data, "train")) & _ids(load_split(data, "heldout"))
    ids = [f"p{i}" for i in range(10)] * 2  # repeated ids stay on one side
    assert len(heldout_ids(ids, 0.3, seed=1)) == 3


def test_a_registered_source_is_generated_and_swapped_like_the_toy(monkeypatch):
    """data.source may name any generated source (r1reward.data.sources), not only the toy."""
    from types import SimpleNamespace

    from r1reward.data import PreferencePair, sources

    monkeypatch.setattr(sources, "_registered", dict(sources._registered))
    calls = []

    def make(n, *, seed, split, image_size):
        calls.append((n, seed, split, image_size))
        return [
            PreferencePair(
                id=f"{split}-{i}",
                question="q",
                response_1="a",
                response_2="b",
                preferred=1,
                source="fake",
            )
            for i in range(n)
        ]

    def on_swap(pair):
        pair.meta["hook"] = pair.preferred

    sources.register_source("fake", SimpleNamespace(make_pairs=make, on_swap=on_swap))
    train, held = split_pairs({"source": "fake", "train_pairs": 3, "heldout_pairs": 2, "seed": 5})
    assert calls == [(3, 5, "train", 56), (2, 5, "heldout", 56)]
    assert [p.id for p in train] == ["train-0", "train-1", "train-2"] and len(held) == 2
    assert len(load_split({"source": "fake", "heldout_pairs": 1}, "heldout")) == 1
    swapped = train[0].swap()
    assert swapped.meta["hook"] == 2 and "hook" not in train[0].meta  # on the copy only
    with pytest.raises(ValueError, match="generated source 'fake' has its own held-out split"):
        load_split({"source": "fake", "heldout_fraction": 0.1}, "train")
    with pytest.raises(TypeError, match="has no make_pairs"):
        sources.register_source("broken", object())
    with pytest.raises(KeyError, match="not a generated source"):
        sources.get_source("nowhere.jsonl")
    assert sources.is_generated("toy") and not sources.is_generated("nowhere.jsonl")
