"""``r1reward serve``: the real server on 127.0.0.1 with the tiny model, and its parts.

One uvicorn server per module runs on a free loopback port with the tiny Qwen2.5-VL (built into a
temporary folder). It is spoken to with the ``openai`` client and with plain HTTP (httpx). A second
server runs a deterministic rule sampler instead of the model, so that 64 concurrent requests
can be checked for the *right* answer each (a batching mix-up between requests would show).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import os
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from r1reward.chapters.judge_use import served_judge
from r1reward.evaluate import FunctionSampler
from r1reward.serve.app import create_app
from r1reward.serve.batching import MicroBatcher
from r1reward.serve.cli import build_parser
from r1reward.serve.client import RewardClient
from r1reward.serve.engine import Engine, build_engine
from r1reward.serve.images import load_image
from r1reward.serve.limits import Limits, flag_name, limits_from_args
from r1reward.serve.schema import APIError
from r1reward.serve.server import BackgroundServer

LIMITS = Limits(max_image_bytes=40_000, max_body_bytes=400_000, max_k=4, max_n=3, max_tokens=64)
MAX_TOKENS = 8  # judgment budget of the tiny server: fast, and the tiny model is untrained anyway


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


SMALL_IMAGE = _data_url(Image.new("RGB", (56, 56), (200, 30, 30)))


def _noise_image(size: int) -> str:
    return _data_url(Image.effect_noise((size, size), 120).convert("RGB"))


# -------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """The folder the tiny server may read local images from (--image-root)."""
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, image_root) -> Iterator[BackgroundServer]:
    import torch

    from r1reward.toy.tiny_model import build_tiny_model

    # one torch thread: the generate thread shares 2 cores with the test client and the server's
    # event loop, and oversubscribed intra-op threads make a loaded 2-core machine crawl
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")
    engine = build_engine(str(path), name="tiny", reward_max_tokens=MAX_TOKENS, batch_size=32)
    limits = dataclasses.replace(LIMITS, allow_local_images=True, image_root=str(image_root))
    with BackgroundServer(create_app(engine, limits)) as server:
        server.engine = engine
        yield server
    engine.close()
    torch.set_num_threads(threads)


def _rule_judgment(conversation, sample_index, seed) -> str:
    """A deterministic judge: the response containing 'RIGHT' is better."""
    text = conversation[0]["content"][-1]["text"]
    first = text.split("###### [Response 1]:\n")[1].split("###### [Response 2]:")[0]
    answer = 1 if "RIGHT" in first else 2
    return f"<think>Response {answer} is better.</think><answer>{answer}</answer>"


@pytest.fixture(scope="module")
def rule_server() -> Iterator[BackgroundServer]:
    engine = Engine(None, None, "rule", sampler=FunctionSampler(_rule_judgment, "rule"))
    with BackgroundServer(create_app(engine, LIMITS)) as server:
        server.engine = engine
        yield server
    engine.close()


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


def _check_reward(body: dict, k: int, both_orders: bool = True) -> None:
    """The fields of a /v1/reward answer agree with each other."""
    n = k * (2 if both_orders else 1)
    assert len(body["answers"]) == len(body["analyses"]) == len(body["orders"]) == n
    assert set(body["orders"]) == ({"as-given", "swapped"} if both_orders else {"as-given"})
    votes = body["votes"]
    assert votes["1"] == body["answers"].count(1)
    assert votes["2"] == body["answers"].count(2)
    assert votes["1"] + votes["2"] + votes["unparseable"] == n
    if votes["1"] + votes["2"]:
        assert body["p_1"] == pytest.approx(votes["1"] / (votes["1"] + votes["2"]))
    else:
        assert body["p_1"] is None
    expected = None if votes["1"] == votes["2"] else (1 if votes["1"] > votes["2"] else 2)
    assert body["preferred"] == expected
    assert body["tie"] == (votes["1"] == votes["2"] > 0)
    assert 0.0 <= body["well_formed_rate"] <= 1.0


# ---------------------------------------------------------------------------- openai client
def test_openai_client_models_and_chat(tiny_server) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == ["tiny"]
    reply = client.chat.completions.create(
        model="tiny",
        messages=[
            {"role": "system", "content": "You are a judge."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": SMALL_IMAGE}},
                    {"type": "text", "text": "How many circles are there?"},
                ],
            },
        ],
        max_tokens=6,
        n=2,
        temperature=1.0,
    )
    assert len(reply.choices) == 2
    assert all(isinstance(c.message.content, str) for c in reply.choices)
    assert {c.finish_reason for c in reply.choices} <= {"stop", "length"}
    assert reply.usage.completion_tokens <= 2 * 6
    assert reply.usage.prompt_tokens > 4  # the image alone is 4 merged visual tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_greedy_is_deterministic_and_local_path_image(tiny_server, image_root) -> None:
    from openai import OpenAI

    path = image_root / "red.png"
    Image.new("RGB", (56, 56), (200, 30, 30)).save(path)
    client = OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": str(path)}},
                {"type": "text", "text": "Describe the image."},
            ],
        }
    ]
    texts = [
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert texts[0] == texts[1]
    # the same image sent as a data URL is the same input
    messages[0]["content"][0]["image_url"]["url"] = SMALL_IMAGE
    same = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0
    )
    assert same.choices[0].message.content == texts[0]


def test_openai_client_sees_error_messages(tiny_server) -> None:
    import openai

    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match=r"n=9 is out of range"):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], n=9
        )
    with pytest.raises(openai.BadRequestError, match="max_tokens=1000 is out of range"):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=1000
        )


# ------------------------------------------------------------------------------ plain HTTP
def test_health_and_reward_over_http(tiny_server) -> None:
    with httpx.Client(base_url=tiny_server.url, timeout=60) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model"] == "tiny"
        request = {
            "question": "How many circles are in the image?",
            "images": [SMALL_IMAGE],
            "response_1": "There are two circles.",
            "response_2": "There are three circles.",
            "k": 2,
            "both_orders": True,
        }
        response = client.post("/v1/reward", json=request)
        assert response.status_code == 200, response.text
        _check_reward(response.json(), k=2)
        one_order = client.post("/v1/reward", json={**request, "k": 3, "both_orders": False})
        assert one_order.status_code == 200, one_order.text
        _check_reward(one_order.json(), k=3, both_orders=False)


@pytest.mark.parametrize(
    ("body", "status", "pattern"),
    [
        (b'{"question": "q", ', 400, r"not valid JSON"),
        (b"[1, 2]", 400, r"must be a JSON object"),
        (b'{"question": "q", "response_1": "a"}', 400, r"missing required field 'response_2'"),
        (b'{"question": "q", "response_1": "a", "response_2": 7}', 400, r"'response_2'.*string"),
        (
            b'{"question": "q", "response_1": "a", "response_2": "b", "k": "many"}',
            400,
            r"'k'.*integer",
        ),
        (
            b'{"question": "q", "response_1": "a", "response_2": "b", "k": 5}',
            400,
            r"k=5 is out of range",
        ),
        (
            b'{"question": "q", "response_1": "a", "response_2": "b", "k": 0}',
            400,
            r"k=0 is out of range",
        ),
        (
            b'{"question": "q", "response_1": "a", "response_2": "b", "kk": 1}',
            400,
            r"unknown field 'kk'",
        ),
        (
            b'{"question": "q", "response_1": "a", "response_2": "b", "images": ["https://x.org/a.png"]}',
            400,
            r"images\.0: remote image URLs are not fetched",
        ),
        (
            b'{"question": "q", "response_1": "a", "response_2": "b", "images": ["data:image/png;base64,AAAA"]}',
            400,
            r"images\.0: not a decodable image",
        ),
        (
            b'{"question": "q", "response_1": "a", "response_2": "b", "images": ["/no/such/file.png"]}',
            400,
            r"images\.0: no usable image at that path under the server's --image-root",
        ),
    ],
)
def test_bad_reward_requests(tiny_server, body: bytes, status: int, pattern: str) -> None:
    response = httpx.post(
        tiny_server.url + "/v1/reward",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert re.search(pattern, _error(response, status)), response.text


def test_oversized_image_and_body(tiny_server) -> None:
    big = _noise_image(200)  # ~120 kB of PNG noise, over the 40 kB image limit
    request = {"question": "q", "response_1": "a", "response_2": "b", "images": [big]}
    message = _error(httpx.post(tiny_server.url + "/v1/reward", json=request, timeout=30), 413)
    assert "images.0" in message and "--max-image-bytes" in message
    huge = {"question": "q" * 500_000, "response_1": "a", "response_2": "b"}
    message = _error(httpx.post(tiny_server.url + "/v1/reward", json=huge, timeout=30), 413)
    assert "--max-body-bytes" in message
    chat = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": big}}]}
        ]
    }
    message = _error(
        httpx.post(tiny_server.url + "/v1/chat/completions", json=chat, timeout=30), 413
    )
    assert "messages.0.content.0.image_url" in message


def test_unknown_route_and_streaming(tiny_server) -> None:
    assert "POST /v1/rewards" in _error(httpx.post(tiny_server.url + "/v1/rewards", json={}), 404)
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert "stream" in _error(httpx.post(tiny_server.url + "/v1/chat/completions", json=chat), 400)


def test_64_concurrent_reward_requests_tiny_model(tiny_server) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tiny_server.url, timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/reward",
                        json={
                            "question": f"Question {i}: which colour is the square?",
                            "images": [SMALL_IMAGE],
                            "response_1": "red",
                            "response_2": f"blue {i}",
                            "k": 2 if i % 4 == 0 else 1,
                        },
                    )
                    for i in range(64)
                )
            )

    before = httpx.get(tiny_server.url + "/health").json()
    responses = asyncio.run(run())
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        _check_reward(response.json(), k=2 if i % 4 == 0 else 1)
    after = httpx.get(tiny_server.url + "/health").json()
    # 64 requests x 2 orders went through the batcher; requests were merged into shared batches
    assert after["requests"] - before["requests"] == 64
    assert after["max_requests_per_batch"] > 1
    assert after["errors"] == 0


def test_64_concurrent_requests_each_get_their_own_answer(rule_server) -> None:
    """The rule sampler prefers the response that contains RIGHT: every answer is checkable."""

    def request(i: int) -> dict:
        right, wrong = f"RIGHT answer {i}", f"wrong answer {i}"
        first = i % 3 == 0
        return {
            "question": f"q{i}",
            "response_1": right if first else wrong,
            "response_2": wrong if first else right,
            "k": 1 + i % 4,
            "both_orders": i % 5 != 0,
        }

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=rule_server.url, timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/v1/reward", json=request(i)) for i in range(64))
            )

    responses = asyncio.run(run())
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        body = response.json()
        req = request(i)
        _check_reward(body, k=req["k"], both_orders=req["both_orders"])
        expected = 1 if i % 3 == 0 else 2
        assert body["preferred"] == expected and body["p_1"] == (1.0 if expected == 1 else 0.0)
        assert body["well_formed_rate"] == 1.0
    health = httpx.get(rule_server.url + "/health").json()
    assert health["max_requests_per_batch"] > 1


def test_reward_client(rule_server) -> None:
    image = Image.new("RGB", (56, 56), (0, 0, 255))
    with RewardClient(rule_server.url, concurrency=4) as client:
        results = client.rewards(
            ["q0", "q1", "q2"],
            ["RIGHT", "wrong", "RIGHT too"],
            ["wrong", "RIGHT", "wrong"],
            images=[[image], [], [SMALL_IMAGE]],
            k=2,
        )
        assert [r["preferred"] for r in results] == [1, 2, 1]
        assert client.p_1(["q"], ["wrong"], ["RIGHT"]) == [0.0]
        with pytest.raises(RuntimeError, match="k=9 is out of range"):
            client.rewards(["q"], ["a"], ["b"], k=9)


def test_full_queue_answers_503() -> None:
    engine = Engine(None, None, "rule", sampler=FunctionSampler(_rule_judgment, "rule"))
    with BackgroundServer(create_app(engine, Limits(max_queue=0))) as server:
        body = {"question": "q", "response_1": "RIGHT", "response_2": "b"}
        assert "server busy" in _error(httpx.post(server.url + "/v1/reward", json=body), 503)
    engine.close()


# ------------------------------------------------------------------------------ the parts
def test_micro_batcher_merges_and_routes() -> None:
    calls: list[tuple] = []
    gate = threading.Event()

    def run(key, items):
        gate.wait(5)  # hold the first batch so the others queue up behind it
        calls.append((key, list(items)))
        return [f"{key}:{item}" for item in items]

    batcher = MicroBatcher(run, max_wait_s=0.001, max_items=100)
    try:
        first = batcher.submit("a", [0])
        time.sleep(0.05)  # the worker has taken job 0 and is blocked in run()
        futures = [batcher.submit("a" if i % 2 else "b", [i, i + 100]) for i in range(1, 9)]
        gate.set()
        assert first.result(5) == ["a:0"]
        for i, future in enumerate(futures, start=1):
            key = "a" if i % 2 else "b"
            assert future.result(5) == [f"{key}:{i}", f"{key}:{i + 100}"]
        # job 0 alone, then the 8 queued jobs in one round: one call per key
        assert len(calls) == 3
        assert batcher.stats.max_jobs_per_batch == 4 and batcher.stats.jobs == 9
    finally:
        batcher.close()


def test_micro_batcher_hands_errors_to_every_waiting_job() -> None:
    def run(key, items):
        if key == "bad":
            raise RuntimeError("model fell over")
        return items

    batcher = MicroBatcher(run)
    try:
        bad, good = batcher.submit("bad", [1]), batcher.submit("good", [2])
        with pytest.raises(RuntimeError, match="fell over"):
            bad.result(5)
        assert good.result(5) == [2]
        assert batcher.stats.errors == 1
    finally:
        batcher.close()


def test_load_image_rules(tmp_path) -> None:
    image = load_image(SMALL_IMAGE, LIMITS, "img")
    assert image.size == (56, 56) and image.mode == "RGB"
    with pytest.raises(APIError, match="pixels") as info:
        load_image(_data_url(Image.new("1", (300, 300))), Limits(max_image_pixels=10_000), "img")
    assert info.value.status == 413
    with pytest.raises(APIError, match="disabled") as info:
        load_image(str(tmp_path / "x.png"), Limits(allow_local_images=False), "img")
    assert info.value.status == 400
    with pytest.raises(APIError, match="data:image/png;base64"):
        load_image("data:image/png,rawbytes", LIMITS, "img")


def test_transformers_judge_with_tiny_model(tiny_server) -> None:
    """The local-model judge runs batched on the tiny model; an untrained model's replies are
    (almost surely) not 1/0, and every such reply is a counted 0, never an exception."""
    from r1reward.judges import TransformersJudge

    engine = tiny_server.engine
    judge = TransformersJudge(engine.model, engine.processor, max_new_tokens=3, batch_size=4)
    analyses = ["Response 1 is better.", "Response 2 is better.", "", "Response 2 is better."]
    out = judge.judge(analyses, [1, 1, 1, None], images=[[], [], [], []])
    assert len(out) == 4 and set(out) <= {1, -1, 0}
    assert out[2] == 0 and out[3] == 0  # not asked: empty analysis, no verdict
    assert judge.stats["asked"] == 2
    assert out[:2].count(0) == judge.stats["unparseable"]


def test_openai_judge_against_the_served_model(tiny_server) -> None:
    """The served model as the consistency judge, through its own chat endpoint."""
    from r1reward.judges import OpenAIJudge

    with OpenAIJudge(tiny_server.url + "/v1", "tiny", timeout=60, max_tokens=3) as judge:
        out = judge.judge(["Response 1 is better.", "Response 2 is better."], [1, 1])
    assert set(out) <= {1, -1, 0}
    stats = judge.stats
    assert stats.requests == 2 and stats.connect_errors == stats.timeouts == stats.http_errors == 0
    assert stats.ok + stats.unparseable == 2  # every reply came back; each is a verdict or a 0


def test_cli_serves_the_tiny_model(tiny_server, tmp_path) -> None:
    """`r1reward serve --model DIR` in a subprocess: health, models, one reward, then SIGTERM."""
    model_dir = tiny_server.engine.model.name_or_path
    with served_judge(
        model_dir,
        reward_max_tokens=4,
        log_path=tmp_path / "serve.log",
        extra_args=["--threads", "1", "--max-k", "2"],
    ) as url:
        name = os.path.basename(model_dir.rstrip("/"))
        assert httpx.get(url + "/health").json()["model"] == name
        assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == name
        body = {"question": "q", "response_1": "a", "response_2": "b", "k": 2}
        answer = httpx.post(url + "/v1/reward", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        _check_reward(answer.json(), k=2)
        assert "--max-k" in _error(httpx.post(url + "/v1/reward", json={**body, "k": 3}), 400)


def test_cli_parser_defaults_to_loopback() -> None:
    args = build_parser().parse_args(["--model", "some/path"])
    assert args.host == "127.0.0.1" and args.port == 8000


def test_every_limit_is_read_from_its_flag(tmp_path) -> None:
    """limits_from_args reads each Limits field from the flag of its name: the defaults give
    Limits(), and a changed value on every flag arrives in its field."""
    assert limits_from_args(build_parser().parse_args(["--model", "m"])) == Limits()
    argv = ["--model", "m", "--allow-local-images", "--image-root", str(tmp_path)]
    expected = {"allow_local_images": True, "image_root": str(tmp_path)}
    for f in dataclasses.fields(Limits):
        if f.name in expected:
            continue
        value = f.default * 2 + 1 if isinstance(f.default, int) else f.default + 0.5
        argv += ["--" + f.name.removesuffix("_s").replace("_", "-"), str(value)]
        expected[f.name] = value
    assert limits_from_args(build_parser().parse_args(argv)) == Limits(**expected)


def test_every_limit_flag_is_made_from_its_field() -> None:
    """Each Limits field is declared once: its flag carries the field's help and default, in
    the --help section the field names (limits, or access for the local-image switches)."""
    parser = build_parser()
    sections = {
        action.dest: group.title
        for group in parser._action_groups
        for action in group._group_actions
    }
    by_flag = {
        action.option_strings[0]: action for action in parser._actions if action.option_strings
    }
    for f in dataclasses.fields(Limits):
        action = by_flag[flag_name(f.name)]
        assert f.metadata["help"] and action.help.startswith(f.metadata["help"]), f.name
        assert action.default == f.default, f.name
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            assert (
                f"(default {f.default:g})" in action.help or f"(default {f.default})" in action.help
            )
        assert sections[action.dest].startswith(f.metadata["section"]), f.name


def test_python_m_serve_is_the_cli() -> None:
    """`python -m r1reward.serve` runs the same command line as `r1reward serve`."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "r1reward.serve", "--help"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: r1reward serve") and "--max-prompt-tokens" in done.stdout
