"""Batched VLM sampling (num_return_sequences, left padding, seeds) and completion log-probs."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch
from PIL import Image

from r1reward import decode, rollout
from r1reward.models import load_model
from r1reward.prompt import build_messages
from r1reward.rollout import (
    Completion,
    build_batch,
    completion_logprobs,
    encode,
    generate,
    stop_token_ids,
)
from r1reward.toy.tiny_model import build_tiny_model

QUESTIONS = [
    ("How many red circles are there?", "There are 3 red circles.", "There are 4.", "red"),
    ("What colour is the square?", "Blue.", "It is green, seen at the left.", "blue"),
    ("Is there a star at the top?", "Yes.", "No, there is none.", "green"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("rollout") / "tiny", seed=0)
    return load_model(path)


@pytest.fixture(scope="module")
def convs():
    return [
        build_messages(q, r1, r2, images=[Image.new("RGB", (56, 56), c)])
        for q, r1, r2, c in QUESTIONS
    ]


def test_encode_left_pads(tiny, convs):
    processor = tiny[1]
    enc = encode(processor, convs)
    mask = enc["attention_mask"]
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) > 1  # the prompts really differ in length
    assert bool((mask[:, -1] == 1).all())  # every prompt ends at the last column
    shortest = int(lengths.argmin())
    assert int(mask[shortest, 0]) == 0
    assert enc["pixel_values"].shape[0] == 16 * len(convs)
    assert enc["image_grid_thw"].shape == (len(convs), 3)


def test_k_completions_per_prompt_in_one_call(tiny, convs, monkeypatch):
    model, processor = tiny
    calls = []
    real = decode.sample  # rollout.generate's sampler (model.generate's tokens)

    def counting(*args, **kwargs):
        calls.append(kwargs.get("num_return_sequences"))
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, "sample", counting)
    t0 = time.perf_counter()
    out = generate(model, processor, convs, num_return_sequences=5, max_new_tokens=16, seed=0)
    dt = time.perf_counter() - t0
    print(f"\n{len(convs)} prompts x 5 samples x <=16 tokens: {dt:.2f} s")
    assert calls == [5]  # one sampler call for all prompts and samples
    assert [len(o) for o in out] == [5] * len(convs)
    for i, group in enumerate(out):
        for c in group:
            assert isinstance(c, Completion) and c.prompt_index == i
            assert 1 <= len(c.token_ids) <= 16
            assert c.finish in ("stop", "length")
            assert (c.finish == "length") == (
                len(c.token_ids) == 16 and c.token_ids[-1] not in stop_token_ids(processor)
            )
    # samples differ (random model, temperature 1)
    assert len({tuple(c.token_ids) for c in out[0]}) > 1


def test_batch_size_splits_calls(tiny, convs, monkeypatch):
    model, processor = tiny
    calls = []
    real = decode.sample
    monkeypatch.setattr(decode, "sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = generate(model, processor, convs, num_return_sequences=2, max_new_tokens=4, batch_size=2)
    assert len(calls) == 2 and [len(o) for o in out] == [2, 2, 2]
    assert [c.prompt_index for o in out for c in o] == [0, 0, 1, 1, 2, 2]


def test_seed_makes_sampling_reproducible_and_leaves_global_rng(tiny, convs):
    model, processor = tiny
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate(model, processor, convs, num_return_sequences=3, max_new_tokens=6, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = generate(model, processor, convs, num_return_sequences=3, max_new_tokens=6, seed=7)
    c = generate(model, processor, convs, num_return_sequences=3, max_new_tokens=6, seed=8)
    assert a == b
    assert a != c


def test_left_padded_batch_gives_the_unbatched_greedy_output(tiny, convs):
    model, processor = tiny
    batched = generate(model, processor, convs, do_sample=False, max_new_tokens=12)
    for i, conv in enumerate(convs):
        alone = generate(model, processor, [conv], do_sample=False, max_new_tokens=12)
        assert batched[i][0].token_ids == alone[0][0].token_ids
    greedy_k = generate(
        model, processor, convs[:1], do_sample=False, num_return_sequences=3, max_new_tokens=4
    )
    assert len(greedy_k[0]) == 3 and len({tuple(c.token_ids) for c in greedy_k[0]}) == 1


def test_stop_at_im_end_and_text_keeps_tags(tiny, convs, monkeypatch):
    """Force the model to write a tagged answer then <|im_end|>, through a logits bias."""
    model, processor = tiny
    tok = processor.tokenizer
    target = tok.encode("<think>ok</think><answer>2</answer><|im_end|>", add_special_tokens=False)

    class Force(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.step = 0

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.start
            forced = torch.full_like(scores, -1e9)
            forced[:, target[min(step, len(target) - 1)]] = 0
            return forced

    force = Force()
    real = decode.sample  # the sampler under rollout.generate (generate for the first token)

    def with_processor(model, inputs, **kwargs):
        force.start = inputs["input_ids"].shape[1]
        kwargs["processors"] = [force, *kwargs.get("processors", ())]
        return real(model, inputs, **kwargs)

    monkeypatch.setattr(decode, "sample", with_processor)
    out = generate(model, processor, convs, num_return_sequences=2, max_new_tokens=30)
    for c in (c for o in out for c in o):
        assert c.finish == "stop"
        assert c.token_ids == target
        assert c.text == "<think>ok</think><answer>2</answer>"


def test_progress_bar_and_engine_hook(tiny, convs, capsys):
    model, processor = tiny
    generate(model, processor, convs[:1], max_new_tokens=2, progress=True)
    assert "generate" in capsys.readouterr().err
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="pip install vllm"):
            generate(model, processor, convs, engine="vllm")
    with pytest.raises(ValueError, match="expected 'transformers' or 'vllm'"):
        generate(model, processor, convs, engine="sglang")


def test_bad_inputs_name_what_is_wrong(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="num_return_sequences=0"):
        generate(model, processor, [[]], num_return_sequences=0)
    with pytest.raises(TypeError, match="conversation 0: expected a list of chat messages"):
        encode(processor, ["just a string"])
    with pytest.raises(ValueError, match="conversation 1, message 0"):
        encode(processor, [[{"role": "user", "content": "hi"}], [{"role": "user"}]])


def test_completion_logprobs_match_a_full_forward(tiny, convs):
    model, processor = tiny
    out = generate(model, processor, convs, max_new_tokens=6, seed=3)
    completions = [o[0] for o in out]
    batch, mask = build_batch(processor, convs, completions)
    bsz, t = batch["input_ids"].shape
    assert mask.shape == (bsz, t)
    assert mask.sum(1).tolist() == [len(c.token_ids) for c in completions]
    model.eval()
    lp = completion_logprobs(model, batch, mask)
    assert lp.shape == (bsz, t)
    assert bool((lp[mask == 0] == 0).all())
    assert bool((lp[mask == 1] < 0).all())
    with torch.no_grad():
        logits = model(**batch).logits.float()
    ref = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    ref = torch.cat([torch.zeros(bsz, 1), ref], 1) * mask
    torch.testing.assert_close(lp.detach(), ref, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        hot = completion_logprobs(model, batch, mask, temperature=2.0)
    ref2 = torch.log_softmax(logits[:, :-1] / 2.0, -1).gather(-1, batch["input_ids"][:, 1:, None])
    ref2 = torch.cat([torch.zeros(bsz, 1), ref2[..., 0]], 1) * mask
    torch.testing.assert_close(hot, ref2, atol=1e-4, rtol=1e-4)
    # gradients flow for the policy loss
    lp.sum().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_completion_logprobs_equal_the_sampling_distribution(tiny, convs):
    """The log-probs of greedy tokens equal generate's own (processed) scores."""
    model, processor = tiny
    model.eval()
    enc = encode(processor, convs[:2])
    with torch.no_grad():
        gen = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=6,
            output_logits=True,
            return_dict_in_generate=True,
            eos_token_id=[],
            pad_token_id=0,
        )
    new = gen.sequences[:, enc["input_ids"].shape[1] :]
    expected = torch.stack(
        [
            torch.log_softmax(s.float(), -1).gather(-1, new[:, j : j + 1])[:, 0]
            for j, s in enumerate(gen.logits)
        ],
        1,
    )
    batch, mask = build_batch(processor, convs[:2], new.tolist())
    with torch.no_grad():
        lp = completion_logprobs(model, batch, mask)
    torch.testing.assert_close(lp[:, -new.shape[1] :], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_equal_a_full_forward_and_leave_sampling_alone(tiny, convs, temperature):
    """generate(return_logprobs=True) records each sampled token's log-prob at the sampling
    temperature (what the trainer's separate pass computes) without changing what is sampled;
    rows that stopped early keep only their own tokens' log-probs."""
    model, processor = tiny
    kw = dict(
        num_return_sequences=2, temperature=temperature, max_new_tokens=10, batch_size=3, seed=5
    )
    got = generate(model, processor, convs, return_logprobs=True, **kw)
    plain = generate(model, processor, convs, **kw)
    flat = [c for g in got for c in g]
    assert [c.token_ids for c in flat] == [c.token_ids for g in plain for c in g]
    assert all(c.logprobs is None for g in plain for c in g)
    batch, mask = build_batch(processor, [convs[c.prompt_index] for c in flat], flat)
    model.eval()
    with torch.no_grad():
        lp = completion_logprobs(model, batch, mask, temperature=temperature)
    width = max(len(c.token_ids) for c in flat)
    for i, c in enumerate(flat):
        assert len(c.logprobs) == len(c.token_ids)
        start = lp.shape[1] - width
        torch.testing.assert_close(
            torch.tensor(c.logprobs), lp[i, start : start + len(c.token_ids)], atol=1e-4, rtol=1e-4
        )
    greedy = generate(
        model, processor, convs[:1], do_sample=False, max_new_tokens=4, return_logprobs=True
    )
    assert greedy[0][0].logprobs is None  # greedy decoding has no sampling distribution to record


def test_checkpoint_generation_defaults_do_not_change_sampling(tiny, convs):
    """Qwen2.5-VL-Instruct ships top_k=1 and repetition_penalty=1.05 in generation_config;
    generate() samples from the plain tempered distribution regardless."""
    model, processor = tiny
    saved = model.generation_config.to_dict()
    model.generation_config.top_k = 1  # would make every sample the greedy one
    model.generation_config.repetition_penalty = 5.0
    try:
        out = generate(
            model, processor, convs[:1], num_return_sequences=6, max_new_tokens=8, seed=0
        )
    finally:
        model.generation_config.top_k = saved.get("top_k")
        model.generation_config.repetition_penalty = saved.get("repetition_penalty")
    assert len({tuple(c.token_ids) for c in out[0]}) > 1
    with pytest.raises(ValueError, match="temperature=-1"):
        generate(model, processor, convs[:1], temperature=-1)


def test_images_given_as_paths_encode_like_pil_images(tiny, tmp_path):
    processor = tiny[1]
    img = Image.new("RGB", (56, 56), "orange")
    img.putpixel((3, 4), (0, 0, 255))
    img.save(tmp_path / "x.png")
    as_pil = encode(processor, [build_messages("Q?", "a", "b", images=[img])])
    as_path = encode(processor, [build_messages("Q?", "a", "b", images=[str(tmp_path / "x.png")])])
    hf_style = [{"role": "user", "content": [{"type": "image", "path": str(tmp_path / "x.png")}]}]
    hf_style[0]["content"].append({"type": "text", "text": "Q?"})
    torch.testing.assert_close(as_pil["pixel_values"], as_path["pixel_values"])
    assert torch.equal(as_pil["input_ids"], as_path["input_ids"])
    assert encode(processor, [hf_style])["pixel_values"].shape == as_pil["pixel_values"].shape
    bad = [{"role": "user", "content": [{"type": "image", "img": img}]}]
    with pytest.raises(ValueError, match="conversation 0, message 0: image item without"):
        encode(processor, [bad])


def test_frozen_vision_cache_runs_the_tower_once_per_image_and_changes_nothing(tiny, convs):
    """Inside frozen_vision_cache a frozen vision tower runs once per distinct image -- in the
    sampling pass, under inference mode -- and a later scoring pass with gradients reuses it;
    samples and log-probs equal those without the cache, and the model is restored after."""
    from r1reward.rollout import frozen_vision_cache

    model, processor = tiny
    owner = model.model
    calls = []
    forward = owner.visual.forward
    owner.visual.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    try:
        kw = dict(num_return_sequences=2, max_new_tokens=8, batch_size=3, seed=2)
        plain = generate(model, processor, convs, **kw)
        flat = [c for g in plain for c in g]
        batch, mask = build_batch(processor, [convs[c.prompt_index] for c in flat], flat)
        model.eval()
        ref = completion_logprobs(model, batch, mask)
        for p in owner.visual.parameters():
            p.requires_grad_(False)
        calls.clear()
        with frozen_vision_cache(model) as cache:
            cached = generate(model, processor, convs, **kw)
            lp = completion_logprobs(model, batch, mask)  # with gradients: the update's pass
            lp.sum().backward()
        assert len(calls) == 1 and len(cache) == len(convs)  # one tower call, one entry per image
        assert [c.token_ids for g in cached for c in g] == [c.token_ids for c in flat]
        torch.testing.assert_close(lp.detach(), ref, atol=1e-6, rtol=1e-6)
        assert "get_image_features" not in vars(owner)
        next(owner.visual.parameters()).requires_grad_(True)  # a trained tower: no cache
        with frozen_vision_cache(model) as cache:
            completion_logprobs(model, batch, mask)
        assert cache == {}
    finally:
        owner.visual.forward = forward
        for p in owner.visual.parameters():
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)


def test_encode_each_equals_one_by_one(tiny, convs):
    """RL keeps each prompt's encoding; one batched call cut into rows gives exactly the
    encodings of one call per conversation (two images, none, different lengths)."""
    processor = tiny[1]
    two = build_messages(
        "Which picture has more red?",
        "The first.",
        "The second, clearly.",
        images=[Image.new("RGB", (56, 56), "red"), Image.new("RGB", (112, 56), "blue")],
    )
    none = build_messages("What is 2 + 2?", "4.", "5.", images=[])
    mixed = [convs[1], two, none, convs[0]]
    got = rollout.encode_each(processor, mixed)
    want = [dict(encode(processor, [c])) for c in mixed]
    assert [sorted(g) for g in got] == [sorted(w) for w in want]
    for g, w in zip(got, want):
        for key in w:
            assert torch.equal(g[key], w[key]), key
    assert got[1]["image_grid_thw"].shape[0] == 2 and "pixel_values" not in got[2]
