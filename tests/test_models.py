"""Tiny Qwen2.5-VL (r1reward.toy.tiny_model, .pretrain) loaded by r1reward.models: build, load,
chat template, LoRA/quantization options, train step, caption pretraining."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time

import pytest
import torch
from PIL import Image

from r1reward import models
from r1reward.models import load_model
from r1reward.prompt import build_messages
from r1reward.toy import cli, pretrain, tiny_model, world
from r1reward.toy.tiny_model import MARKER, SPECIAL_TOKENS, TAG_TOKENS, build_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    t0 = time.perf_counter()
    path = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)
    print(f"\nbuild_tiny_model(size='tiny'): {time.perf_counter() - t0:.2f} s")
    return path


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    return load_model(tiny_dir)


def _conv(color: str = "red", question: str = "How many red circles are there?"):
    img = Image.new("RGB", (56, 56), color)
    return build_messages(question, "There are 3 red circles.", "There are 4.", images=[img])


def _digest(folder) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.name != MARKER
    }


def test_folder_is_an_ordinary_hf_folder(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    for required in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert required in names
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    proc_cfg = json.loads((tiny_dir / "processor_config.json").read_text())
    assert proc_cfg["processor_class"] == "Qwen2_5_VLProcessor"
    # a machine with torchvision gets the normal video processor from the same folder
    assert proc_cfg["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"
    assert proc_cfg["image_processor"]["size"] == {"longest_edge": 3136, "shortest_edge": 3136}


def test_loads_as_real_qwen25vl_with_about_1m_parameters(tiny):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    model, processor = tiny
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert isinstance(processor, Qwen2_5_VLProcessor)
    n = sum(p.numel() for p in model.parameters())
    print(f"\ntiny parameters: {n:,}")
    assert 0.5e6 <= n <= 2e6


def test_special_token_ids_match_config(tiny):
    model, processor = tiny
    tok = processor.tokenizer
    vocab = tok.get_vocab()
    for t in SPECIAL_TOKENS + TAG_TOKENS:
        assert t in vocab, t
        assert tok.convert_ids_to_tokens(tok.encode(t, add_special_tokens=False)) == [t]
    cfg = model.config
    assert cfg.image_token_id == vocab["<|image_pad|>"]
    assert cfg.video_token_id == vocab["<|video_pad|>"]
    assert cfg.vision_start_token_id == vocab["<|vision_start|>"]
    assert cfg.vision_end_token_id == vocab["<|vision_end|>"]
    assert processor.image_token_id == cfg.image_token_id
    assert cfg.text_config.vocab_size >= len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    eos = model.generation_config.eos_token_id
    assert vocab["<|im_end|>"] in (eos if isinstance(eos, list) else [eos])


def test_tags_survive_decoding_without_special_tokens(tiny):
    tok = tiny[1].tokenizer
    text = "<think>Response 2 is better.</think><answer>2</answer>"
    ids = tok.encode("<|im_start|>" + text + "<|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_chat_template_renders_image_before_text_and_generation_prompt(tiny):
    processor = tiny[1]
    conv = _conv()
    text = processor.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    user = text.index("<|im_start|>user\n")
    vision = text.index("<|vision_start|><|image_pad|><|vision_end|>")
    question = text.index("How many red circles")
    assert user < vision < question
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|image_pad|>") == 1
    no_gen = processor.apply_chat_template(conv, tokenize=False, add_generation_prompt=False)
    assert not no_gen.endswith("<|im_start|>assistant\n")
    # a system message and a plain-string content are honoured
    sys_conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = processor.apply_chat_template(sys_conv, tokenize=False)
    assert rendered == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_toy_image_gives_four_visual_tokens_and_short_prompt(tiny):
    from r1reward.rollout import encode

    processor = tiny[1]
    pair = world.make_pairs(1, seed=0, split="heldout")[0]
    conv = build_messages(pair.question, pair.response_1, pair.response_2, images=pair.images)
    enc = encode(processor, [conv])
    image_id = processor.image_token_id
    assert int((enc["input_ids"] == image_id).sum()) == 4
    assert tuple(enc["image_grid_thw"][0].tolist()) == (1, 4, 4)
    assert enc["pixel_values"].shape == (16, 3 * 2 * 14 * 14)
    n = enc["input_ids"].shape[1]
    target = processor.tokenizer.encode(world.target_text(pair), add_special_tokens=False)
    print(f"\ntoy prompt: {n} tokens; teacher target: {len(target)} tokens")
    assert n < 80  # the Table-1 boilerplate is 4 tokens in the toy vocabulary


def test_table1_text_round_trips_through_the_tiny_tokenizer(tiny):
    from r1reward.prompt import build_prompt

    tok = tiny[1].tokenizer
    text = build_prompt("How many stars?", "There are 2 stars.", "There are 3 stars.")
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == text
    pieces = tiny_model.template_pieces()
    assert len(pieces) == 4 and all(p in text for p in pieces)
    assert all(len(tok.encode(p, add_special_tokens=False)) == 1 for p in pieces)
    # other wording still encodes (byte-level BPE), only in more tokens
    other = text.replace("impartial", "unbiased, fair")
    other_ids = tok.encode(other, add_special_tokens=False)
    assert tok.decode(other_ids) == other and len(other_ids) > len(ids)


def test_build_is_idempotent_and_deterministic(tiny_dir, tmp_path):
    marker_before = (tiny_dir / MARKER).stat().st_mtime_ns
    digest_before = _digest(tiny_dir)
    assert build_tiny_model(tiny_dir, seed=0) == tiny_dir
    assert (tiny_dir / MARKER).stat().st_mtime_ns == marker_before  # reused, not rewritten
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert _digest(again) == digest_before  # same seed -> byte-identical folder
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert (
        _digest(other)["model.safetensors"] != digest_before["model.safetensors"]
    )  # another seed -> other weights


def test_build_refuses_a_folder_built_with_other_settings(tiny_dir):
    with pytest.raises(FileExistsError, match="already exists"):
        build_tiny_model(tiny_dir, seed=5)


def test_build_never_overwrites_a_foreign_folder(tmp_path):
    target = tmp_path / "half"
    target.mkdir()
    (target / "notes.txt").write_text("mine")  # not a tiny-model folder: no marker
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        build_tiny_model(target, seed=0)
    assert (target / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (build_tiny_model(empty, seed=0) / MARKER).is_file()  # an empty folder is fine


def test_crashed_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def crash(tmp, **kwargs):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny_model, "_write_tiny_folder", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        build_tiny_model(tmp_path / "tiny", seed=0)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a partial one


def test_folder_from_an_older_build_version_is_rebuilt(tiny_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_dir, old)
    info = json.loads((old / MARKER).read_text())
    info["version"] = tiny_model.BUILD_VERSION - 1
    (old / MARKER).write_text(json.dumps(info))
    (old / "stale.txt").write_text("from the old recipe")
    build_tiny_model(old, seed=0)
    assert json.loads((old / MARKER).read_text())["version"] == tiny_model.BUILD_VERSION
    assert not (old / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_hub_style_folder_loads_through_the_same_code(tiny_dir, tmp_path):
    """The layout of a real Qwen2.5-VL Hub checkpoint (preprocessor_config.json with
    min/max_pixels, chat_template.json, no processor_config.json) loads with load_model."""
    import shutil

    hub = tmp_path / "hub"
    shutil.copytree(tiny_dir, hub)
    image_cfg = json.loads((hub / "processor_config.json").read_text())["image_processor"]
    image_cfg.pop("size")
    image_cfg.update(min_pixels=3136, max_pixels=3136, processor_class="Qwen2_5_VLProcessor")
    (hub / "preprocessor_config.json").write_text(json.dumps(image_cfg))
    (hub / "processor_config.json").unlink()
    template = (hub / "chat_template.jinja").read_text()
    (hub / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (hub / "chat_template.jinja").unlink()
    (hub / MARKER).unlink()
    model, processor = load_model(hub)
    from r1reward.rollout import encode

    enc = encode(processor, [_conv()])
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 4


def test_bad_size_and_missing_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="size='huge'"):
        build_tiny_model(tmp_path / "x", size="huge")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_forward_backward_with_labels_and_pixels(tiny_dir):
    """A training step works on CPU: loss with labels, gradients reach the vision tower."""
    from r1reward.rollout import encode

    model, processor = load_model(tiny_dir)
    model.train()
    convs = [_conv(c) for c in ("red", "blue", "green", "white")]
    for conv in convs:
        conv.append(
            {"role": "assistant", "content": [{"type": "text", "text": "<think>x</think>"}]}
        )
    batch = encode(processor, convs, add_generation_prompt=False, padding_side="right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    vis = [p.grad for n, p in model.named_parameters() if "visual" in n and p.grad is not None]
    assert vis and any(float(g.abs().sum()) > 0 for g in vis)


def test_lora_option_wraps_with_peft(tiny_dir):
    from peft import LoraConfig, PeftModel

    model, _ = load_model(tiny_dir, lora={"r": 4, "lora_alpha": 8})
    assert isinstance(model, PeftModel)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)  # default targets: language model only
    model2, _ = load_model(tiny_dir, lora=LoraConfig(r=2, target_modules=["q_proj"]))
    assert isinstance(model2, PeftModel)
    assert any("visual" not in n and "q_proj.lora_A" in n for n, _ in model2.named_parameters())
    with pytest.raises(TypeError, match="not valid LoraConfig fields"):
        load_model(tiny_dir, lora={"rank_typo": 4})


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available(),
    reason="bitsandbytes and CUDA present: quantization would work",
)
def test_quantization_without_bitsandbytes_or_cuda_is_a_clear_error(tiny_dir):
    with pytest.raises(
        (ImportError, RuntimeError), match="quantization='4bit'.*(bitsandbytes|CUDA)"
    ):
        load_model(tiny_dir, quantization="4bit")
    with pytest.raises(ValueError, match="expected None, '4bit', '8bit'"):
        load_model(tiny_dir, quantization="3bit")


def test_processor_without_torchvision_rejects_video_clearly(tiny):
    if models.torchvision_available():
        pytest.skip("torchvision installed: the normal video processor is used")
    processor = tiny[1]
    with pytest.raises(ImportError, match="torchvision"):
        processor(
            text=["<|vision_start|><|video_pad|><|vision_end|>"],
            videos=[[Image.new("RGB", (56, 56))]],
        )


def test_cli_builds_folder(tmp_path, capsys):
    assert (
        cli.build_tiny_main(["--out", str(tmp_path / "cli"), "--size", "tiny", "--seed", "0"]) == 0
    )
    assert (tmp_path / "cli" / MARKER).is_file()
    assert "parameters" in capsys.readouterr().out


def test_dtype_names_and_aliases(tiny_dir):
    model, _ = load_model(tiny_dir, dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="dtype='int3': expected a floating"):
        load_model(tiny_dir, dtype="int3")


def test_processor_saved_alone_loads_back(tiny, tmp_path):
    """A processor saved by a trainer (no config.json beside it) loads with load_processor."""
    processor = tiny[1]
    processor.save_pretrained(tmp_path / "proc")
    again = models.load_processor(tmp_path / "proc", local_files_only=True)
    assert type(again).__name__ == "Qwen2_5_VLProcessor"
    assert again.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert again.image_processor.size == processor.image_processor.size
    assert again.chat_template == processor.chat_template


# --------------------------------------------------------------------------------------------
# caption pretraining
# --------------------------------------------------------------------------------------------


def test_scene_caption_names_every_object_both_ways_counts_and_bars():
    obj = dict(size=0.8, dx=0.0, dy=0.0)
    scene = {
        "task": "scene",
        "objects": [
            {"shape": "square", "colour": "blue", "cell": 3, **obj},
            {"shape": "circle", "colour": "red", "cell": 0, **obj},
            {"shape": "circle", "colour": "green", "cell": 2, **obj},
        ],
    }
    assert pretrain.scene_caption(scene) == (
        "circle red, circle green, square blue. red circle, green circle, blue square. "
        "2 circles, 1 square."
    )
    bars = {
        "task": "bars",
        "bars": [{"colour": c, "height": h} for c, h in (("red", 5), ("blue", 2), ("green", 7))],
    }
    assert pretrain.scene_caption(bars) == (
        "3 bars: green 7, red 5, blue 2. tallest: green. shortest: blue."
    )


def test_pretraining_prompt_is_only_the_instruction(tiny):
    _, processor = tiny
    scenes = [pretrain.pretrain_scene(i) for i in range(3)]
    batch, mask = pretrain._caption_batch(processor, scenes)
    tok = processor.tokenizer
    for row, m, (_, caption, _) in zip(batch["input_ids"], mask, scenes):
        prompt = tok.decode(row[m == 0], skip_special_tokens=True)
        assert pretrain.PRETRAIN_INSTRUCTION in prompt
        assert "Response" not in prompt and "<think>" not in prompt  # never the Table-1 task
        assert tok.decode(row[m == 1], skip_special_tokens=True) == caption


def test_pretraining_lowers_heldout_caption_loss(tiny_dir):
    model, processor = load_model(tiny_dir)  # a fresh copy: pretraining changes it in place
    before = pretrain.caption_metrics(model, processor, n=16)
    report = pretrain.pretrain_tiny_model(
        model, processor, steps=10, lr=3e-3, batch_size=8, seed=0, eval_scenes=16
    )
    after = pretrain.caption_metrics(model, processor, n=16)
    assert report["heldout_before"] == pytest.approx(before)
    assert report["heldout"] == pytest.approx(after)
    assert after["loss"] < before["loss"] - 1.0  # random init: ~log(vocab); a few steps: far less
    assert after["token_accuracy"] > before["token_accuracy"]
    assert len(report["log"]) == 10 and report["log"][-1]["loss"] < report["log"][0]["loss"]
    assert "reading" not in report and report["text_batch_size"] == 0


def test_pretraining_with_text_reports_reading(tiny_dir):
    model, processor = load_model(tiny_dir)
    report = pretrain.pretrain_tiny_model(
        model, processor, steps=3, lr=3e-3, batch_size=2, seed=0, eval_scenes=4, text_batch_size=4
    )
    for key in ("reading_before", "reading"):
        r = report[key]
        assert r["n"] == 256 and set(r) == {
            "first_mark_accuracy",
            "second_mark_accuracy",
            "verdict_accuracy",
            "n",
        }
        assert all(0.0 <= r[k] <= 1.0 for k in r if k != "n")
    ids, mask = pretrain._text_batch(processor, 0, 0, 4)
    assert ids.shape[0] == 4 and mask.sum(1).min() > 20  # whole analyses, right-padded
    again, _ = pretrain._text_batch(processor, 0, 0, 4)
    assert (again == ids).all()  # the text stream is deterministic


def test_marker_records_pretraining_and_a_different_value_is_another_build(tiny_dir, tmp_path):
    folder = build_tiny_model(
        tmp_path / "pre", seed=0, pretrain_steps=2, pretrain_lr=1e-3, pretrain_batch_size=4
    )
    info = json.loads((folder / MARKER).read_text())
    assert (info["pretrain_steps"], info["pretrain_lr"], info["pretrain_batch_size"]) == (
        2,
        1e-3,
        4,
    )
    assert info["pretrain_report"]["steps"] == 2
    raw = json.loads((tiny_dir / MARKER).read_text())
    assert raw["pretrain_steps"] == 0 and "pretrain_report" not in raw
    digest, raw_digest = _digest(folder), _digest(tiny_dir)
    assert digest["tokenizer.json"] == raw_digest["tokenizer.json"]  # same tokenizer
    assert digest["model.safetensors"] != raw_digest["model.safetensors"]  # trained weights
    assert (
        build_tiny_model(folder, seed=0, pretrain_steps=2, pretrain_lr=1e-3, pretrain_batch_size=4)
        == folder
    )  # reused
    with pytest.raises(FileExistsError, match="pretrain_steps"):
        build_tiny_model(folder, seed=0, pretrain_steps=3, pretrain_lr=1e-3, pretrain_batch_size=4)
    with pytest.raises(FileExistsError, match="already exists"):
        build_tiny_model(tiny_dir, seed=0, pretrain_steps=2)
    with pytest.raises(ValueError, match="pretrain_steps=-1"):
        build_tiny_model(tmp_path / "bad", pretrain_steps=-1)
    with pytest.raises(FileExistsError, match="pretrain_text_batch_size"):
        build_tiny_model(
            folder,
            seed=0,
            pretrain_steps=2,
            pretrain_lr=1e-3,
            pretrain_batch_size=4,
            pretrain_text_batch_size=2,
        )


def test_pretraining_scenes_are_never_pair_images():

    def digest(img: Image.Image) -> str:
        return hashlib.sha256(img.convert("RGB").tobytes()).hexdigest()

    def has_white(img: Image.Image) -> bool:
        return (255, 255, 255) in {c for _, c in img.getcolors(56 * 56)}

    scenes = [
        pretrain.pretrain_scene(i, stream=s)[0] for s in ("train", "eval") for i in range(200)
    ]
    pairs = [
        p.images[0] for split in world.SPLITS for p in world.make_pairs(200, seed=0, split=split)
    ]
    pairs += [p.images[0] for p in world.make_pairs(100, seed=1, split="train")]
    assert not {digest(i) for i in scenes} & {digest(i) for i in pairs}
    # why, by construction: every pair image shows pure white, no pretraining image does
    assert all(has_white(i) for i in pairs) and not any(has_white(i) for i in scenes)
    assert len({digest(i) for i in scenes}) > 390  # scenes vary
    tasks = {pretrain.pretrain_scene(i)[2]["task"] for i in range(20)}
    assert tasks == {"scene", "bars"}


def test_attention_implementation_auto_and_explicit(tiny_dir, monkeypatch):
    """'auto' asks for FlashAttention-2 only where it can run; an explicit choice is passed on."""
    resolve = models.resolve_attn_implementation
    assert resolve("eager", torch.float32) == "eager"
    assert resolve(None, torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "flash_attn" else real_find_spec(name, *a),
    )
    assert resolve("auto", torch.bfloat16) is None  # no flash_attn package
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "flash_attn" else real_find_spec(name, *a),
    )
    assert resolve("auto", torch.bfloat16) == "flash_attention_2"
    assert resolve("auto", torch.float32) is None  # FlashAttention-2 needs a 16-bit dtype
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve("auto", torch.bfloat16) is None  # no GPU
    monkeypatch.undo()
    model, _ = load_model(tiny_dir, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    model, _ = load_model(tiny_dir)  # auto on CPU: transformers' default, not flash
    assert model.config._attn_implementation != "flash_attention_2"
