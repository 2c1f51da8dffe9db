"""The collapse lab (r1reward.lab): the collapse rule, the learning-rate sensitivity by hand, and a
grid that, killed part-way, reruns only the runs it had not finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from r1reward import lab
from r1reward.toy.world import make_pairs


def _rec(step, **kw):
    base = {
        "step": step,
        "params_finite": True,
        "loss": 0.1,
        "well_formed": 0.9,
        "length_mean": 40.0,
    }
    return {**base, **kw}


def test_collapse_step_names_the_first_broken_step_and_why():
    ok = [_rec(1), _rec(2)]
    assert lab.collapse_step(ok, 128) == (None, None)
    assert lab.collapse_step(
        [_rec(1), _rec(2, well_formed=0.4), _rec(3, params_finite=False)], 128
    ) == (2, "ill-formed")
    assert lab.collapse_step([_rec(1), _rec(2, length_mean=115.2)], 128) == (2, "length")
    assert lab.collapse_step([_rec(1), _rec(2, length_mean=115.1)], 128) == (None, None)
    assert lab.collapse_step([_rec(1, loss=float("nan"))], 128) == (1, "non-finite")
    assert lab.collapse_step([_rec(1, params_finite=False, well_formed=0.0)], 128) == (
        1,
        "non-finite",
    )


def test_lr_sensitivity_by_hand():
    rows = [
        {"variant": "a", "lr": 1e-4, "heldout_accuracy": 0.80},
        {"variant": "a", "lr": 1e-4, "heldout_accuracy": 0.70},
        {"variant": "a", "lr": 1e-3, "heldout_accuracy": 0.60},
        {"variant": "a", "lr": 1e-3, "heldout_accuracy": 0.60},
        {"variant": "a", "lr": 1e-2, "heldout_accuracy": 0.0},
        {"variant": "a", "lr": 1e-2, "heldout_accuracy": 0.2},
        {"variant": "b", "lr": 1e-4, "heldout_accuracy": 0.7},
        {"variant": "b", "lr": 1e-3, "heldout_accuracy": 0.7},
    ]
    sens = lab.lr_sensitivity(rows)
    # a: means 0.75, 0.60, 0.10 -> floored at chance 0.5 -> shortfalls 0, 0.15, 0.25
    assert sens["a"] == pytest.approx((0 + 0.15 + 0.25) / 3)
    assert sens["b"] == 0.0


def test_unknown_lab_keys_and_variants_are_refused():
    with pytest.raises(ValueError, match="unknown keys"):
        lab.lab_section({"lrz": [1e-4]})
    with pytest.raises(ValueError, match="unknown"):
        lab.lab_section({"variants": ["reinforce+++"]})
    with pytest.raises(ValueError, match="lab.regime='early'"):
        lab.lab_section({"regime": "early"})
    with pytest.raises(ValueError, match="at least one value"):
        lab.lab_section({"seeds": []})
    with pytest.raises(ValueError, match="lab.lrs"):  # the declared type, from the recipe's section
        lab.lab_section({"lrs": ["fast"]})


def test_lab_section_is_the_recipes_typed_section_with_numbers_as_the_lab_uses_them():
    """One class: the lab reads the recipe's LabSection, learning rates as floats (its run names
    and rl.lr overrides print them), seeds as integers; defaults are the section's."""
    from r1reward.recipes.config import LabSection

    cfg = lab.lab_section({"lrs": [1, 1e-3], "seeds": [2]})
    assert type(cfg) is LabSection and not hasattr(lab, "LabConfig")
    assert cfg.lrs == [1.0, 1e-3] and all(type(x) is float for x in cfg.lrs)
    assert cfg.seeds == [2] and type(cfg.seeds[0]) is int
    assert lab.lab_section(None) == LabSection()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from r1reward.toy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


def _recipe(path, tiny) -> str:
    recipe = {
        "name": "lab-test",
        "model": {"path": str(tiny), "dtype": "float32", "lora": None, "quantization": None},
        "data": {"source": "toy", "train_pairs": 8, "seed": 0, "image_size": 56},
        "rl": {
            "algo": "stable-reinforce",
            "steps": 2,
            "prompts_per_step": 2,
            "mini_batch_size": 2,
            "micro_batch_size": 1,
            "ppo_epochs": 1,
            "lr": 1e-3,
            "max_new_tokens": 8,
            "rollout_batch_size": 2,
            "save_every": 0,
            "seed": 0,
            "progress": False,
            "init_model": None,
            "pre_clip": None,
            "advantage_filter": None,
            "kl_coef": 0.0,
        },
        "lab": {
            "variants": ["reinforce++", "stable-reinforce"],
            "lrs": [1e-4, 1e-2],
            "seeds": [0],
            "regime": "all",
            "steps": 2,
            "samples_per_step": 2,
            "heldout_pairs": 2,
            "workers": 1,
            "rl": {"mini_batch_size": 2, "micro_batch_size": 1},
        },
    }
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


DRIVER = textwrap.dedent("""
    import sys
    from r1reward import lab
    from r1reward.toy.world import make_pairs
    recipe, out, tiny = sys.argv[1:4]
    train = make_pairs(8, seed=0, split="train", image_size=56)
    held = make_pairs(2, seed=0, split="heldout", image_size=56)
    lab.run_lab(recipe, out, init_model=tiny, train_pairs=train, heldout=held, progress=False)
""")


def test_killed_lab_reruns_only_the_missing_runs(tiny, tmp_path):
    recipe = _recipe(tmp_path / "recipe.yaml", tiny)
    out = tmp_path / "lab"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, str(driver), recipe, str(out), str(tiny)], env=env, start_new_session=True
    )
    first = out / "runs" / lab.run_name("reinforce++", 1e-4, 0) / "lab_row.json"
    deadline = time.time() + 240
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.is_file(), "the first run never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # killed part-way through the grid
    proc.wait()
    assert not (out / "lab.jsonl").exists()
    done_before = {
        p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/lab_row.json")
    }
    assert 1 <= len(done_before) < 4

    train = make_pairs(8, seed=0, split="train", image_size=56)
    held = make_pairs(2, seed=0, split="heldout", image_size=56)
    rows = lab.run_lab(
        recipe, out, init_model=tiny, train_pairs=train, heldout=held, progress=False
    )
    assert [(r["variant"], r["lr"]) for r in rows] == [
        ("reinforce++", 1e-4),
        ("reinforce++", 1e-2),
        ("stable-reinforce", 1e-4),
        ("stable-reinforce", 1e-2),
    ]
    for name, mtime in done_before.items():  # finished before the kill: not redone
        assert (out / "runs" / name / "lab_row.json").stat().st_mtime_ns == mtime
    assert lab.read_lab(out) == json.loads(json.dumps(rows))
    for r in rows:
        assert set(r) == set(lab.ROW_FIELDS)
        assert 0.0 <= r["heldout_accuracy"] <= 1.0 and r["steps_done"] >= 1
    assert "LR sensitivity" in (out / "summary.md").read_text()


def _row(variant, lr, seed, acc, collapsed=False, step=None, ratio=2.0):
    return {
        "variant": variant,
        "lr": lr,
        "seed": seed,
        "heldout_accuracy": acc,
        "collapsed": collapsed,
        "collapse_step": step,
        "max_ratio": ratio,
        "steps_done": 12,
    }


def test_separates_needs_two_failed_broken_seeds_and_no_failed_stable_seed():
    rows = [
        # lr 1e-4: nobody fails
        _row("reinforce++", 1e-4, 0, 0.74),
        _row("reinforce++", 1e-4, 1, 0.73),
        _row("stable-reinforce", 1e-4, 0, 0.75),
        _row("stable-reinforce", 1e-4, 1, 0.74),
        # lr 1e-3: Reinforce++ collapses once and loses 10 points once; StableReinforce holds
        _row("reinforce++", 1e-3, 0, 0.60, collapsed=True, step=5),
        _row("reinforce++", 1e-3, 1, 0.64),
        _row("stable-reinforce", 1e-3, 0, 0.70),
        _row("stable-reinforce", 1e-3, 1, 0.66),
        # lr 1e-2: both fail
        _row("reinforce++", 1e-2, 0, 0.0, collapsed=True, step=2),
        _row("reinforce++", 1e-2, 1, 0.3),
        _row("stable-reinforce", 1e-2, 0, 0.5),
        _row("stable-reinforce", 1e-2, 1, 0.74),
    ]
    assert lab.separates(rows, 0.74) == [1e-3]
    assert lab.separates(rows, 0.74, drop=0.11) == []  # 0.64 is then no failure: one seed only
    pick, twin = lab.showcase(rows)
    assert (pick["lr"], pick["seed"]) == (1e-2, 0)  # collapsed at 2, its twin never: margin 13 - 2
    assert (twin["variant"], twin["lr"], twin["seed"]) == ("stable-reinforce", 1e-2, 0)
    rows[10].update(collapsed=True, collapse_step=3)  # that twin now collapses one step later
    pick, twin = lab.showcase(rows)
    assert (pick["lr"], pick["seed"], twin["lr"]) == (1e-3, 0, 1e-3)  # margin 13 - 5 beats 3 - 2
    calm = [r for r in rows if not r["collapsed"]]
    calm[0]["max_ratio"] = 40.0
    assert lab.showcase(calm)[0] is calm[0]  # nothing collapsed: the largest ratio
