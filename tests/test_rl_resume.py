"""Resume you can trust (r1reward.train.rl, Sec. 6 of the trainer): a fresh run into a used
folder, killed and resumed, never continues from the earlier run's checkpoint; every checkpoint
carries its run id and settings; ``--resume`` with nothing to resume is an error; the last state
is checkpointed even with ``save_every: 0``; a used ``--out`` is refused without ``--overwrite``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from r1reward.train import rl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from r1reward.toy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


def _recipe(tiny, steps: int, save_every: int, seed: int) -> dict:
    return {
        "name": "resume-test",
        "model": {"path": str(tiny), "dtype": "float32", "lora": None, "quantization": None},
        "data": {"source": "toy", "train_pairs": 8, "seed": 0, "image_size": 28},
        "rl": {
            "algo": "stable-reinforce",
            "steps": steps,
            "prompts_per_step": 2,
            "mini_batch_size": 2,
            "micro_batch_size": 2,
            "ppo_epochs": 1,
            "lr": 3e-3,
            "max_new_tokens": 8,
            "rollout_batch_size": 2,
            "save_every": save_every,
            "seed": seed,
            "progress": False,
        },
    }


def _text_reward(ro, judge, use_consistency):
    """A deterministic reward of the sampled text, so an untrained model's updates are not 0."""
    r = torch.tensor([len(t) / 10.0 for t in ro.texts])
    z = torch.zeros_like(r)
    return {"format": z, "result": z, "consistency": z, "total": r}


def _killed_at(step: int):
    """A score function that 'kills' the run when step ``step`` (1-based) is scored."""
    calls = {"n": 0}

    def score(ro, judge, use_consistency):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt(f"killed at step {step}")
        return _text_reward(ro, judge, use_consistency)

    return score


def _weights(folder):
    """Weights by name (a checkpoint names the text model ``model.language_model.*``, a saved
    model ``model.*``)."""
    tensors = load_file(str(folder / "model.safetensors"))
    return {k.replace("model.language_model.", "model."): v for k, v in tensors.items()}


def test_kill_rerun_resume_never_continues_another_run(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rl, "score", _text_reward)
    out = tmp_path / "run"
    # run A: 2 steps, checkpoints at 1 and 2
    rl.train_rl(**rl.rl_inputs(_recipe(tiny, 2, 1, seed=3)), out_dir=out)
    run_a = json.loads((out / rl.RUN_FILE).read_text())["run_id"]
    state = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["run_id"] == run_a and state["config"]["rl"]["seed"] == 3  # id + settings
    old_ckpt = tmp_path / "old-ckpt"
    shutil.copytree(out / "checkpoints" / "step-000002", old_ckpt)

    # the CLI refuses a fresh run into the used folder, before loading anything
    yml = tmp_path / "b.yaml"
    yml.write_text(yaml.safe_dump(_recipe(tiny, 2, 0, seed=4)))
    assert rl.main(["--recipe", str(yml), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err

    # run B (= --overwrite), save_every 0, killed during its second step
    monkeypatch.setattr(rl, "score", _killed_at(2))
    with pytest.raises(KeyboardInterrupt):
        rl.train_rl(**rl.rl_inputs(_recipe(tiny, 2, 0, seed=4)), out_dir=out)
    run_b = json.loads((out / rl.RUN_FILE).read_text())["run_id"]
    assert run_b != run_a and not (out / "checkpoints").exists()  # A's checkpoints are gone
    assert [r["step"] for r in rl.read_metrics(out)] == [1]  # and so are A's metrics

    # --resume: B saved nothing, so there is nothing to resume (not A's step 2)
    monkeypatch.setattr(rl, "score", _text_reward)
    assert rl.main(["--recipe", str(yml), "--out", str(out), "--resume"]) == 2
    assert "saved no complete checkpoint" in capsys.readouterr().err
    # an earlier run's checkpoint left in the folder is refused by its run id
    shutil.copytree(old_ckpt, out / "checkpoints" / "step-000002")
    with pytest.raises(rl.ResumeError, match=f"belongs to run {run_a}"):
        rl.train_rl(**rl.rl_inputs(_recipe(tiny, 2, 0, seed=4)), out_dir=out, resume=True)
    shutil.rmtree(out / "checkpoints")

    # run B again with --overwrite, to the end: save_every 0 still leaves a final checkpoint
    assert rl.main(["--recipe", str(yml), "--out", str(out), "--overwrite"]) == 0
    run_b2 = json.loads((out / rl.RUN_FILE).read_text())["run_id"]
    last = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert last["run_id"] == run_b2 and last["step"] == 2
    final_b = _weights(out / "final")
    old_a = _weights(old_ckpt)
    shared = final_b.keys() & old_a.keys()
    assert shared and any(not torch.equal(final_b[k], old_a[k]) for k in shared)  # not A's
    # other settings are refused on resume; more steps are allowed and continue from step 2
    with pytest.raises(rl.ResumeError, match=r"rl\.lr 0\.003 -> 0\.001"):
        rl.train_rl(
            **rl.rl_inputs(
                {
                    **_recipe(tiny, 3, 0, seed=4),
                    "rl": {**_recipe(tiny, 3, 0, seed=4)["rl"], "lr": 1e-3},
                }
            ),
            out_dir=out,
            resume=True,
        )
    # so is another start model: the run's identity holds the model path, not the recipe
    inputs = rl.rl_inputs(_recipe(tiny, 3, 0, seed=4))
    with pytest.raises(rl.ResumeError, match=r"model_path .* -> '/elsewhere'"):
        rl.train_rl(**{**inputs, "model_path": "/elsewhere"}, out_dir=out, resume=True)
    rl.train_rl(**inputs, out_dir=out, resume=True)
    assert [r["step"] for r in rl.read_metrics(out)] == [1, 2, 3]
    assert (out / "checkpoints" / "step-000003" / "trainer_state.json").is_file()
    # the final model is B's own, moved on from B's step-2 weights
    assert any(not torch.equal(final_b[k], v) for k, v in _weights(out / "final").items())


def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(rl.ResumeError, match="holds no run"):
        rl.resume_point(tmp_path, {"config_hash": "x", "config": {}, "n_pairs": 0})
