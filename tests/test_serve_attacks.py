"""``r1reward serve`` attacked on 127.0.0.1: one bad client hurts no one else.

Every attack is bounded (a handful of requests, seconds) and runs beside an *innocent* request
that must still get its 200. Two kinds of server:

* ``tiny``: the tiny Qwen2.5-VL with its real processor (what the processor refuses, token counts),
  an API key, local images allowed under a temporary ``--image-root``;
* a *rule* server per test: a deterministic judge that can be held on a gate (so the batcher is
  busy on demand) and that raises on a poisoned question (so a merged batch fails).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from r1reward.evaluate import FunctionSampler
from r1reward.serve.app import create_app
from r1reward.serve.batching import MicroBatcher, Ticket
from r1reward.serve.cli import bind_message, main
from r1reward.serve.client import RewardClient
from r1reward.serve.engine import Engine, build_engine
from r1reward.serve.guard import Guard, PromptCounter
from r1reward.serve.images import decode_image, open_image
from r1reward.serve.limits import Access, Limits
from r1reward.serve.schema import APIError
from r1reward.serve.server import BackgroundServer, ServerSettings

KEY = "test-key-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


SMALL = _png(Image.new("RGB", (56, 56), (200, 30, 30)))


def _innocent(i: int = 0, **extra) -> dict:
    return {
        "question": f"Innocent question {i}: which colour is the square?",
        "images": [SMALL],
        "response_1": "red",
        "response_2": "blue",
        **extra,
    }


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


async def _with_innocent(url: str, attack, headers: dict | None = None) -> httpx.Response:
    """Run ``attack(client)`` and an innocent request at once; the innocent must get 200."""
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        result, innocent = await asyncio.gather(
            attack(client), client.post("/v1/reward", json=_innocent())
        )
    assert innocent.status_code == 200, innocent.text
    return result


# -------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_root")
    Image.new("RGB", (56, 56), (0, 200, 0)).save(root / "green.png")
    (root / "notes.txt").write_text("not an image\n")
    (root / "big.bin").write_bytes(b"\0" * 9_000_000)  # over --max-image-bytes
    return root


TINY_LIMITS = Limits(max_k=2, max_prompt_tokens=512, max_tokens=16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, image_root) -> Iterator[BackgroundServer]:
    from r1reward.toy.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")
    engine = build_engine(str(path), name="tiny", reward_max_tokens=4, batch_size=32)
    limits = dataclasses.replace(TINY_LIMITS, allow_local_images=True, image_root=str(image_root))
    app = create_app(engine, limits, Access(api_key=KEY))
    with BackgroundServer(app) as server:
        server.engine = engine
        yield server
    engine.close()


class RuleJudge:
    """Prefers the response holding RIGHT; waits on ``gate`` for a HOLD question, raises on a
    POISON question, and records every question it judged."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: list[str] = []

    def __call__(self, conversation, sample_index, seed) -> str:
        text = conversation[0]["content"][-1]["text"]
        question = text.split("###### [Question]:\n")[1].split("\n")[0]
        if "HOLD" in question:
            self.gate.wait(30)
        if "POISON" in question:
            raise ValueError("the judge fell over on this one")
        self.seen.append(question)
        first = text.split("###### [Response 1]:\n")[1].split("###### [Response 2]:")[0]
        answer = 1 if "RIGHT" in first else 2
        return f"<think>Response {answer} is better.</think><answer>{answer}</answer>"


class RuleServer:
    def __init__(self, limits: Limits = Limits(), settings: ServerSettings | None = None):
        self.judge = RuleJudge()
        self.engine = Engine(None, None, "rule", sampler=FunctionSampler(self.judge, "rule"))
        self.server = BackgroundServer(create_app(self.engine, limits), settings=settings)
        self.url = self.server.url

    def __enter__(self) -> RuleServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.judge.gate.set()
        self.server.stop()
        self.engine.close()

    def hold(self) -> threading.Thread:
        """Occupy the batcher with a held request until ``judge.gate`` is set."""
        body = {"question": "HOLD", "response_1": "RIGHT", "response_2": "x"}
        thread = threading.Thread(
            target=httpx.post, args=(self.url + "/v1/reward",), kwargs={"json": body, "timeout": 60}
        )
        thread.start()
        deadline = time.monotonic() + 10
        while self.engine.batcher.running_age() is None:
            assert time.monotonic() < deadline, "the held batch did not start"
            time.sleep(0.01)
        return thread

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()


# ------------------------------------------------------------------------------- isolation
@pytest.mark.parametrize(
    ("poison", "pattern"),
    [
        ({"question": "a\ud800c"}, r"'question'.*lone surrogate"),
        ({"response_2": "look: <|image_pad|>"}, r"'response_2'.*reserved token <\|image_pad\|>"),
        ({"images": [_png(Image.new("1", (16_777_216, 1)))]}, r"images\.0: .*aspect ratios"),
        ({"question": "many words " * 400}, r"question: the prompt is at least \d+ tokens"),
    ],
    ids=["lone-surrogate", "placeholder-token", "16777216x1-image", "over-max-prompt-tokens"],
)
def test_poisoned_request_beside_six_innocents(tiny, poison, pattern) -> None:
    """The processor would have refused these inside the batch (a 500 for all seven before);
    now the poisoned one gets a 400 naming its field and the six innocents their answers."""
    body = json.dumps({**_innocent(99), **poison}).encode()  # a surrogate travels as \\ud800

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tiny.url, timeout=120, headers=AUTH) as client:
            headers = {"content-type": "application/json"}
            return await asyncio.gather(
                client.post("/v1/reward", content=body, headers=headers),
                *(client.post("/v1/reward", json=_innocent(i)) for i in range(6)),
            )

    bad, *innocents = asyncio.run(run())
    assert re.search(pattern, _error(bad, 400)), bad.text
    assert [r.status_code for r in innocents] == [200] * 6, [r.text for r in innocents]


def test_a_failing_merged_batch_is_rerun_one_by_one() -> None:
    """What slips past validation and fails a merged batch fails alone: the poisoned job gets
    its error, the six jobs merged with it get their results."""
    with RuleServer() as rule:
        held = rule.hold()

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=rule.url, timeout=60) as client:
                bodies = [
                    {"question": f"innocent {i}", "response_1": "RIGHT", "response_2": "x"}
                    for i in range(6)
                ]
                bodies.insert(3, {"question": "POISON", "response_1": "RIGHT", "response_2": "x"})
                tasks = [asyncio.create_task(client.post("/v1/reward", json=b)) for b in bodies]
                while rule.engine.batcher.pending() < 7:  # all queued behind the held batch
                    await asyncio.sleep(0.01)
                rule.judge.gate.set()
                return await asyncio.gather(*tasks)

        responses = asyncio.run(run())
        held.join(30)
        assert "fell over" in _error(responses.pop(3), 500)
        assert all(r.status_code == 200 and r.json()["preferred"] == 1 for r in responses)
        health = rule.health()
        assert health["isolated"] == 1 and health["errors"] == 1


def test_micro_batcher_isolates_the_failing_job() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def run(key, items):
        gate.wait(5)
        calls.append(list(items))
        if 13 in items:
            raise ValueError("unlucky")
        return [i * 10 for i in items]

    batcher = MicroBatcher(run, max_wait_s=0.001, max_items=100)
    try:
        first = batcher.submit("k", [0])
        time.sleep(0.05)
        futures = [batcher.submit("k", [i]) for i in (1, 2, 13, 4)]
        gate.set()
        assert first.result(5) == [0]
        assert [f.result(5) for f in futures if f is not futures[2]] == [[10], [20], [40]]
        with pytest.raises(ValueError, match="unlucky"):
            futures[2].result(5)
        # job 0; the merged four (fails); then each of the four alone
        assert calls == [[0], [1, 2, 13, 4], [1], [2], [13], [4]]
        assert batcher.stats.isolated == 1 and batcher.stats.errors == 1
    finally:
        batcher.close()


# ----------------------------------------------------------------------------- bounded cost
def test_one_megabyte_question_is_refused_within_a_second(tiny) -> None:
    """Before: no prompt bound under the 32 MB body limit (a 128 KB question took 49 s)."""
    body = {**_innocent(), "question": "why " * 250_000}

    async def attack(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
        start = time.perf_counter()
        response = await client.post("/v1/reward", json=body)
        return response, time.perf_counter() - start

    response, seconds = asyncio.run(_with_innocent(tiny.url, attack, AUTH))
    assert "--max-prompt-tokens" in _error(response, 400)
    assert seconds < 1.0, f"{seconds:.2f} s"


def test_prompt_count_is_what_the_processor_feeds(tiny) -> None:
    """The service's count = the tokens ``encode`` gives the model (template + image tokens)."""
    from r1reward.prompt import build_messages
    from r1reward.rollout import encode

    processor = tiny.engine.processor
    counter = PromptCounter(processor)
    for size in [(56, 56), (120, 64)]:
        image = Image.new("RGB", size, (10, 20, 30))
        conv = build_messages("How many?", "two", "three", images=[image, image])
        assert counter.count(conv) == int(encode(processor, [conv])["attention_mask"].sum())


def test_counting_beside_a_padded_batch_leaves_it_square(tiny) -> None:
    """Before: the counter shared the engine's fast tokenizer, whose padding setting every call
    sets, so counting on the work pool while the batch thread encoded a padded batch gave that
    batch rows of different lengths (191 of 3,000 batches; a 500 from /v1/reward under load)."""
    import threading

    processor = tiny.engine.processor
    counter = PromptCounter(processor)
    conv = [{"role": "user", "content": [{"type": "text", "text": "short"}]}]
    stop = threading.Event()

    def count_forever() -> None:
        while not stop.is_set():
            counter.count(conv)

    threads = [threading.Thread(target=count_forever) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        ragged = 0
        for _ in range(1000):
            ids = processor.tokenizer(["a " * 40, "b"], padding=True, padding_side="left")
            ragged += len({len(row) for row in ids["input_ids"]}) != 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert ragged == 0, f"{ragged} of 1000 padded batches came back ragged"


def test_disconnected_clients_jobs_are_never_generated() -> None:
    """Before: 64 cancelled requests were all computed. Now their jobs are dropped."""
    with RuleServer() as rule:
        held = rule.hold()

        async def gone() -> None:
            async with httpx.AsyncClient(base_url=rule.url, timeout=0.5) as client:
                for result in await asyncio.gather(
                    *(
                        client.post(
                            "/v1/reward",
                            json={
                                "question": f"gone {i}",
                                "response_1": "RIGHT",
                                "response_2": "x",
                            },
                        )
                        for i in range(16)
                    ),
                    return_exceptions=True,
                ):
                    assert isinstance(result, httpx.TimeoutException), result

        asyncio.run(gone())
        deadline = time.monotonic() + 10
        while rule.health()["in_flight"] > 1:  # the server noticed every disconnection
            assert time.monotonic() < deadline, rule.health()
            time.sleep(0.05)
        rule.judge.gate.set()
        held.join(30)
        body = {"question": "innocent", "response_1": "RIGHT", "response_2": "x"}
        assert httpx.post(rule.url + "/v1/reward", json=body, timeout=30).status_code == 200
        assert not [q for q in rule.judge.seen if q.startswith("gone")], rule.judge.seen
        assert rule.health()["dropped"] == 16


def test_request_deadline_answers_504_and_drops_the_job() -> None:
    with RuleServer(Limits(request_timeout_s=1.0)) as rule:
        held = rule.hold()
        body = {"question": "late", "response_1": "RIGHT", "response_2": "x"}
        start = time.perf_counter()
        message = _error(httpx.post(rule.url + "/v1/reward", json=body, timeout=30), 504)
        assert "--request-timeout" in message and time.perf_counter() - start < 5
        rule.judge.gate.set()
        held.join(30)
        assert "late" not in rule.judge.seen


def test_health_reports_the_queue_and_a_stuck_batch() -> None:
    with RuleServer(Limits(stuck_after_s=0.3)) as rule:
        assert rule.health()["status"] == "ok"
        held = rule.hold()
        time.sleep(0.4)
        start = time.perf_counter()
        response = httpx.get(rule.url + "/health", timeout=10)
        assert time.perf_counter() - start < 1.0  # answered while the batch runs
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "stuck" and body["running_batch_age_s"] > 0.3
        assert body["in_flight"] == 1
        rule.judge.gate.set()
        held.join(30)
        assert rule.health()["status"] == "ok"


def test_graceful_shutdown_ends_within_its_timeout() -> None:
    """Before: SIGTERM did not stop a server whose batch kept generating."""
    rule = RuleServer(settings=ServerSettings(timeout_graceful_shutdown=1))
    rule.__enter__()
    held = rule.hold()
    start = time.perf_counter()
    rule.server.stop()
    assert not rule.server.thread.is_alive()
    assert time.perf_counter() - start < 5
    held.join(10)
    assert not held.is_alive()  # the held client got its answer (an error), not a hang
    rule.__exit__()


def test_max_queue_counts_in_flight_requests_atomically() -> None:
    """Before: --max-queue 4 let 7 in (check, then submit after an await)."""
    with RuleServer(Limits(max_queue=4)) as rule:
        held = rule.hold()  # 1 in flight

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=rule.url, timeout=30) as client:
                tasks = [
                    asyncio.create_task(
                        client.post(
                            "/v1/reward",
                            json={
                                "question": f"q{i}",
                                "images": [SMALL],
                                "response_1": "RIGHT",
                                "response_2": "x",
                            },
                        )
                    )
                    for i in range(7)
                ]
                deadline = time.monotonic() + 10
                while rule.health()["in_flight"] < 4:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.2)
                rule.judge.gate.set()
                return await asyncio.gather(*tasks)

        statuses = sorted(r.status_code for r in asyncio.run(run()))
        held.join(30)
        assert statuses == [200] * 3 + [503] * 4


def test_slow_header_connection_is_closed() -> None:
    """Before: a connection that sent half a header was held open for ever."""
    with RuleServer(settings=ServerSettings(timeout_header=0.5)) as rule:
        with socket.create_connection((rule.server.host, rule.server.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/reward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            start = time.perf_counter()
            body = {"question": "innocent", "response_1": "RIGHT", "response_2": "x"}
            assert httpx.post(rule.url + "/v1/reward", json=body, timeout=10).status_code == 200
            assert sock.recv(100) == b""  # closed by the server
            assert time.perf_counter() - start < 3


# ---------------------------------------------------------------------------- bounded memory
def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_sixteen_huge_images_are_refused_under_a_memory_ceiling() -> None:
    """16 PNGs of 4096x4096 in a ~45 KB body took the server from 414 MB to 2.3 GB, four such
    requests past 6 GB. Now the header sizes are summed before anything is decoded: 413, and the
    process (server and client in one) grows by less than 100 MB while four run at once."""
    huge = _png(Image.new("1", (4096, 4096)))
    body = {"question": "q", "images": [huge] * 16, "response_1": "RIGHT", "response_2": "x"}
    peak, stop = [_rss_mb()], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak.append(_rss_mb())
            time.sleep(0.005)

    with RuleServer() as rule:
        before = _rss_mb()
        watcher = threading.Thread(target=watch)
        watcher.start()

        async def attack(client: httpx.AsyncClient) -> list[httpx.Response]:
            return await asyncio.gather(*(client.post("/v1/reward", json=body) for _ in range(4)))

        try:
            responses = asyncio.run(_with_innocent(rule.url, attack))
        finally:
            stop.set()
            watcher.join()
        for response in responses:
            assert "--max-request-pixels" in _error(response, 413)
        assert max(peak) - before < 100, f"{before:.0f} MB -> {max(peak):.0f} MB"


def test_pixels_in_flight_are_capped_and_released() -> None:
    engine = Engine(None, None, "rule", sampler=FunctionSampler(RuleJudge(), "rule"))
    guard = Guard(engine, Limits(max_inflight_pixels=3 * 56 * 56))

    async def run() -> None:
        async with guard.admit() as first:
            assert len(await guard.images(first, [SMALL, SMALL], ["a", "b"])) == 2
            async with guard.admit() as second:
                with pytest.raises(APIError, match="--max-inflight-pixels") as info:
                    await guard.images(second, [SMALL, SMALL], ["a", "b"])
                assert info.value.status == 503
            assert guard.pixels_in_flight == 2 * 56 * 56
        assert guard.pixels_in_flight == 0 and guard.in_flight == 0

    try:
        asyncio.run(run())
    finally:
        guard.close()
        engine.close()


def test_images_are_resized_to_the_models_limit_when_decoded() -> None:
    image = open_image(_png(Image.new("RGB", (2000, 1000))), Limits(), "img")
    small = decode_image(image, "img", max_pixels=100_000)
    assert small.mode == "RGB" and small.size[0] * small.size[1] <= 100_000
    assert abs(small.size[0] / small.size[1] - 2.0) < 0.02


# ------------------------------------------------------------------------------------ access
def test_local_files_give_one_answer_whatever_the_reason(tiny, image_root) -> None:
    """Before: /etc/shadow said 'not a decodable image', a missing path 'no image file at', and
    a 9 MB file's size was echoed. Now: one message, and nothing outside --image-root is read."""
    refs = [
        "/etc/shadow",
        "/no/such/file.png",
        "../../../etc/passwd",
        "notes.txt",
        "big.bin",
        str(image_root / "missing.png"),
        "/etc/hostname",
    ]

    async def attack(client: httpx.AsyncClient) -> list[httpx.Response]:
        return await asyncio.gather(
            *(client.post("/v1/reward", json={**_innocent(), "images": [ref]}) for ref in refs)
        )

    responses = asyncio.run(_with_innocent(tiny.url, attack, AUTH))
    messages = {ref: _error(r, 400) for ref, r in zip(refs, responses)}
    assert len(set(messages.values())) == 1, messages
    assert "9000000" not in next(iter(messages.values()))
    ok = httpx.post(
        tiny.url + "/v1/reward",
        json={**_innocent(), "images": ["green.png"]},
        headers=AUTH,
        timeout=60,
    )
    assert ok.status_code == 200, ok.text


def test_local_paths_are_off_by_default() -> None:
    with RuleServer() as rule:
        body = {"question": "q", "images": ["/etc/hostname"], "response_1": "a", "response_2": "b"}
        message = _error(httpx.post(rule.url + "/v1/reward", json=body, timeout=10), 400)
        assert "local image paths are disabled" in message


def test_api_key_is_required(tiny) -> None:
    body = {"question": "q", "response_1": "a", "response_2": "b"}

    async def attack(client: httpx.AsyncClient) -> list[httpx.Response]:
        return await asyncio.gather(
            client.post("/v1/reward", json=body, headers={"authorization": ""}),
            client.post("/v1/reward", json=body, headers={"authorization": "Bearer WRONG"}),
            client.post("/v1/reward", json=body, headers={"authorization": KEY}),
            client.get("/v1/models", headers={"authorization": "Bearer " + KEY[:-1]}),
        )

    for response in asyncio.run(_with_innocent(tiny.url, attack, AUTH)):
        assert "API key" in _error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(tiny.url + "/health").status_code == 200  # liveness probes need no key
    assert httpx.get(tiny.url + "/v1/models", headers=AUTH).status_code == 200


def test_docs_are_off_unless_asked_and_host_is_checked() -> None:
    with RuleServer() as rule:
        for path in ("/docs", "/openapi.json"):
            assert httpx.get(rule.url + path).status_code == 404
        evil = httpx.get(rule.url + "/v1/models", headers={"host": "evil.example:80"})
        assert "'evil.example' is not served here" in _error(evil, 400)
        port = rule.server.port
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "127.0.0.2"):
            assert httpx.get(rule.url + "/v1/models", headers={"host": host}).status_code == 200
    engine = Engine(None, None, "rule", sampler=FunctionSampler(RuleJudge(), "rule"))
    app = create_app(engine, Limits(), Access(docs=True, allowed_hosts=None))
    with BackgroundServer(app) as server:
        assert httpx.get(server.url + "/openapi.json").status_code == 200
        assert httpx.get(server.url + "/health", headers={"host": "any.example"}).status_code == 200
    engine.close()


def test_bind_message_knows_loopback() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert "this machine only" in bind_message(host, 8000), host
    for host in ("0.0.0.0", "192.168.1.7", "::"):
        assert "reachable from other machines" in bind_message(host, 8000), host


# ------------------------------------------------------------------------------ strict input
@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"max_tokens": 0}, r"max_tokens=0 is out of range"),
        ({"max_completion_tokens": 0}, r"max_tokens=0 is out of range"),
        ({"temperature": "0.5"}, r"'temperature'.*number"),
        ({"top_p": True}, r"'top_p'.*number"),
        ({"messages": [{"role": "user", "content": "a\ud800"}]}, r"lone surrogate"),
    ],
)
def test_chat_refuses_instead_of_coercing(change, pattern) -> None:
    with RuleServer() as rule:
        body = {"messages": [{"role": "user", "content": "hi"}], **change}
        response = httpx.post(
            rule.url + "/v1/chat/completions",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert re.search(pattern, _error(response, 400)), response.text


def test_ticket_cancel_releases_a_running_wait() -> None:
    ticket = Ticket(timeout_s=60)
    from concurrent.futures import CancelledError, Future

    future: Future = Future()
    future.set_running_or_notify_cancel()
    ticket.track(future)
    ticket.cancel()
    with pytest.raises(CancelledError):
        future.result(1)
    assert not ticket.alive()


def test_cli_local_images_need_a_root(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--model", "unused", "--allow-local-images"])
    assert info.value.code == 2
    assert "--allow-local-images needs --image-root" in capsys.readouterr().err


def test_reward_client_sends_the_key_and_reads_local_paths_itself(tmp_path, monkeypatch) -> None:
    """The server reads no path by default, so the client sends a local file's bytes; the key
    goes with every request, sync and async, and a refusal raises with the server's message."""
    path = tmp_path / "blue.png"
    Image.new("RGB", (56, 56), (0, 0, 255)).save(path)
    engine = Engine(None, None, "rule", sampler=FunctionSampler(RuleJudge(), "rule"))
    with BackgroundServer(create_app(engine, Limits(), Access(api_key=KEY))) as server:
        with RewardClient(server.url, api_key=KEY) as client:
            assert client.p_1(["q"], ["RIGHT"], ["x"], images=[[str(path)]]) == [1.0]
            assert asyncio.run(client.agroup("q", ["x", "RIGHT"]))["ranking"] == [1, 0]
            assert client.reference("q", ["RIGHT"], "x")["scores"] == [1.0]
        monkeypatch.setenv("R1REWARD_API_KEY", KEY)
        with RewardClient(server.url) as client:  # the key from the environment
            assert client.p_1(["q"], ["x"], ["RIGHT"]) == [0.0]
            assert asyncio.run(client.apair("q", "x", "RIGHT"))["preferred"] == 2
        monkeypatch.delenv("R1REWARD_API_KEY")
        refused = re.escape(f"{server.url}/v1/reward answered 401: missing or wrong API key")
        with RewardClient(server.url) as client:
            with pytest.raises(RuntimeError, match=refused):
                client.p_1(["q"], ["x"], ["RIGHT"])
            with pytest.raises(RuntimeError, match=refused):
                asyncio.run(client.apair("q", "x", "RIGHT"))
        with RewardClient(server.url, api_key="WRONG") as client:
            with pytest.raises(RuntimeError, match="/v1/reward/group answered 401: missing or"):
                client.group("q", ["x", "RIGHT"])
    engine.close()
