"""The Bradley-Terry scalar baseline: shapes, loss, padding invariance, a short training run."""

from __future__ import annotations

import json

import pytest
import torch

from r1reward.models import load_model
from r1reward.recipes import load_recipe
from r1reward.toy.tiny_model import build_tiny_model
from r1reward.toy.world import make_pairs
from r1reward.train.scalar import (
    ScalarRewardModel,
    _rewards,
    encode_responses,
    scalar_inputs,
    train_scalar,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny")


def test_reward_is_read_at_the_last_real_token_whatever_the_padding(tiny):
    torch.manual_seed(0)
    model, processor = load_model(tiny)
    rm = ScalarRewardModel(model, model.config.get_text_config().hidden_size).eval()
    pairs = make_pairs(3, seed=2)
    with torch.no_grad():
        together = _rewards(rm, processor, pairs)  # padded batch, (3, 2)
        alone = torch.cat([_rewards(rm, processor, [p]) for p in pairs])
    assert together.shape == (3, 2)
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_encode_places_the_chosen_or_rejected_response(tiny):
    _, processor = load_model(tiny)
    p = make_pairs(1, seed=3)[0]
    batch = encode_responses(processor, [p, p], [1, 2])
    text = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=False)
    assert p.response_1 in text[0] and p.response_2 not in text[0]
    assert p.response_2 in text[1]
    assert batch["attention_mask"][:, -1].all()  # left padded: the last column is real


@pytest.mark.slow
def test_training_fits_a_few_pairs_and_reports_accuracy(tiny, tmp_path):
    """Eight pairs, 25 epochs: the BT loss falls well below log 2 and the pairs are ranked right.

    (The toy's text alone is at chance, so fitting even the training pairs needs the image.)
    """
    r = load_recipe(
        "toy-ci",
        [
            f"model.path={tiny}",
            "scalar.epochs=25",
            "scalar.lr=1e-3",
            "scalar.batch_size=8",
        ],
    )
    train, held = make_pairs(8, seed=4), make_pairs(8, seed=4, split="heldout")
    inputs = scalar_inputs(r, pairs=train, heldout=held)
    res = train_scalar(**inputs, out_dir=tmp_path, progress=False)
    assert res["steps"] == 25 and len(res["log"]) == 25
    assert 0.0 <= res["heldout_accuracy"] <= 1.0 and res["n_heldout"] == 8
    last = sum(x["loss"] for x in res["log"][-5:]) / 5
    assert last < 0.5 < res["log"][0]["loss"]
    assert res["train_accuracy"] >= 0.75
    saved = json.loads((tmp_path / "scalar_summary.json").read_text())
    assert saved["heldout_accuracy"] == res["heldout_accuracy"]
    assert (tmp_path / "scalar_head.pt").is_file()
