"""LoRA/QLoRA adapter folders everywhere (r1reward.models): ``load_model`` loads an adapter on its
base (so ``eval``, ``serve`` and ``rl.init_model`` do), and ``r1reward merge`` writes a plain model
folder with the merged weights."""

from __future__ import annotations

import json

import pytest
import torch

from r1reward.cli import main as cli
from r1reward.data import write_pairs
from r1reward.models import is_adapter, load_model
from r1reward.toy.tiny_model import build_tiny_model
from r1reward.toy.world import make_pairs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory):
    """An adapter folder as LoRA training writes it, with non-zero (trained-like) B matrices,
    and the merged weights expected of it."""
    torch.manual_seed(0)
    model, _ = load_model(tiny, lora={"r": 4, "lora_alpha": 8})
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("adapter") / "sft-lora"
    model.save_pretrained(folder)
    expected = {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}
    return folder, expected


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_load_model_reads_an_adapter_folder_as_the_merged_model(tiny, adapter):
    folder, expected = adapter
    assert is_adapter(folder) and not is_adapter(tiny)
    model, processor = load_model(folder)
    assert not hasattr(model, "peft_config")  # a plain model, adapter merged
    _same(model.state_dict(), expected)
    base, _ = load_model(tiny)
    assert any(not torch.equal(base.state_dict()[k], v) for k, v in expected.items())
    # with lora (RL from an SFT adapter) a fresh adapter sits on the merged weights
    policy, _ = load_model(folder, lora={"r": 2, "lora_alpha": 4})
    assert hasattr(policy, "peft_config")
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_merge_command_writes_a_plain_model(adapter, tmp_path, capsys):
    folder, expected = adapter
    out = tmp_path / "merged"
    assert cli(["merge", str(folder), "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and not is_adapter(out)
    model, processor = load_model(out)
    _same(model.state_dict(), expected)
    assert processor.tokenizer is not None
    # a full model is not an adapter; a missing base is named
    assert cli(["merge", str(out), "--out", str(tmp_path / "x")]) == 2
    cfg = json.loads((folder / "adapter_config.json").read_text())
    bad = tmp_path / "bad-adapter"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": str(tmp_path / "gone")})
    )
    assert cli(["merge", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert "base model" in capsys.readouterr().err


def test_eval_and_serve_load_an_adapter_folder(adapter, tmp_path):
    from r1reward.evaluate import main as eval_main
    from r1reward.serve import build_engine

    folder, expected = adapter
    data = write_pairs(make_pairs(2, seed=1, image_size=28), tmp_path / "pairs.jsonl")
    out = tmp_path / "eval"
    rc = eval_main(
        [
            "--model",
            str(folder),
            "--data",
            str(data),
            "--k",
            "1",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0 and (out / "summary.json").is_file()
    engine = build_engine(str(folder))
    _same(engine.model.state_dict(), expected)
