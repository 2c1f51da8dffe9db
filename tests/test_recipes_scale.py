"""Every shipped recipe builds on CPU with the tiny model standing in for the real one.

``tests/test_recipes.py`` (cold start) builds the SFT trainer and the scalar model of the toy
recipes and of ``qwen2.5-vl-7b-lora``. This file adds what it does not cover:

- the SFT trainer of the GPU recipes added for scaling (QLoRA, full ZeRO-3 / FSDP, 3B LoRA);
- the RL pieces of *every* recipe (``make_accelerator`` + ``build``: policy, optimizer,
  accumulation, gradient checkpointing, no reference when ``kl_coef == 0``) and one optimizer step
  with the recipe's own mini/micro-batch sizes;
- the GPU recipes' sizes against the memory estimate (``r1reward.scaling``) for the card named in
  their ``hardware`` section, their accelerate configs, and their OpenAI-compatible judge;
- the 4-bit recipe kept as shipped on CPU fails with the clear bitsandbytes / CUDA message.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import yaml

from r1reward.recipes import available, load_recipe
from r1reward.recipes.config import ModelConfig, SFTConfig
from r1reward.train import rl

ROOT = Path(__file__).resolve().parents[1]
ALL = available()
# recipes whose SFT trainer tests/test_recipes.py already builds
SFT_COVERED = {"toy-ci", "toy-cpu", "qwen2.5-vl-7b-lora"}
GPU = [n for n in ALL if n.startswith("qwen")]
WITH_HARDWARE = [n for n in GPU if "hardware" in load_recipe(n)]


def _cpu_recipe(name: str, tiny: Path, *extra: str) -> dict:
    """The recipe as shipped, with the tiny model as ``model.path`` and no 4-bit (CPU)."""
    return load_recipe(name, [f"model.path={tiny}", "model.quantization=null", *extra])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from r1reward.toy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny")


@functools.cache
def _estimate(shape: str):
    from r1reward.scaling import count_parameters, qwen25_vl_config

    config = qwen25_vl_config(shape)
    return config, count_parameters(config)  # meta device: a few seconds, no memory


def test_the_scaling_recipes_are_shipped():
    assert {
        "qwen2.5-vl-7b-qlora",
        "qwen2.5-vl-7b-full-zero3",
        "qwen2.5-vl-7b-full-fsdp",
        "qwen2.5-vl-3b-lora",
    } <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_recipe_parses_with_every_section(name):
    r = load_recipe(name)
    for section in ("model", "data", "sft", "scalar", "rl", "eval"):
        assert isinstance(r[section], dict), f"{name}: section {section}"
    cfg = rl.RLConfig.from_dict(r["rl"]).resolved()  # unknown keys or bad sizes raise here
    assert cfg.samples_per_step % cfg.mini_batch_size == 0


@pytest.mark.parametrize("name", WITH_HARDWARE)
def test_gpu_recipe_sizes_fit_the_memory_estimate(name):
    from r1reward.scaling import largest_micro_batch, recipe_mode
    from r1reward.scaling import recipe_fit as scaling_fit

    r = load_recipe(name)
    hw = r["hardware"]
    config, counts = _estimate(hw["shape"])
    fits = largest_micro_batch(
        counts,
        config,
        mode=recipe_mode(r),
        gpus=hw["gpus"],
        gpu_gib=hw["gpu_memory_gib"],
        tokens=r["sft"]["max_length"],
        lora_rank=(r["model"]["lora"] or {}).get("r", 64),
    )
    assert fits >= 1, f"{name}: the estimate says not even one row fits"
    assert 1 <= r["sft"]["batch_size"] <= fits
    assert 1 <= r["rl"]["micro_batch_size"] <= fits
    row = scaling_fit(r)
    assert row["largest that fits (est.)"] == fits
    assert row["sft micro-batch"] == r["sft"]["batch_size"]
    assert r["sft"]["gradient_checkpointing"] and r["rl"]["gradient_checkpointing"]
    assert r["model"]["dtype"] == "bfloat16" and r["sft"]["bf16"]


@pytest.mark.parametrize("name", WITH_HARDWARE)
def test_gpu_recipe_names_its_launcher_and_a_real_judge(name, monkeypatch):
    r = load_recipe(name)
    hw = r["hardware"]
    if hw["gpus"] == 1:
        assert hw["accelerate_config"] is None
    else:
        path = ROOT / hw["accelerate_config"]
        acc = yaml.safe_load(path.read_text())
        assert acc["num_processes"] == hw["gpus"] and acc["mixed_precision"] == "bf16"
        if "zero3" in name:
            assert acc["distributed_type"] == "DEEPSPEED"
            assert acc["deepspeed_config"]["zero_stage"] == 3
        if "fsdp" in name:
            assert acc["distributed_type"] == "FSDP"
            # HF gradient checkpointing and FSDP activation checkpointing must not both be on
            assert not acc["fsdp_config"]["fsdp_activation_checkpointing"]
        assert r["model"]["lora"] is None  # full-parameter training
    # the consistency judge is an OpenAI-compatible server found through the environment
    assert r["rl"]["judge"]["kind"] == "openai" and "base_url" not in r["rl"]["judge"]
    monkeypatch.setenv("R1REWARD_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("R1REWARD_JUDGE_MODEL", "judge")
    judge = rl.make_judge(r["rl"]["judge"])
    assert type(judge).__name__ == "OpenAIJudge" and judge.base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("name", [n for n in ALL if n not in SFT_COVERED])
def test_sft_trainer_builds_on_cpu(name, tiny, tmp_path):
    from trl import SFTTrainer

    from r1reward.toy.world import make_pairs
    from r1reward.train.sft import build_trainer

    r = _cpu_recipe(name, tiny)
    trainer, _ = build_trainer(
        SFTConfig.from_dict(r["sft"]),
        model_cfg=ModelConfig.from_dict(r["model"]),
        model_path=str(tiny),
        out_dir=tmp_path,
        pairs=make_pairs(4, seed=1),
    )
    assert isinstance(trainer, SFTTrainer)
    args = trainer.args
    assert args.per_device_train_batch_size == r["sft"]["batch_size"]
    assert args.gradient_accumulation_steps == r["sft"]["grad_accum"]
    assert args.learning_rate == pytest.approx(r["sft"]["lr"])
    assert args.gradient_checkpointing == r["sft"]["gradient_checkpointing"]
    assert args.bf16 is False  # no CUDA here: the recipe's bf16 is switched off, not an error
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    if r["model"]["lora"]:
        assert trainable and all("lora_" in n for n in trainable)
    else:  # full training: every language-model weight is trained
        assert any("embed_tokens" in n for n in trainable)
        assert any("layers.0.mlp" in n for n in trainable)
    if r["sft"].get("freeze_vision"):
        assert not any(".visual." in f".{n}" for n in trainable)


@pytest.mark.parametrize("name", ALL)
def test_rl_pieces_build_and_take_one_step_on_cpu(name, tiny):
    # float32 on the CPU (bf16 matmuls are slow there); the dtype itself is checked above
    r = _cpu_recipe(name, tiny, "model.dtype=float32")
    cfg = rl.RLConfig.from_dict(r["rl"]).resolved()
    acc = rl.make_accelerator(cfg)
    assert acc.gradient_accumulation_steps == cfg.grad_accum
    torch.manual_seed(0)
    model, ref, processor, opt = rl.build(cfg, ModelConfig.from_dict(r["model"]), str(tiny), acc)
    assert ref is None or cfg.kl_coef > 0  # no reference copy when the KL is off
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.lr)
    policy = acc.unwrap_model(model)
    assert policy.is_gradient_checkpointing == cfg.gradient_checkpointing
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    if r["model"]["lora"]:
        assert names and all("lora_" in n for n in names)

    # one optimizer step with the recipe's accumulation: a mini-batch of synthetic completions
    from r1reward.toy.world import make_pairs

    n = cfg.mini_batch_size
    pairs = make_pairs(n, seed=2)
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(20, 200, (3 + i % 3,), generator=g).tolist() for i in range(n)]
    ro = rl.make_rollout(processor, pairs, rl.conversations(pairs), ids, k=1)
    pad = rl.pad_token_id(processor)
    old = rl.batched_logprobs(model, ro, pad, cfg.micro_batch_size, cfg.temperature)
    adv = torch.linspace(-1, 1, n)[:, None] * ro.mask
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    one_epoch = rl.dataclasses.replace(cfg, ppo_epochs=1)
    stats = rl.ppo_update(
        acc, model, opt, one_epoch, ro, old, adv, None, pad, torch.Generator().manual_seed(0)
    )
    assert stats["optimizer_steps"] == 1
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(torch.isfinite(p).all() for p in after)


def test_rl_sees_images_at_the_pixel_cap_sft_trained_with(tiny):
    """model.max_pixels caps the images of every trainer: RL's processor cuts a large image to
    the same number of patches as SFT's (before, RL dropped the cap and saw the processor's own)."""
    from PIL import Image

    from r1reward.train.common import load_for_training

    r = _cpu_recipe("qwen2.5-vl-7b-lora", tiny, "model.dtype=float32", "model.max_pixels=784")
    section = ModelConfig.from_dict(r["model"])
    cfg = rl.RLConfig.from_dict(r["rl"]).resolved()
    _, _, processor, _ = rl.build(cfg, section, str(tiny), rl.make_accelerator(cfg))
    _, sft_processor = load_for_training(tiny, section)
    image = Image.new("RGB", (448, 448), "white")

    def patches(proc) -> int:
        return int(
            proc.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].prod()
        )

    assert patches(processor) == patches(sft_processor) == 784 // (14 * 14)


def test_four_bit_recipe_as_shipped_fails_clearly_on_cpu(tiny):
    r = load_recipe("qwen2.5-vl-7b-qlora", [f"model.path={tiny}"])
    assert r["model"]["quantization"] == "4bit"
    cfg = rl.RLConfig.from_dict(r["rl"]).resolved()
    with pytest.raises((ImportError, RuntimeError), match=r"bitsandbytes|CUDA"):
        rl.build(cfg, ModelConfig.from_dict(r["model"]), str(tiny), rl.make_accelerator(cfg))


# ------------------------------------------------------------------ chapter helpers (scaling)


def test_largest_micro_batch_is_the_last_that_fits():
    from r1reward.scaling import estimate_training_memory, largest_micro_batch

    config, counts = _estimate("7b")
    m = largest_micro_batch(counts, config, mode="lora", gpu_gib=40, tokens=4096)
    at = functools.partial(estimate_training_memory, counts, config, mode="lora", tokens=4096)
    assert m >= 1
    assert at(micro_batch=m).total <= 0.9 * 40 < at(micro_batch=m + 1).total
    assert largest_micro_batch(counts, config, mode="full", gpu_gib=24, tokens=4096) == 0


def test_recipe_diff_and_row():
    from r1reward.scaling import recipe_diff, recipe_row

    a = load_recipe("toy-cpu")
    b = load_recipe("toy-cpu", ["sft.lr=0.5", "model.lora={r: 8}"])
    b["name"] = "other"
    diff = {row["key"]: row for row in recipe_diff(a, b)}
    assert set(diff) == {"sft.lr", "model.lora", "model.lora.r"}
    assert diff["sft.lr"]["other"] == 0.5 and diff["model.lora.r"]["toy-cpu"] == "-"
    row = recipe_row(load_recipe("qwen2.5-vl-7b-full-zero3"))
    assert row["training"] == "full" and row["accelerate config"] == "deepspeed-zero3.yaml"
    assert row["sft effective batch"] == 8 * row["sft micro-batch"] * row["sft grad accum"]
    assert recipe_row(load_recipe("qwen2.5-vl-7b-qlora"))["training"] == "qlora r=64"


def test_measurements_are_read_with_their_command(tmp_path):
    import json

    from r1reward.scaling import load_measurements

    step = {"tokens_per_s": 10.0, "peak_gib": 3.0}
    row = {"mode": "lora", "weights_gib": 2.0, "rollout": step, "sft_step": step, "rl_step": step}
    (tmp_path / "scale-7b.json").write_text(
        json.dumps(
            {
                "device": "NVIDIA H100",
                "command": "python benchmarks/bench_gpu_scale.py --size 7b",
                "rows": [
                    row,
                    {"mode": "qlora", "error": "ImportError: bitsandbytes"},
                    {
                        "mode": "engines",
                        "transformers": step,
                        "vllm": {"error": "ImportError: vllm"},
                    },
                ],
            }
        )
    )
    (tmp_path / "scale-tiny.json").write_text(json.dumps({"device": "cpu", "rows": [row]}))
    rows = load_measurements(tmp_path)
    assert [r["mode"] for r in rows] == ["lora", "qlora", "engines"]  # CPU dry run left out
    assert rows[2]["rollout tok/s"] == 10.0 and "vllm" in rows[2]["vLLM rollout tok/s"]
    assert rows[0]["RL step peak GiB"] == 3.0 and rows[0]["command"].endswith("--size 7b")
    assert "bitsandbytes" in rows[1]["error"]
    assert len(load_measurements(tmp_path, gpu_only=False)) == 4
    assert load_measurements(tmp_path / "nothing") == []
