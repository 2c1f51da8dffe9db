"""r1reward.decode.sample returns model.generate's tokens bit for bit, and falls back to it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from r1reward import decode, rollout
from r1reward.models import load_model
from r1reward.prompt import build_messages
from r1reward.rollout import encode
from r1reward.toy.tiny_model import build_tiny_model

QUESTIONS = [
    ("How many red circles are there?", "There are 3 red circles.", "There are 4.", "red"),
    ("What colour is the square?", "Blue.", "It is green, seen at the left.", "blue"),
    ("Is there a star at the top?", "Yes.", "No, there is none, I looked twice.", "green"),
]
#: 12 of the untrained model's ~1,000 tokens end a row: rows stop at different steps, some run
#: to the limit (or to the longest row)
STOPS = list(range(14, 26))


def _sharpen(model) -> None:
    """Scale the language model's projections up: a freshly initialised model is so close to
    uniform that a decode step attending to the wrong keys can still return the same bits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" in name and name.endswith("proj.weight"):
                p.mul_(6.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("decode") / "m", seed=0)
    model, processor = load_model(path)
    _sharpen(model)
    return model.eval(), processor


@pytest.fixture(scope="module")
def convs():
    return [
        build_messages(q, r1, r2, images=[Image.new("RGB", (56, 56), c)])
        for q, r1, r2, c in QUESTIONS
    ]


def _hf(model, batch, *, max_new_tokens, do_sample, temperature=1.0, k=1, **extra):
    kwargs = dict(
        eos_token_id=STOPS, pad_token_id=0, repetition_penalty=1.0, no_repeat_ngram_size=0
    )
    if do_sample:
        kwargs.update(
            do_sample=True, temperature=temperature, top_p=1.0, top_k=0, typical_p=1.0,
            num_return_sequences=k,
        )  # fmt: skip
    else:
        kwargs.update(do_sample=False, num_return_sequences=1)
    return model.generate(**batch, max_new_tokens=max_new_tokens, **kwargs, **extra)


def _both(model, batch, seed, **settings):
    extra = {k: settings.pop(k) for k in ("min_new_tokens", "suppress_tokens") if k in settings}
    torch.manual_seed(seed)
    with torch.inference_mode():
        expected = _hf(model, batch, **settings, **extra)
    torch.manual_seed(seed)
    with torch.inference_mode():
        got = decode.sample(
            model,
            batch,
            max_new_tokens=settings["max_new_tokens"],
            stop_ids=STOPS,
            pad_id=0,
            do_sample=settings["do_sample"],
            temperature=settings.get("temperature", 1.0),
            num_return_sequences=settings.get("k", 1),
            **extra,
        )
    return expected, got


@pytest.mark.parametrize(
    "settings",
    [
        dict(max_new_tokens=40, do_sample=True),
        dict(max_new_tokens=40, do_sample=True, temperature=0.7, k=3),
        dict(max_new_tokens=25, do_sample=False),
        dict(max_new_tokens=2, do_sample=True, k=2),
        dict(max_new_tokens=30, do_sample=True, k=2, min_new_tokens=30, suppress_tokens=[11, 12]),
    ],
    ids=["sample", "temperature-k3", "greedy", "two-tokens", "fixed-length"],
)
def test_sample_equals_generate_token_for_token(tiny, convs, settings):
    model, processor = tiny
    batch = encode(processor, convs)  # three prompts of different lengths: left padding
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1
    expected, got = _both(model, batch, 3, **settings)
    assert decode.supported(model)
    assert torch.equal(got, expected)
    new = got[:, batch["input_ids"].shape[1] :]
    if (
        settings["do_sample"]
        and settings["max_new_tokens"] > 2
        and "min_new_tokens" not in settings
    ):
        # the stop tokens really ended rows at different steps, and padded them afterwards
        stopped = torch.isin(new, torch.tensor(STOPS))
        ends = {int(r.nonzero()[0]) if r.any() else new.shape[1] for r in stopped}
        assert len(ends) > 1
        for row, end in zip(new, (int(r.nonzero()[0]) if r.any() else None for r in stopped)):
            if end is not None:
                assert bool((row[end + 1 :] == 0).all())  # padded after its stop token
    if "min_new_tokens" in settings:
        assert new.shape[1] == 30 and not torch.isin(new, torch.tensor(STOPS + [11, 12])).any()


def test_one_prompt_without_padding(tiny, convs):
    """No padded row: the attention runs without a mask (create_causal_mask's None)."""
    model, processor = tiny
    batch = encode(processor, convs[:1])
    expected, got = _both(model, batch, 5, max_new_tokens=30, do_sample=True, k=2)
    assert torch.equal(got, expected)


def test_lora_adapter_is_applied(tiny, convs):
    """A peft-wrapped policy: the decode loop calls the LoRA layers, not their base weights."""
    from peft import LoraConfig, get_peft_model

    model, processor = load_model(tiny[0].name_or_path)  # a copy of its own, to wrap
    _sharpen(model)
    lora = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # an adapter that changes the outputs
    lora.eval()
    batch = encode(processor, convs)
    expected, got = _both(lora, batch, 7, max_new_tokens=30, do_sample=True)
    assert torch.equal(got, expected)
    with lora.disable_adapter():
        plain, _ = _both(lora, batch, 7, max_new_tokens=30, do_sample=True)
    assert not torch.equal(got, plain)  # the adapter changed what was sampled


def test_rollout_generate_records_the_same_logprobs(tiny, convs, monkeypatch):
    """The whole sampling path of RL and evaluation (rollout.generate with the sampler's
    log-probs) gives identical completions with the decode loop and with generate alone."""
    model, processor = tiny
    kw = dict(num_return_sequences=2, max_new_tokens=30, seed=11, return_logprobs=True)
    fast = rollout.generate(model, processor, convs, **kw)
    monkeypatch.setattr(decode, "supported", lambda *a, **k: False)
    slow = rollout.generate(model, processor, convs, **kw)
    assert [[(c.token_ids, c.logprobs, c.text, c.finish) for c in g] for g in fast] == [
        [(c.token_ids, c.logprobs, c.text, c.finish) for c in g] for g in slow
    ]
    assert any(c.logprobs for g in fast for c in g)


def test_falls_back_to_generate(tiny, convs, monkeypatch):
    """top-p below 1 (and a model in training mode) is generate's alone: one call, all tokens."""
    model, processor = tiny
    batch = encode(processor, convs)
    assert not decode.supported(model, top_p=0.9)
    model.train()
    try:
        assert not decode.supported(model)
    finally:
        model.eval()
    calls = []
    original = type(model).generate

    def spy(self, *args, **kwargs):
        calls.append(kwargs["max_new_tokens"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "generate", spy)
    with torch.inference_mode():
        decode.sample(
            model, batch, max_new_tokens=12, stop_ids=STOPS, pad_id=0, do_sample=True, top_p=0.9
        )
        decode.sample(model, batch, max_new_tokens=12, stop_ids=STOPS, pad_id=0, do_sample=True)
    assert calls == [12]  # the fallback ran generate for all 12 tokens; the loop never calls it


def test_checkpoint_processors_send_the_call_to_generate(tiny, convs):
    """A generation_config that adds a processor the loop does not apply (here bad words) is
    left to generate, which applies it; the loop's output would otherwise differ."""
    model, processor = tiny
    assert decode.supported(model)
    batch = encode(processor, convs)
    settings = dict(max_new_tokens=20, stop_ids=STOPS, pad_id=0, do_sample=False)
    with torch.inference_mode():
        plain = decode.sample(model, batch, **settings)[:, batch["input_ids"].shape[1] :]
    word = int(plain[0, 0])  # a token greedy decoding chooses
    model.generation_config.bad_words_ids = [[word]]
    try:
        assert not decode.supported(model)
        with torch.inference_mode():
            out = decode.sample(model, batch, **settings)[:, batch["input_ids"].shape[1] :]
        assert not bool((out == word).any())  # generate applied the checkpoint's bad word
    finally:
        model.generation_config.bad_words_ids = None
    assert decode.supported(model)
    model.generation_config.forced_bos_token_id = 0  # token id 0 is a real forced token
    try:
        assert not decode.supported(model)
    finally:
        model.generation_config.forced_bos_token_id = None
    assert decode.supported(model)
