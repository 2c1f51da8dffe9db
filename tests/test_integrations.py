"""The judge as other trainers' reward: the service's reward routes, OpenRLHF's remote protocol,
TRL's GRPOTrainer over HTTP, and the verl reward file.

Two servers: ``r1reward serve`` started as a real subprocess on 127.0.0.1 with the (untrained)
tiny model, and an in-process server with a rule judge (the response naming the larger number is
better), whose answers are checkable one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from r1reward.chapters.judge_use import served_judge
from r1reward.evaluate import FunctionSampler
from r1reward.integrations.trl import AsyncJudgeReward, JudgeReward, cpu_grpo_config, message_text
from r1reward.reward_api import MAX_GROUP, split_query
from r1reward.serve import BackgroundServer, Engine, Limits, create_app
from r1reward.serve.client import GROUP, PAIR, RewardClient

LIMITS = Limits(max_k=4, max_body_bytes=400_000, max_image_bytes=40_000)
IMAGE = Image.new("RGB", (56, 56), (200, 30, 30))


def _by_number(conversation, sample_index, seed) -> str:
    """The response whose last word is the larger number is better ("2" on a tie)."""
    text = conversation[0]["content"][-1]["text"]
    first = text.split("###### [Response 1]:\n")[1].split("###### [Response 2]:")[0]
    second = text.split("###### [Response 2]:\n")[1].split("###### **Output")[0]
    a, b = (int(r.split()[-1]) for r in (first, second))
    return f"<think>{a} against {b}.</think><answer>{1 if a > b else 2}</answer>"


@pytest.fixture(scope="module")
def rule_server() -> Iterator[BackgroundServer]:
    engine = Engine(None, None, "rule", sampler=FunctionSampler(_by_number, "by-number"))
    with BackgroundServer(create_app(engine, LIMITS)) as server:
        yield server
    engine.close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from r1reward.toy.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny"))


_SERVE_FAILED: list[str] = []


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory) -> Iterator[str]:
    """``r1reward serve`` as a subprocess (the command users run), 8-token judgments."""
    if _SERVE_FAILED:  # a failed start is not retried for every test of the module
        pytest.fail(_SERVE_FAILED[0])
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(
                served_judge(
                    tiny_model,
                    reward_max_tokens=8,
                    log_path=log,
                    extra_args=["--threads", "1", "--max-k", "4"],
                )
            )
        except RuntimeError as exc:  # exited, or no /health within 600 s (a starved 2-core box)
            _SERVE_FAILED.append(str(exc))
            pytest.fail(_SERVE_FAILED[0])
        yield url


def _chatml(question: str) -> str:
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
    )


# ----------------------------------------------------------------------------- /v1/reward
def test_reward_score_is_never_null_with_an_untrained_model(served) -> None:
    """8 tokens from an untrained model never make a parseable verdict: the votes are empty,
    the score read from the verdict distribution is still a number."""
    from r1reward.clients import image_to_data_url

    bodies = [
        {
            "question": "How many circles?",
            "response_1": "Two.",
            "response_2": "Three.",
            "images": [image_to_data_url(IMAGE)],
        },
        {"question": "q", "response_1": "a", "response_2": "b", "k": 2, "seed": 1},
        {"question": "q", "response_1": "a", "response_2": "b", "both_orders": False},
        {"question": "", "response_1": "", "response_2": ""},
    ]
    unparsed = 0
    for body in bodies:
        r = httpx.post(served + "/v1/reward", json=body, timeout=120)
        assert r.status_code == 200, r.text
        out = r.json()
        assert isinstance(out["score"], float) and 0.0 <= out["score"] <= 1.0
        orders = out["p_1_orders"]
        assert out["score"] == pytest.approx(sum(orders.values()) / len(orders))
        if body.get("both_orders", True):
            assert out["order_gap"] == pytest.approx(abs(orders["as-given"] - orders["swapped"]))
            assert out["swap_disagreement"] == (out["order_gap"] > 0.5)
        else:
            assert out["order_gap"] is None and list(orders) == ["as-given"]
        assert (
            len(out["p_first"]) == len(out["texts"]) == (1 if "k" not in body else 2) * len(orders)
        )
        unparsed += out["p_1"] is None
    assert unparsed >= 1  # the case the score exists for did occur


# ------------------------------------------------------------------------------- OpenRLHF
def test_openrlhf_shaped_request_gets_one_reward_per_row(served, tiny_model) -> None:
    """The payload OpenRLHF's agent posts: query = decode(prompt + response tokens) with the
    special tokens, the prompt string, the label; sent as one batch and as single rows."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    questions = ["How many circles are there?", "Which colour is the square?", "Is it left?"]
    responses = ["There are 3 circles.", "Red.", "No, it is on the right."]
    labels = ["3", "Blue.", "No."]
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    queries = [
        tok.decode(
            tok(p + r + "<|im_end|>", add_special_tokens=False)["input_ids"],
            skip_special_tokens=False,
        )
        for p, r in zip(prompts, responses)
    ]
    payload = {"query": queries, "prompts": prompts, "labels": labels}
    r = httpx.post(served + "/get_reward", json=payload, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert len(out["rewards"]) == len(out["scores"]) == 3
    assert all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in out["rewards"])
    assert all(len(v) == 3 for v in out["extra_logs"].values())
    single = httpx.post(
        served + "/get_reward",
        json={"query": queries[:1], "prompts": prompts[:1], "labels": labels[:1]},
        timeout=120,
    ).json()
    assert len(single["rewards"]) == 1


def test_split_query_recovers_question_and_response() -> None:
    prompt = _chatml("How many?")
    assert split_query(prompt + "Three.<|im_end|><|endoftext|>", prompt) == ("How many?", "Three.")
    # the decoded query has the image tokens expanded, so it does not start with the prompt
    expanded = prompt.replace("<|image_pad|>", "<|image_pad|>" * 4) + "Two<|im_end|>"
    assert split_query(expanded, prompt) == ("How many?", "Two")
    assert split_query("Q: what?\nA:" + " yes", "Q: what?\nA:") == ("Q: what?\nA:", "yes")
    with pytest.raises(ValueError, match=r"query\[4\]: does not start with its prompt"):
        split_query("something else", "a prompt", row=4)


def test_get_reward_judges_each_response_against_its_label(rule_server) -> None:
    prompt = _chatml("Pick a number")
    payload = {
        "query": [prompt + "answer 9<|im_end|>", prompt + "answer 2<|im_end|>", "P: answer 5"],
        "prompts": [prompt, prompt, "P:"],
        "labels": ["answer 5", "answer 5", "answer 4"],
        "extra_field_from_a_newer_client": 1,
    }
    out = httpx.post(rule_server.url + "/get_reward", json=payload).json()
    assert out["rewards"] == [1.0, 0.0, 1.0] and out["scores"] == out["rewards"]
    assert out["extra_logs"]["order_gap"] == [0.0, 0.0, 0.0]

    def error(body: dict) -> str:
        r = httpx.post(rule_server.url + "/get_reward", json=body)
        assert r.status_code == 400, r.text
        return r.json()["error"]["message"]

    assert "labels is missing" in error({"query": payload["query"]})
    assert "labels has 1 rows but query has 3" in error({**payload, "labels": ["x"]})
    assert "labels[1] is None" in error({**payload, "labels": ["a", None, "b"]})
    assert "query[0]: does not start" in error({"query": ["x"], "prompts": ["y"], "labels": ["z"]})
    assert "k=9 is out of range" in error({**payload, "k": 9})


# ------------------------------------------------------------------- reference and group
def test_reference_and_group_routes(rule_server) -> None:
    with RewardClient(rule_server.url) as client:
        ref = client.reference("q", ["answer 1", "answer 8"], "answer 5", images=[IMAGE], k=2)
        assert ref["scores"] == [0.0, 1.0] and ref["order_gaps"] == [0.0, 0.0]
        assert len(ref["results"][0]["texts"]) == 4
        group = client.group("q", ["answer 3", "answer 7", "answer 5"])
        assert group["ranking"] == [1, 2, 0] and group["judgments"] == 6
        assert group["win_rates"] == [0.0, 1.0, 0.5]
        assert group["scores"][1] > group["scores"][2] > group["scores"][0]
        pair = client.pair("q", "answer 4", "answer 2")
        assert pair["score"] == 1.0 and pair["preferred"] == 1
        too_many = [f"answer {i}" for i in range(MAX_GROUP + 1)]
        with pytest.raises(RuntimeError, match=f"at most {MAX_GROUP}"):
            client.group("q", too_many)
        with pytest.raises(RuntimeError, match="unknown field 'respones'"):
            client.post("/v1/reward/group", {"question": "q", "respones": ["a"]})
        answers = asyncio.run(
            client.apost_many(
                [
                    (GROUP, client.group_body("q", ["answer 1", "answer 2"])),
                    (PAIR, client.pair_body("q", "answer 1", "answer 2")),
                ]
            )
        )
        assert answers[0]["ranking"] == [1, 0] and answers[1]["score"] == 0.0


# ----------------------------------------------------------------------------------- TRL
def test_trl_reward_functions_group_rows_by_prompt(rule_server) -> None:
    prompts = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q1"}]}]
    ] * 3
    prompts += ["q2", "q2"]
    completions = [[{"role": "assistant", "content": f"answer {n}"}] for n in (1, 3, 2)]
    completions += ["answer 5", "answer 4"]
    reference = ["answer 2"] * 5
    sync = JudgeReward(url=rule_server.url, group_score="win_rate")
    assert message_text(prompts[0]) == "q1"
    assert sync(prompts, completions) == [0.0, 1.0, 0.5, 1.0, 0.0]
    ref = AsyncJudgeReward(url=rule_server.url, mode="reference")
    assert asyncio.run(ref(prompts, completions, reference=reference)) == [0.0, 1.0, 0.5, 1.0, 1.0]
    with pytest.raises(KeyError, match="no column 'reference'"):
        JudgeReward(url=rule_server.url, mode="reference")(prompts, completions, answer=reference)


def test_trl_reward_functions_judge_in_process() -> None:
    """The local backend: the same rewards without a server (scorer=...), sync and async."""
    from r1reward.verdict_scorers import SamplerVerdicts

    scorer = SamplerVerdicts(FunctionSampler(_by_number))
    prompts = ["q1", "q1", "q2", "q2"]
    completions = ["answer 2", "answer 6", "answer 1", "answer 0"]
    image = [IMAGE, IMAGE, None, None]
    group = JudgeReward(scorer=scorer, group_score="win_rate")
    assert group(prompts, completions, image=image) == [0.0, 1.0, 1.0, 0.0]
    bt = JudgeReward(scorer=scorer)(prompts, completions, image=image)
    assert bt[1] > 0 > bt[0] and bt[0] + bt[1] == pytest.approx(0.0, abs=1e-9)
    ref = AsyncJudgeReward(scorer=scorer, mode="reference", reference_column="answer")
    assert asyncio.run(ref(prompts, completions, answer=["answer 3"] * 4)) == [0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="exactly one of url=, scorer= or model="):
        JudgeReward()


def test_openrlhf_reward_func_file_posts_to_the_server(rule_server, monkeypatch) -> None:
    from r1reward.integrations.openrlhf import reward_func

    monkeypatch.setenv("R1REWARD_URL", rule_server.url)
    prompt = _chatml("Pick")
    out = reward_func([prompt + "answer 7<|im_end|>"], [prompt], ["answer 6"])
    assert out["rewards"].tolist() == [1.0] and out["scores"].tolist() == [1.0]
    assert out["extra_logs"]["swap_disagreement"] == [0.0]
    with pytest.raises(RuntimeError, match=r"/get_reward answered 400: query\[0\]: does not start"):
        reward_func(["something else"], [prompt], ["answer 6"])


def test_trl_grpo_trainer_trains_on_the_judge_over_http(served, tiny_model, tmp_path) -> None:
    """TRL's GRPOTrainer takes steps on the toy with rewards from `r1reward serve` over HTTP:
    a sync group-ranking reward and an async reward against the reference answer."""
    import datasets
    from trl import GRPOTrainer

    from r1reward.models import load_model
    from r1reward.toy.world import make_pairs

    pairs = make_pairs(4, seed=0)
    ds = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": p.question}],
                "image": p.images[0],
                "reference": p.response_1 if p.preferred == 1 else p.response_2,
            }
            for p in pairs
        ]
    )
    seen: list[list[float]] = []

    class Recording(JudgeReward):
        def __call__(self, prompts, completions, **kwargs):
            rewards = super().__call__(prompts, completions, **kwargs)
            seen.append(rewards)
            return rewards

    health = httpx.get(served + "/health").json()
    policy, processor = load_model(tiny_model)
    config = cpu_grpo_config(
        tmp_path,
        seed=0,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        beta=0.0,
        learning_rate=1e-5,
        max_steps=2,
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[
            Recording(url=served, name="judge_group"),
            AsyncJudgeReward(url=served, mode="reference", name="judge_reference"),
        ],
        args=config,
        train_dataset=ds,
        processing_class=processor,
    )
    trainer.train()
    assert trainer.state.global_step == 2
    logs = [h for h in trainer.state.log_history if "rewards/judge_group/mean" in h]
    assert len(logs) == 2
    for h in logs:
        assert math.isfinite(h["rewards/judge_group/mean"])
        assert 0.0 <= h["rewards/judge_reference/mean"] <= 1.0
        assert 0.0 <= h["r1reward/order_gap"] <= 1.0  # logged through TRL's log_metric
    # 4 completions a step in groups of 2: Bradley-Terry strengths are centred in each group
    assert [len(r) for r in seen] == [4, 4]
    for rewards in seen:
        assert rewards[0] + rewards[1] == pytest.approx(0.0, abs=1e-9)
        assert rewards[2] + rewards[3] == pytest.approx(0.0, abs=1e-9)
    after = httpx.get(served + "/health").json()
    # per step: 2 group requests (2 judgments each) + 2 reference requests (2 rows x 2 orders)
    assert after["requests"] - health["requests"] == 2 * 4


# ---------------------------------------------------------------------------------- verl
def test_verl_reward_file(rule_server) -> None:
    from r1reward.integrations import verl

    info = {"question": "q"}
    out = verl.compute_score("toy", "answer 9", "answer 3", info, url=rule_server.url)
    assert out == {"score": 1.0, "order_gap": 0.0, "swap_disagreement": 0.0}
    out = asyncio.run(
        verl.compute_score_async("toy", "answer 1", "answer 3", info, url=rule_server.url)
    )
    assert out["score"] == 0.0
    batch = verl.compute_score_batch(
        ["toy"] * 3,
        ["answer 1", "answer 5", "answer 3"],
        ["answer 3"] * 3,
        [info] * 3,
        url=rule_server.url,
    )
    assert [b["score"] for b in batch] == [0.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="ground_truth is None"):
        verl.compute_score("toy", "answer 1", None, info, url=rule_server.url)
