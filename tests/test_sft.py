"""Cold-start SFT (paper Sec. 4.3) through TRL's SFTTrainer on the tiny Qwen2.5-VL, on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from r1reward.curation import ToyTeacher, curate
from r1reward.models import load_model
from r1reward.recipes import load_recipe
from r1reward.toy.tiny_model import build_tiny_model
from r1reward.toy.world import make_pairs, target_text
from r1reward.train.sft import build_trainer, read_log, sft_examples, sft_inputs, train_sft


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    raw = make_pairs(12, seed=5)
    return curate(raw, ToyTeacher(0), tmp_path_factory.mktemp("cur") / "c.jsonl", progress=False)


def recipe(tiny, *more):
    return load_recipe("toy-ci", [f"model.path={tiny}", "sft.batch_size=4", *more])


def _trainer_inputs(r, pairs):
    """build_trainer's arguments for recipe ``r``: sft_inputs without the run's record."""
    inputs = sft_inputs(r, pairs=pairs)
    del inputs["record"]
    return inputs


def test_completion_is_the_teacher_target_plus_end_of_turn(tiny, pairs):
    _, processor = load_model(tiny)
    ex = sft_examples(pairs, processor)
    trained = [p for p in pairs if p.meta["teacher_analysis"]]
    assert len(ex) == len(trained) > 0
    assert ex[0]["completion"].startswith(target_text(trained[0]))
    assert ex[0]["completion"].rstrip().endswith("<|im_end|>")
    assert ex[0]["prompt"].rstrip().endswith("assistant")
    assert "<|image_pad|>" in ex[0]["prompt"] and "[Response 2]" in ex[0]["prompt"]


def test_loss_is_on_the_completion_only(tiny, pairs, tmp_path):
    trainer, processor = build_trainer(**_trainer_inputs(recipe(tiny), pairs), out_dir=tmp_path)
    rows = [trainer.train_dataset[i] for i in range(3)]
    completions = [r["completion"] for r in rows]
    batch = trainer.data_collator(rows)
    tok = processor.tokenizer
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert "pixel_values" in batch and "image_grid_thw" in batch
    for i, completion in enumerate(completions):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        trained = labels != -100
        # exactly the completion's tokens carry labels, and they are the completion text
        assert tok.decode(ids[trained]) == completion
        assert torch.equal(labels[trained], ids[trained])
        n_completion = len(tok(completion, add_special_tokens=False)["input_ids"])
        assert int(trained.sum()) == n_completion
        # every labelled token comes after every prompt token; image tokens are never labelled
        first = int(trained.nonzero()[0])
        assert not trained[:first].any() and bool(mask[:first].any())
        assert not trained[ids == image_pad].any()
        assert (ids[:first] == image_pad).any()


@pytest.mark.slow
def test_train_sft_writes_a_loadable_model_and_a_loss_curve(tiny, pairs, tmp_path):
    r = recipe(tiny, "sft.max_steps=3", "sft.logging_steps=1")
    out = train_sft(**sft_inputs(r, pairs=pairs), out_dir=tmp_path)
    log = read_log(out)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 3 and all(x > 0 for x in losses)
    summary = json.loads((out / "sft_summary.json").read_text())
    assert summary["steps"] == 3 and summary["peak_rss_mb"] > 0
    model, _ = load_model(out)
    base, _ = load_model(tiny)
    changed = [
        n
        for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters())
        if not torch.equal(p, q)
    ]
    assert changed, "SFT did not change any weight"


@pytest.mark.slow
def test_lora_trains_only_adapters_and_saves_a_merged_model(tiny, pairs, tmp_path):
    r = recipe(tiny, "model.lora={r: 4, lora_alpha: 8}", "sft.max_steps=2")
    trainer, _ = build_trainer(**_trainer_inputs(r, pairs), out_dir=tmp_path / "t")
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    out = train_sft(**sft_inputs(r, pairs=pairs), out_dir=tmp_path / "lora")
    model, _ = load_model(out)  # merged: an ordinary model folder again
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_cli_help(capsys):
    from r1reward.train.sft import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "completion only" in capsys.readouterr().out


def test_cli_rejects_unknown_override(capsys, tmp_path):
    from r1reward.train.sft import main

    assert main(["--recipe", "toy-ci", "--out", str(tmp_path), "sft.nope=1"]) == 2
    assert "sft.nope" in capsys.readouterr().err
