"""Judges: prompt/reply rules, and OpenAIJudge against real loopback sockets.

The failure servers are plain TCP sockets on 127.0.0.1: a port nobody listens on, a server that
accepts and never answers, one that answers bytes that are not HTTP, and one that answers HTTP 200
with a body that is not a chat completion. Each must give 0, count the failure, and return within
its timeout budget. A small well-behaved fake OpenAI server checks the happy path, the cache and
the retries.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import r1reward.judges as judges_module
from r1reward.judges import (
    ENV_BASE_URL,
    ENV_MODEL,
    JUDGES,
    Judge,
    OpenAIJudge,
    build_judge,
    consistency_prompt,
    parse_judge_reply,
    reply_to_consistency,
)
from r1reward.toy import checks
from r1reward.toy import world as toy
from r1reward.toy.judge import RuleJudge

SUPPORTS_2 = "Response 1 says there are three circles, the image shows two.\nResponse 2 is better."
SUPPORTS_1 = "Response 2 misreads the colour of the bar.\nResponse 1 is better."


# ------------------------------------------------------------------------------ prompt and reply
def test_prompt_shows_analysis_and_verdict() -> None:
    prompt = consistency_prompt(SUPPORTS_2, 2)
    assert SUPPORTS_2 in prompt
    assert "Response 2 is better." in prompt.split("[Verdict]")[1]
    assert "1 if the analysis supports the verdict, 0 if it does not" in prompt


def test_prompt_last_lines_keeps_only_the_tail() -> None:
    analysis = "\n".join(f"line {i}" for i in range(10))
    prompt = consistency_prompt(analysis, 1, last_lines=3)
    assert "line 9" in prompt and "line 7" in prompt
    assert "line 6" not in prompt and "line 0" not in prompt
    assert "last 3 lines" in prompt
    # shorter than N: everything, and no claim of truncation
    assert "last 3 lines" not in consistency_prompt("a\nb", 1, last_lines=3)
    with pytest.raises(ValueError, match="last_lines"):
        consistency_prompt(analysis, 1, last_lines=0)
    with pytest.raises(ValueError, match="answer must be 1 or 2"):
        consistency_prompt(analysis, 3)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1", 1),
        ("0", 0),
        (" 1\n", 1),
        ("**1**", 1),
        ("`0`", 0),
        ("1. The analysis supports it.", 1),
        ("Yes", 1),
        ("no, it argues for the other one", 0),
        ("<answer>0</answer>", 0),
        ("<think>hmm, 0 or 1? it says 1</think><answer>1</answer>", 1),
        ("<think>long thoughts</think> 0", 0),
        ("", None),
        ("maybe", None),
        ("10", None),
        ("2", None),
        ("The answer is 1", None),
        (None, None),
    ],
)
def test_parse_judge_reply(reply: str | None, expected: int | None) -> None:
    assert parse_judge_reply(reply) == expected


def test_reply_to_consistency() -> None:
    assert [reply_to_consistency(v) for v in (1, 0, None)] == [1, -1, 0]


# --------------------------------------------------------------------------------- RuleJudge
def test_rule_judge() -> None:
    judge = RuleJudge()
    assert isinstance(judge, Judge)
    got = judge.judge(
        [SUPPORTS_2, SUPPORTS_2, SUPPORTS_1, "no conclusion at all", "", SUPPORTS_1],
        [2, 1, 1, 1, 2, None],
    )
    assert got == [1, -1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="answers"):
        judge.judge([SUPPORTS_1], [1, 2])


def test_rule_judge_on_toy_teacher_analyses() -> None:
    pairs = toy.make_pairs(6, seed=3)
    judge = RuleJudge()
    right = [p.preferred for p in pairs]
    wrong = [3 - p.preferred for p in pairs]
    analyses = [p.meta["teacher_analysis"] for p in pairs]
    assert judge.judge(analyses, right) == [1] * len(pairs)
    assert judge.judge(analyses, wrong) == [-1] * len(pairs)
    # an analysis written to argue for the wrong response, with the right verdict: inconsistent
    misleading = [toy.teacher_analysis(p, 3 - p.preferred) for p in pairs]
    assert judge.judge(misleading, right) == [-1] * len(pairs)


def test_rule_judge_checks_every_step_of_a_toy_analysis() -> None:
    pair = toy.make_pairs(1, seed=11)[0]
    right = pair.preferred
    honest = toy.teacher_analysis(pair, right)
    # the same observation and closing sentence, with the two marks swapped
    contradicts = (
        honest.replace("which is right", "WAS")
        .replace("which is wrong", "which is right")
        .replace("WAS", "which is wrong")
    )
    assert checks.analysis_chain(honest) == {
        "marks_follow_observation": True,
        "verdict_follows_marks": True,
    }
    assert checks.analysis_chain(contradicts) == {
        "marks_follow_observation": False,
        "verdict_follows_marks": False,
    }
    assert checks.analysis_chain("Response 2 is better.") is None
    judge = RuleJudge()
    # the closing sentence names the right response, but the marks contradict the observation
    assert judge.judge([honest, contradicts], [right, right]) == [1, -1]


def test_consistency_rewards_from_raw_outputs() -> None:
    from r1reward.judges import consistency_rewards

    pair = toy.make_pairs(1, seed=5)[0]
    right, wrong = pair.preferred, 3 - pair.preferred
    texts = [
        toy.target_text(pair),  # the teacher: consistent
        f"<think>{toy.teacher_analysis(pair, wrong)}</think><answer>{right}</answer>",
        f"<think>{toy.teacher_analysis(pair, right)}</think>",  # no verdict
        "no tags at all",
    ]
    assert consistency_rewards(RuleJudge(), texts) == [1, -1, 0, 0]


def test_reward_breakdown() -> None:
    from r1reward.judges import reward_breakdown

    pair = toy.make_pairs(1, seed=7)[0]
    right, wrong = pair.preferred, 3 - pair.preferred
    consistent = toy.target_text(pair)
    inconsistent = f"<think>{toy.teacher_analysis(pair, wrong)}</think><answer>{right}</answer>"
    wrong_but_consistent = (
        f"<think>{toy.teacher_analysis(pair, wrong)}</think><answer>{wrong}</answer>"
    )
    rows = reward_breakdown(
        RuleJudge(), [consistent, inconsistent, wrong_but_consistent], [right] * 3
    )
    assert [r["consistency"] for r in rows] == [1, -1, 1]
    assert [r["result"] for r in rows] == [1.0, 1.0, 0.0]
    # result * (1 + 0.5 c) + 0.5 * format
    assert [r["reward"] for r in rows] == [2.0, 1.0, 0.5]
    assert [r["reward_without_consistency"] for r in rows] == [1.5, 1.5, 0.5]
    with pytest.raises(ValueError, match="labels"):
        reward_breakdown(RuleJudge(), [consistent], [1, 2])


# ------------------------------------------------------------------------- loopback servers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RawServer:
    """A TCP server on 127.0.0.1 whose per-connection behaviour is a function of the socket."""

    def __init__(self, handle) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for conn in self.connections:
            conn.close()
        self.sock.close()


def _read_request(conn: socket.socket) -> bytes:
    conn.settimeout(2)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def raw_server() -> Iterator:
    servers: list[_RawServer] = []

    def make(handle) -> _RawServer:
        servers.append(_RawServer(handle))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


TIMEOUT, RETRIES, BACKOFF = 0.4, 1, 0.05
# the most one item may take: every attempt runs to its timeout, plus the backoffs, plus slack for a
# loaded 2-core machine. Not a speed goal, a bound that proves the judge does not hang.
BUDGET = (RETRIES + 1) * TIMEOUT + BACKOFF * (2**RETRIES) + 3.0


def _judge(port: int, **kw) -> OpenAIJudge:
    return OpenAIJudge(
        f"http://127.0.0.1:{port}/v1",
        "judge-model",
        timeout=kw.pop("timeout", TIMEOUT),
        max_retries=kw.pop("max_retries", RETRIES),
        backoff=BACKOFF,
        **kw,
    )


def _timed(judge: OpenAIJudge, analyses, answers) -> tuple[list[int], float]:
    start = time.monotonic()
    out = judge.judge(analyses, answers)
    return out, time.monotonic() - start


def test_closed_port_gives_zero_and_counts() -> None:
    port = _free_port()  # bound then released: nobody listens there
    with _judge(port) as judge:
        out, elapsed = _timed(judge, [SUPPORTS_2, SUPPORTS_1], [2, 1])
    assert out == [0, 0]
    assert judge.stats.connect_errors == 2
    assert judge.stats.failures == 2
    assert judge.stats.requests == 2 * (RETRIES + 1)
    assert judge.stats.retries == 2 * RETRIES
    assert elapsed < BUDGET


def test_server_that_never_answers_times_out(raw_server) -> None:
    hold = threading.Event()
    server = raw_server(lambda conn: (_read_request(conn), hold.wait(30)))
    try:
        with _judge(server.port) as judge:
            out, elapsed = _timed(judge, [SUPPORTS_2], [2])
    finally:
        hold.set()
    assert out == [0]
    assert server.accepted >= 1  # the connection was accepted: this is a read timeout
    assert judge.stats.timeouts == 1 and judge.stats.failures == 1
    assert judge.stats.last_error.startswith("timeouts: timeout")
    assert judge.stats.requests == RETRIES + 1
    assert TIMEOUT <= elapsed < BUDGET


def test_server_that_answers_garbage_bytes(raw_server) -> None:
    def garbage(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"\x00\xffthis is not HTTP at all\r\n\r\n")
        conn.close()

    server = raw_server(garbage)
    with _judge(server.port) as judge:
        out, elapsed = _timed(judge, [SUPPORTS_2, SUPPORTS_1], [2, 1])
    assert out == [0, 0]
    assert judge.stats.bad_responses == 2 and judge.stats.failures == 2
    assert elapsed < BUDGET


def test_server_that_answers_http_200_with_garbage_body(raw_server) -> None:
    def not_json(conn: socket.socket) -> None:
        _read_request(conn)
        body = b"<html>definitely not a chat completion"
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        conn.close()

    server = raw_server(not_json)
    with _judge(server.port) as judge:
        out, elapsed = _timed(judge, [SUPPORTS_2], [2])
    assert out == [0]
    assert judge.stats.bad_responses == 1 and judge.stats.failures == 1
    assert judge.stats.requests == 1  # a malformed 200 is not retried
    assert elapsed < BUDGET


# ----------------------------------------------------------------------- a fake OpenAI server
class _FakeOpenAI(BaseHTTPRequestHandler):
    """Answers like an OpenAI server with a judge that reads the analysis's last sentence.

    ``server.fail_first`` requests get HTTP 503 first (to exercise retries); ``server.reply``
    overrides the text (to test unparseable replies); every request body is recorded.
    """

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.bodies.append((self.path, self.headers.get("Authorization"), body))
        if server.fail_first > 0:
            server.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        if isinstance(prompt, list):
            prompt = next(part["text"] for part in prompt if part["type"] == "text")
        analysis = prompt.split("[Analysis]")[1].split("[Verdict]")[0]
        verdict = re.search(r"Response (\d) is better\.\s*Does", prompt.split("[Verdict]")[1])
        said = re.findall(r"Response (\d) is better", analysis)
        text = server.reply or ("1" if said and said[-1] == verdict.group(1) else "0")
        data = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_openai() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    server.bodies, server.fail_first, server.reply = [], 0, None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_fake_openai_server_one_and_zero(fake_openai) -> None:
    port = fake_openai.server_address[1]
    analyses = [SUPPORTS_2, SUPPORTS_2, SUPPORTS_1, SUPPORTS_1, SUPPORTS_1, ""]
    answers = [2, 1, 1, 2, None, 1]
    with _judge(port, api_key="secret", concurrency=4) as judge:
        out = judge.judge(analyses, answers)
    assert out == [1, -1, 1, -1, 0, 0]
    # no verdict or empty analysis: answered 0 without asking the server
    assert len(fake_openai.bodies) == 4
    path, auth, body = fake_openai.bodies[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret"
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    assert judge.stats.ok == 4 and judge.stats.failures == 0


def test_cache_avoids_repeated_requests(fake_openai) -> None:
    port = fake_openai.server_address[1]
    with _judge(port) as judge:
        first = judge.judge([SUPPORTS_2, SUPPORTS_1], [2, 2])
        second = judge.judge([SUPPORTS_2, SUPPORTS_1], [2, 2])
    assert first == second == [1, -1]
    assert len(fake_openai.bodies) == 2
    assert judge.stats.cache_hits == 2


def test_retries_after_503_then_succeeds(fake_openai) -> None:
    fake_openai.fail_first = 1
    with _judge(fake_openai.server_address[1], max_retries=2) as judge:
        assert judge.judge([SUPPORTS_2], [2]) == [1]
    assert judge.stats.retries == 1 and judge.stats.requests == 2 and judge.stats.failures == 0


def test_unparseable_reply_is_zero_and_counted(fake_openai) -> None:
    fake_openai.reply = "I am not sure about this one."
    with _judge(fake_openai.server_address[1]) as judge:
        assert judge.judge([SUPPORTS_2, SUPPORTS_1], [2, 1]) == [0, 0]
        assert judge.stats.unparseable == 2 and judge.stats.failures == 2
        fake_openai.reply = None  # failures are not cached: the next call asks again
        assert judge.judge([SUPPORTS_2], [2]) == [1]


def test_images_sent_as_data_urls(fake_openai) -> None:
    from PIL import Image

    image = Image.new("RGB", (8, 8), (255, 0, 0))
    with _judge(fake_openai.server_address[1], use_images=True) as judge:
        assert judge.judge([SUPPORTS_2], [2], images=[[image]]) == [1]
    content = fake_openai.bodies[0][2]["messages"][0]["content"]
    assert content[0]["type"] == "image_url"
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_configuration_from_environment(monkeypatch, fake_openai) -> None:
    port = fake_openai.server_address[1]
    monkeypatch.setenv(ENV_BASE_URL, f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv(ENV_MODEL, "env-model")
    with build_judge("openai", timeout=2.0) as judge:
        assert judge.judge([SUPPORTS_1], [1]) == [1]
    assert fake_openai.bodies[0][2]["model"] == "env-model"
    monkeypatch.delenv(ENV_BASE_URL)
    with pytest.raises(ValueError, match=ENV_BASE_URL):
        OpenAIJudge()
    with pytest.raises(ValueError, match="unknown judge"):
        build_judge("oracle")


def test_judges_and_curation_import_no_toy_and_resolve_toy_kinds_lazily() -> None:
    """The real path (judges, curation) loads without the toy world; ``rule``/``toy`` import it
    on first use, and the old import paths still give the toy classes."""
    code = (
        "import sys\n"
        "import r1reward.judges as j, r1reward.curation as c\n"
        "assert not [m for m in sys.modules if m.startswith('r1reward.toy')], 'toy imported'\n"
        "assert type(j.build_judge('rule')).__module__ == 'r1reward.toy.judge'\n"
        "assert type(c.make_teacher({'kind': 'toy'})).__module__ == 'r1reward.toy.teacher'\n"
        "from r1reward.judges import RuleJudge\n"
        "from r1reward.curation import ToyTeacher\n"
        "print(RuleJudge.__module__, ToyTeacher.__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["r1reward.toy.judge", "r1reward.toy.teacher"]
    assert set(JUDGES) == {"rule", "openai", "transformers"}
    with pytest.raises(AttributeError, match="NoSuchJudge"):
        judges_module.NoSuchJudge  # noqa: B018 - the module __getattr__ must refuse other names
