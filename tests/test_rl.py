"""The RL trainer (r1reward.train.rl): configuration, data stream, a StableReinforce step under
adversarial log-probabilities, and kill-and-resume giving the uninterrupted run's metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from r1reward.data import write_pairs
from r1reward.data.splits import load_split
from r1reward.train import rl, rl_data, rl_update


# ------------------------------------------------------------------------------ configuration
def test_presets_and_single_switch_ablations():
    sr = rl.RLConfig(algo="stable-reinforce").resolved()
    assert (sr.pre_clip, sr.advantage_filter, sr.consistency_reward) == (True, True, True)
    assert sr.samples_per_prompt == 1
    assert sr.pre_clip_bounds == pytest.approx((math.log(1e-3), math.log(1e3)))
    rpp = rl.RLConfig(algo="reinforce++").resolved()
    assert (rpp.pre_clip, rpp.advantage_filter, rpp.consistency_reward) == (False, False, False)
    assert rpp.pre_clip_bounds is None
    # each switch alone, the others stay as the preset says
    no_filter = rl.RLConfig(algo="stable-reinforce", advantage_filter=False).resolved()
    assert (no_filter.pre_clip, no_filter.advantage_filter, no_filter.consistency_reward) == (
        True,
        False,
        True,
    )
    no_clip = rl.RLConfig(algo="stable-reinforce", pre_clip=False).resolved()
    assert (no_clip.pre_clip, no_clip.advantage_filter) == (False, True)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="algo"):
        rl.RLConfig(algo="ppo").resolved()
    with pytest.raises(ValueError, match="mini_batch_size"):
        rl.RLConfig(prompts_per_step=6, mini_batch_size=4, micro_batch_size=2).resolved()
    with pytest.raises(ValueError, match="unknown keys"):
        rl.RLConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="grpo"):
        rl.RLConfig(algo="grpo", samples_per_prompt=1, prompts_per_step=4).resolved()


def test_data_stream_is_disjoint_across_processes_and_covers_each_epoch():
    n, per, world = 10, 3, 2
    seen = []
    for step in range(5):  # 5 steps x 6 = 30 = 3 epochs of 10
        parts = [rl_data.batch_indices(n, step, per, world, r, seed=1) for r in range(world)]
        assert not set(parts[0]) & set(parts[1]) or step * per * world % n > n - per * world
        seen += parts[0] + parts[1]
    for epoch in range(3):
        assert sorted(seen[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert rl_data.batch_indices(n, 3, per, world, 1, seed=1) == rl_data.batch_indices(
        n, 3, per, world, 1, seed=1
    )
    assert rl_data.batch_indices(n, 0, per, 1, 0, seed=1) != rl_data.batch_indices(
        n, 0, per, 1, 0, seed=2
    )


def test_rl_reads_its_pairs_through_the_declared_split(tmp_path):
    data = {"source": "toy", "train_pairs": 6, "seed": 3, "image_size": 28}
    cfg = rl.RLConfig().resolved()
    toy = rl.load_pairs(cfg, data)
    assert [p.id for p in toy] == [p.id for p in load_split(data, "train")]
    # a held-out file is never trained on, also beside the toy world
    held = write_pairs(toy[:2], tmp_path / "held.jsonl")
    kept = rl.load_pairs(cfg, {**data, "heldout": str(held)})
    assert [p.id for p in kept] == [p.id for p in toy[2:]]
    with pytest.raises(ValueError, match="'n' is not read"):
        rl.load_pairs(cfg, {**data, "n": 6})
    with pytest.raises(ValueError, match="no training pairs"):
        rl.load_pairs(rl.RLConfig(min_difficulty=99).resolved(), data)


# ------------------------------------------------------------------------------ the tiny model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from r1reward.toy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


def _setup(tiny, cfg: rl.RLConfig):
    from r1reward.models import load_model
    from r1reward.toy.world import make_pairs

    torch.manual_seed(0)
    model, processor = load_model(str(tiny))
    acc = rl.make_accelerator(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    model, opt = acc.prepare(model, opt)
    pairs = make_pairs(2, seed=0)
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(20, 200, (n,), generator=g).tolist() for n in (6, 3)]
    ids = ids + [[], ids[0][:4]]  # an empty completion: its mask row is all zero
    ro = rl_data.make_rollout(processor, pairs, rl_data.conversations(pairs), ids, k=2)
    return acc, model, opt, processor, ro


def _update(acc, model, opt, cfg, ro, old, adv, processor):
    """One ppo_update without a reference model, with a fixed mini-batch order."""
    return rl_update.ppo_update(
        acc,
        model,
        opt,
        cfg,
        ro,
        old,
        adv,
        None,
        rl_data.pad_token_id(processor),
        torch.Generator().manual_seed(0),
    )


def _adversarial_cfg(algo: str, ppo_epochs: int) -> rl.RLConfig:
    """The step both adversarial tests take: 2 prompts x 2 samples, mini-batches of 2."""
    return rl.RLConfig(
        algo=algo,
        prompts_per_step=2,
        samples_per_prompt=2,
        mini_batch_size=2,
        micro_batch_size=1,
        ppo_epochs=ppo_epochs,
        lr=1e-2,
    ).resolved()


@pytest.mark.parametrize(
    "rewards", [[1.0, 1.0, 1.0, 1.0], [1.5, 0.0, 0.0, 2.0]], ids=["all-equal", "mixed"]
)
def test_stablereinforce_step_survives_adversarial_logprobs(tiny, rewards):
    cfg = _adversarial_cfg("stable-reinforce", ppo_epochs=2)
    acc, model, opt, processor, ro = _setup(tiny, cfg)
    assert ro.mask[2].sum() == 0 and ro.mask[0].sum() == 6
    before = [p.detach().clone() for p in model.parameters()]
    # old log-probs 1e4 above and below the real ones: log-ratios of -1e4 and +1e4
    real = rl_data.batched_logprobs(model, ro, rl_data.pad_token_id(processor), 2, 1.0)
    sign = torch.where(torch.arange(ro.ids.shape[1]) % 2 == 0, 1.0, -1.0)
    old = (real + 1e4 * sign) * ro.mask
    adv, info = rl_update.compute_advantages(acc, cfg, torch.tensor(rewards), ro.mask, kl=None)
    assert torch.isfinite(adv).all()
    if len(set(rewards)) == 1:
        assert adv.abs().max() == 0  # all-equal rewards: nothing to learn, and no NaN
    stats = _update(acc, model, opt, cfg, ro, old, adv, processor)
    assert stats["optimizer_steps"] == cfg.ppo_epochs * 4 // cfg.mini_batch_size
    assert math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])
    assert stats["max_ratio"] <= 1e3 * (1 + 1e-4)  # Pre-Clip bounds the ratio
    assert stats["nonfinite_ratios"] == 0
    for p in model.parameters():
        assert torch.isfinite(p).all()
    if len(set(rewards)) > 1:  # something was learnt from the mixed batch
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_same_step_without_preclip_overflows(tiny):
    """The control: Reinforce++'s plain exp() on the same inputs gives a non-finite loss or
    parameters -- so the test above can fail."""
    cfg = _adversarial_cfg("reinforce++", ppo_epochs=1)
    acc, model, opt, processor, ro = _setup(tiny, cfg)
    real = rl_data.batched_logprobs(model, ro, rl_data.pad_token_id(processor), 2, 1.0)
    old = (real - 1e4) * ro.mask  # log-ratio +1e4: exp overflows to inf
    adv, _ = rl_update.compute_advantages(
        acc, cfg, torch.tensor([1.5, 0.0, 0.0, 2.0]), ro.mask, kl=None
    )
    stats = _update(acc, model, opt, cfg, ro, old, adv, processor)
    bad_params = not all(torch.isfinite(p).all() for p in model.parameters())
    assert stats["nonfinite_ratios"] > 0
    assert bad_params or not math.isfinite(stats["loss"])


# ------------------------------------------------------------------------------ resume
def _recipe(tiny, steps: int, save_every: int) -> dict:
    return {
        "name": "test",
        "model": {"path": str(tiny), "dtype": "float32", "lora": None, "quantization": None},
        "data": {"source": "toy", "train_pairs": 12, "seed": 0, "image_size": 56},
        "rl": {
            "algo": "stable-reinforce",
            "steps": steps,
            "prompts_per_step": 4,
            "mini_batch_size": 2,
            "micro_batch_size": 1,
            "ppo_epochs": 2,
            "lr": 3e-3,
            "max_new_tokens": 12,
            "rollout_batch_size": 4,
            "save_every": save_every,
            "kl_coef": 0.01,
            "seed": 3,
            "progress": False,
        },
    }


VOLATILE = {"seconds", "samples_per_s"}


def _text_reward(ro, judge, use_consistency):
    """Stands in for the R1-Reward on an untrained model (which never answers well-formed and
    would get 0 everywhere): a deterministic function of the sampled text, so updates happen.

    The total grows with the text's length, so four samples practically never tie: with a binary
    reward all four could be equal for two steps running (it happened after the tiny tokenizer
    changed), the advantages were all 0, the policy never moved and the KL test saw no KL."""
    r = torch.tensor([float(len(t) % 3 == 0) for t in ro.texts])
    z = torch.zeros_like(r)
    total = r + torch.tensor([len(t) / 100.0 for t in ro.texts])
    return {"format": z, "result": r, "consistency": z, "total": total}


def test_resume_reproduces_the_uninterrupted_run(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(rl, "score", _text_reward)
    full = tmp_path / "full"
    rl.train_rl(**rl.rl_inputs(_recipe(tiny, 4, 2)), out_dir=full)
    # a run "killed" after step 2 (its last checkpoint), then resumed to step 4
    part = tmp_path / "part"
    rl.train_rl(**rl.rl_inputs(_recipe(tiny, 2, 2)), out_dir=part)
    assert [r["step"] for r in rl.read_metrics(part)] == [1, 2]
    assert (part / "checkpoints" / "step-000002" / "trainer_state.json").is_file()
    lines = (part / "metrics.jsonl").read_text().splitlines()
    marked = [json.dumps({**json.loads(lines[0]), "marker": "kept"}), lines[1]]
    # a step logged after the checkpoint, which the resumed run must drop and redo
    marked.append(json.dumps({"step": 3, "loss": 123.0}))
    (part / "metrics.jsonl").write_text("\n".join(marked) + "\n")
    final = rl.train_rl(**rl.rl_inputs(_recipe(tiny, 4, 2)), out_dir=part, resume=True)
    a, b = rl.read_metrics(full), rl.read_metrics(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert b[0].pop("marker") == "kept"  # steps 1-2 were not recomputed: it did resume
    for ra, rb in zip(a, b):
        for key in ra.keys() - VOLATILE:
            if isinstance(ra[key], float):
                assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), (ra["step"], key)
            else:
                assert rb[key] == ra[key], (ra["step"], key)
    assert any(r["loss"] != 0 for r in a) and any(r["kl"] != 0 for r in a)  # it did learn
    assert (final / "config.json").exists()
    from safetensors.torch import load_file  # the weights of both final models agree

    wa = load_file(str(full / "final" / "model.safetensors"))
    wb = load_file(str(final / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_both_orders_shows_every_pair_both_ways(tiny, tmp_path, monkeypatch):
    """rl.both_orders: each step reads prompts_per_step / 2 pairs and shows each in both orders,
    so the labels of every batch are half 1 and half 2; an odd prompts_per_step is refused."""
    with pytest.raises(ValueError, match="both_orders"):
        rl.RLConfig(
            both_orders=True, prompts_per_step=3, mini_batch_size=1, micro_batch_size=1
        ).resolved()
    assert rl.RLConfig(both_orders=True, prompts_per_step=4).pairs_per_step == 2
    seen = []

    def spy(ro, judge, use_consistency):
        seen.append((list(ro.pair_ids), list(ro.labels)))
        return _text_reward(ro, judge, use_consistency)

    monkeypatch.setattr(rl, "score", spy)
    recipe = _recipe(tiny, 2, 1)
    recipe["rl"]["both_orders"] = True
    inputs = rl.rl_inputs(recipe)
    assert inputs["model_path"] == str(tiny) and inputs["record"] is recipe

    def resolved_again(recipe):
        raise AssertionError("the model path is resolved once, by rl_inputs, not by train_rl")

    monkeypatch.setattr(rl, "resolve_model_path", resolved_again)
    rl.train_rl(**inputs, out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "recipe.yaml").is_file()  # the record, beside the run
    assert len(seen) == 2
    for ids, labels in seen:
        assert len(ids) == 4 and ids[0::2] == ids[1::2]  # each pair twice, side by side
        assert [a + b for a, b in zip(labels[0::2], labels[1::2])] == [3, 3]  # swapped label
    state = json.loads(
        (tmp_path / "run" / "checkpoints" / "step-000002" / "trainer_state.json").read_text()
    )
    assert state["data_position"] == 2 * 2  # two steps of two pairs


@pytest.mark.parametrize("freeze", [True, False])
def test_vision_tower_stays_frozen_unless_asked(tiny, tmp_path, monkeypatch, freeze):
    """rl.freeze_vision (default true): the policy update leaves every vision weight as the cold
    start had it and still trains the language model; false trains both."""
    from safetensors.torch import load_file

    monkeypatch.setattr(rl, "score", _text_reward)
    recipe = _recipe(tiny, 2, 0)
    recipe["rl"]["freeze_vision"] = freeze
    final = rl.train_rl(**rl.rl_inputs(recipe), out_dir=tmp_path / "run")
    before = load_file(str(Path(tiny) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    vision = [k for k in after if ".visual." in f".{k}"]
    text = [k for k in after if k not in vision and k in before]
    assert vision and text
    changed = lambda keys: any(not torch.equal(before[k], after[k]) for k in keys)  # noqa: E731
    assert changed(vision) is (not freeze)
    assert changed(text)


@pytest.mark.parametrize("old_logprobs", ["sampler", "trainer"])
@pytest.mark.parametrize(
    "algo,lora,kl_coef", [("grpo", {"r": 4, "lora_alpha": 8}, 0.05), ("reinforce++", None, 0.05)]
)
def test_lora_grpo_and_kl_paths(tiny, tmp_path, monkeypatch, algo, lora, kl_coef, old_logprobs):
    """GRPO with a LoRA adapter (reference = adapter off, KL in the loss) and Reinforce++ with a
    separate frozen reference (KL in the reward) both train and save, with the old log-probs
    recorded by the sampler or from a separate pass."""
    monkeypatch.setattr(rl, "score", _text_reward)
    recipe = _recipe(tiny, 3, 0)
    recipe["model"]["lora"] = lora
    recipe["rl"].update(
        algo=algo,
        kl_coef=kl_coef,
        prompts_per_step=4,
        mini_batch_size=4,
        micro_batch_size=2,
        samples_per_prompt=4 if algo == "grpo" else None,
        old_logprobs=old_logprobs,
    )
    final = rl.train_rl(**rl.rl_inputs(recipe), out_dir=tmp_path / algo)
    recs = rl.read_metrics(tmp_path / algo)
    assert [r["step"] for r in recs] == [1, 2, 3] and all(r["params_finite"] for r in recs)
    assert recs[0]["samples"] == (16 if algo == "grpo" else 4)
    # step 1 samples from the reference itself: KL 0, exactly when the old log-probs come from
    # the same forward pass as the reference's, up to rounding when the sampler recorded them
    if old_logprobs == "trainer":
        assert recs[0]["kl"] == 0
    else:
        assert abs(recs[0]["kl"]) < 1e-6
    assert any(abs(r["kl"]) > 1e-4 for r in recs[1:])  # after an update the policy has moved away
    saved = final / ("adapter_config.json" if lora else "config.json")
    assert saved.is_file()


def test_lazy_old_logprobs_give_the_same_update(tiny):
    """ppo_update(old_logp=None) scores the first mini-batch in the update itself; the result
    must equal the update with every old log-prob computed beforehand."""
    cfg = rl.RLConfig(
        algo="reinforce++",
        prompts_per_step=2,
        samples_per_prompt=2,
        mini_batch_size=2,
        micro_batch_size=1,
        ppo_epochs=2,
        lr=1e-2,
    ).resolved()
    finals = []
    for lazy in (False, True):
        acc, model, opt, processor, ro = _setup(tiny, cfg)
        pad = rl_data.pad_token_id(processor)
        old = None if lazy else rl_data.batched_logprobs(model, ro, pad, 1, 1.0)
        adv, _ = rl_update.compute_advantages(
            acc, cfg, torch.tensor([1.5, 0.0, 0.0, 2.0]), ro.mask, kl=None
        )
        stats = rl_update.ppo_update(
            acc, model, opt, cfg, ro, old, adv, None, pad, torch.Generator().manual_seed(0)
        )
        finals.append(([p.detach().clone() for p in model.parameters()], stats))
    (pa, sa), (pb, sb) = finals
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert sa["loss"] == pytest.approx(sb["loss"], rel=1e-5, abs=1e-7)
    assert sa["max_ratio"] == pytest.approx(sb["max_ratio"], rel=1e-5)


def test_stop_on_collapse_ends_the_run_after_n_collapsed_steps(tiny, tmp_path):
    """The untrained tiny model never writes a well-formed judgment, so every step is collapsed
    ("ill-formed", rl.collapse_reason): with rl.stop_on_collapse=2 the run ends after step 2 and
    still saves its (finite) model and a resumable last checkpoint."""
    recipe = _recipe(tiny, 4, 0)
    recipe["rl"].update(stop_on_collapse=2, kl_coef=0.0)
    final = rl.train_rl(**rl.rl_inputs(recipe), out_dir=tmp_path / "run")
    recs = rl.read_metrics(tmp_path / "run")
    assert [r["step"] for r in recs] == [1, 2]
    assert all(rl.collapse_reason(r, 12) == "ill-formed" for r in recs)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped"] == "collapsed (ill-formed) 2 steps in a row"
    assert summary["collapsed"] is False and (final / "config.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "trainer_state.json").is_file()
    assert (
        rl.collapse_reason({"well_formed": 1.0, "length_mean": 115.2, "loss": 0.0}, 128) == "length"
    )
    assert rl.collapse_reason({"well_formed": 1.0, "length_mean": 40.0, "loss": 0.0}, 128) is None


def test_sampler_old_logprobs_train_like_a_separate_pass(tiny, tmp_path, monkeypatch):
    """rl.old_logprobs="sampler" (the default: read while sampling) and "trainer" (a separate
    no-grad pass) give the same run up to float rounding (KL on, so both need old log-probs)."""
    monkeypatch.setattr(rl, "score", _text_reward)
    runs = {}
    for mode in ("sampler", "trainer"):
        recipe = _recipe(tiny, 2, 0)
        recipe["rl"]["old_logprobs"] = mode
        rl.train_rl(**rl.rl_inputs(recipe), out_dir=tmp_path / mode)
        runs[mode] = rl.read_metrics(tmp_path / mode)
    for a, b in zip(runs["sampler"], runs["trainer"]):
        for key in ("loss", "kl", "max_ratio", "grad_norm", "length_mean", "reward"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), (a["step"], key)
    assert any(r["loss"] != 0 for r in runs["sampler"])
    with pytest.raises(ValueError, match="old_logprobs"):
        rl.RLConfig(old_logprobs="cache").resolved()


class _PaidJudge:
    """A judge that is not free to run: it counts its calls and sees what images it gets."""

    use_images = True

    def __init__(self):
        self.calls, self.images = 0, []

    def judge(self, analyses, answers, images=None):
        self.calls += 1
        self.images.append(images)
        return [1] * len(analyses)


def test_a_paid_judge_is_asked_only_when_its_reward_is_used():
    texts = ["<think>a</think><answer>1</answer>", "<think>b</think><answer>2</answer>", "no tags"]
    ro = rl_data.Rollout(
        prompts=[],
        k=1,
        ids=torch.zeros(3, 1, dtype=torch.long),
        mask=torch.ones(3, 1),
        texts=texts,
        labels=[1, 1, 2],
        finish=["stop"] * 3,
        pair_ids=["a", "b", "c"],
    )
    paid = _PaidJudge()
    off = rl_data.score(ro, paid, use_consistency=False)
    assert paid.calls == 0 and torch.isnan(off["consistency"]).all()
    assert off["total"].tolist() == (off["result"] + 0.5 * off["format"]).tolist()
    on = rl_data.score(ro, paid, use_consistency=True)
    assert paid.calls == 1 and on["consistency"].tolist() == [1.0, 1.0, 1.0]
    from r1reward.toy.judge import RuleJudge

    rule = rl_data.score(ro, RuleJudge(), use_consistency=False)  # free: still asked, for the log
    assert not torch.isnan(rule["consistency"]).any()


def test_the_trainer_shows_a_judge_that_looks_at_images_each_samples_images(
    tiny, tmp_path, monkeypatch
):
    paid = _PaidJudge()
    monkeypatch.setattr(rl, "make_judge", lambda spec: paid)
    recipe = _recipe(tiny, 1, 0)
    recipe["rl"].update(consistency_reward=True, kl_coef=0.0)
    rl.train_rl(**rl.rl_inputs(recipe), out_dir=tmp_path / "run")
    (images,) = paid.images
    n = recipe["rl"]["prompts_per_step"]
    assert len(images) == n and all(len(i) == 1 and hasattr(i[0], "size") for i in images)


def test_grpo_loss_uses_the_configured_kl_estimator(tiny):
    """The KL that GRPO adds to its loss is rl.kl_kind's estimator (k3 by the preset), not a
    hard-coded one: with the same reference log-probs, k1 and k3 give different losses, and the
    presets pick k1 for the Reinforce family's reward and k3 for GRPO's loss."""
    assert rl.RLConfig(algo="grpo").resolved().kl_kind == "k3"
    assert rl.RLConfig(algo="reinforce++").resolved().kl_kind == "k1"
    with pytest.raises(ValueError, match="kl_kind"):
        rl.RLConfig(algo="grpo", kl_kind="k9").resolved()
    losses = {}
    for kind in ("k1", "k3"):
        cfg = rl.RLConfig(
            algo="grpo",
            prompts_per_step=2,
            samples_per_prompt=2,
            mini_batch_size=4,
            micro_batch_size=4,
            ppo_epochs=1,
            lr=0.0,
            kl_coef=1.0,
            kl_kind=kind,
        ).resolved()
        acc, model, opt, processor, ro = _setup(tiny, cfg)
        old = rl_data.batched_logprobs(model, ro, rl_data.pad_token_id(processor), 4, 1.0)
        ref = (old + 0.5) * ro.mask  # a reference that disagrees with the policy
        adv = torch.zeros_like(ro.mask)
        stats = rl_update.ppo_update(
            acc,
            model,
            opt,
            cfg,
            ro,
            old,
            adv,
            ref,
            rl_data.pad_token_id(processor),
            torch.Generator().manual_seed(0),
        )
        losses[kind] = stats["loss"]
    # d = logp - ref = -0.5 on every token: k1 = -0.5, k3 = exp(0.5) - 1 - 0.5, averaged per
    # sequence and then over the 4 samples, one of them empty (its term is 0)
    assert losses["k1"] == pytest.approx(0.75 * -0.5, abs=1e-4)
    assert losses["k3"] == pytest.approx(0.75 * (math.exp(0.5) - 1.5), abs=1e-4)
