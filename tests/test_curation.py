"""Curation (paper Sec. 4.3): teachers, difficulty, resumable JSONL, endpoint faults.

The OpenAI-compatible teacher is tested against real HTTP servers on 127.0.0.1 (no mocked client):
connection refused, a server that hangs past the timeout, HTTP 500, a reply without a verdict,
and a curation subprocess killed mid-run and restarted.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from r1reward.curation import (
    NEVER,
    OpenAITeacher,
    Reply,
    curate,
    difficulty_histogram,
    main,
    make_teacher,
    read_records,
    select_hard,
)
from r1reward.data.schema import PreferencePair
from r1reward.toy.teacher import ToyTeacher

REPO = Path(__file__).resolve().parents[1]


def make_pair(i: int, preferred: int, difficulty: int | None = None) -> PreferencePair:
    img = Image.new("RGB", (8, 8), (i * 40 % 256, 0, 0))
    return PreferencePair(
        id=f"p{i}",
        question=f"question {i} pref{preferred}",
        images=[img],
        response_1="a red square",
        response_2="a blue circle",
        preferred=preferred,
        category="general",
        difficulty=difficulty,
        source="test",
    )


PAIRS = [make_pair(i, 1 + i % 2) for i in range(6)]


class Server:
    """A real chat-completions server on 127.0.0.1 whose behaviour a test sets per request."""

    def __init__(self, behave):
        self.behave = behave  # (server, body) -> (status, text or dict)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                status, payload = outer.behave(outer, body)
                if isinstance(payload, str):
                    payload = {"choices": [{"message": {"role": "assistant", "content": payload}}]}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def prompt_of(body: dict) -> str:
    return [c for c in body["messages"][0]["content"] if c["type"] == "text"][0]["text"]


def right_answer(server, body):
    """Answers with the label hidden in the question ("pref2") -> every pair difficulty 1."""
    k = re.search(r"pref(\d)", prompt_of(body)).group(1)
    return 200, f"<think>I compared both.</think><answer>{k}</answer>"


@pytest.fixture
def serve():
    servers = []

    def start(behave):
        s = Server(behave)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def teacher(url: str, **kw) -> OpenAITeacher:
    kw.setdefault("max_retries", 2)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5.0)
    return OpenAITeacher(url, "test-model", "sk-test", **kw)


def test_openai_teacher_sends_images_and_records_difficulty(serve, tmp_path):
    s = serve(right_answer)
    with teacher(s.url, concurrency=3) as t:
        out = curate(PAIRS, t, tmp_path / "c.jsonl", progress=False)
    assert [p.id for p in out] == [p.id for p in PAIRS]
    assert all(p.difficulty == 1 for p in out)
    assert out[0].meta["teacher_analysis"] == "I compared both."
    body = s.requests[0]
    assert body["model"] == "test-model" and body["temperature"] == 1.0
    image_parts = [c for c in body["messages"][0]["content"] if c["type"] == "image_url"]
    assert len(image_parts) == 1
    assert image_parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert s.headers[0]["Authorization"] == "Bearer sk-test"
    assert len(s.requests) == len(PAIRS)


def test_env_vars_configure_the_endpoint(serve, monkeypatch):
    s = serve(right_answer)
    monkeypatch.setenv("R1REWARD_TEACHER_BASE_URL", s.url)
    monkeypatch.setenv("R1REWARD_TEACHER_MODEL", "env-model")
    monkeypatch.delenv("R1REWARD_TEACHER_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
    with OpenAITeacher() as t:
        replies = t.analyse(PAIRS[:1], 1)
    assert replies[0].error is None and "<answer>1</answer>" in replies[0].text
    assert s.requests[0]["model"] == "env-model"
    assert s.headers[0]["Authorization"] == "Bearer sk-fallback"
    monkeypatch.delenv("R1REWARD_TEACHER_BASE_URL")
    with pytest.raises(ValueError, match="R1REWARD_TEACHER_BASE_URL"):
        OpenAITeacher()


def test_connection_refused_is_retried_and_recorded(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with teacher(url, max_retries=2) as t:
        out = curate(PAIRS[:2], t, tmp_path / "c.jsonl", max_tries=2, progress=False)
    assert out == []
    recs = read_records(tmp_path / "c.jsonl")
    assert set(recs) == {"p0", "p1"}
    for rec in recs.values():
        assert rec["status"] == "failed" and rec["difficulty"] is None
        assert [a["outcome"] for a in rec["attempts"]] == ["error", "error"]
        assert "3 request(s) failed" in rec["attempts"][0]["error"]
        assert "ConnectError" in rec["attempts"][0]["error"]


def test_hanging_server_times_out_and_is_recorded(serve, tmp_path):
    def hang(server, body):
        time.sleep(1.5)
        return right_answer(server, body)

    s = serve(hang)
    with teacher(s.url, timeout=0.2, max_retries=1) as t:
        t0 = time.monotonic()
        out = curate(PAIRS[:1], t, tmp_path / "c.jsonl", max_tries=1, progress=False)
        elapsed = time.monotonic() - t0
    assert out == []
    rec = read_records(tmp_path / "c.jsonl")["p0"]
    assert rec["status"] == "failed"
    assert rec["attempts"][0]["error"].count("timeout") == 2  # first request + 1 retry
    assert s.count() == 2
    assert elapsed < 1.5 * 2  # the client did not wait for the hung replies


def test_http_500_is_retried_with_backoff_then_succeeds(serve, tmp_path):
    def flaky(server, body):
        if server.count() <= 2:
            return 500, {"error": "overloaded"}
        return right_answer(server, body)

    s = serve(flaky)
    with teacher(s.url, concurrency=1, max_retries=3) as t:
        out = curate(PAIRS[:1], t, tmp_path / "c.jsonl", progress=False)
    assert len(out) == 1 and out[0].difficulty == 1
    assert s.count() == 3


def test_http_500_forever_is_recorded_not_raised(serve, tmp_path):
    s = serve(lambda server, body: (500, {"error": "boom"}))
    with teacher(s.url, max_retries=1) as t:
        out = curate(PAIRS[:1], t, tmp_path / "c.jsonl", max_tries=3, progress=False)
    assert out == []
    rec = read_records(tmp_path / "c.jsonl")["p0"]
    assert rec["status"] == "failed"
    assert len(rec["attempts"]) == 3
    assert all("HTTP 500" in a["error"] for a in rec["attempts"])
    assert s.count() == 3 * 2


def test_reply_that_is_not_a_chat_completion_is_retried_then_recorded(serve, tmp_path):
    """A sampling teacher may answer properly next time: a 200 without ``choices`` is retried."""
    s = serve(lambda server, body: (200, {"not": "a chat completion"}))
    with teacher(s.url, max_retries=2) as t:
        replies = t.analyse(PAIRS[:1], 1)
    assert replies[0].text is None
    assert "3 request(s) failed" in replies[0].error
    assert replies[0].error.count("not a chat completion (KeyError)") == 3
    assert s.count() == 3


def test_unknown_teacher_kind_names_the_kinds():
    with pytest.raises(ValueError, match=r"data\.teacher\.kind='gpt'.*'openai'.*'toy'"):
        make_teacher({"kind": "gpt"})


def test_client_error_is_not_retried(serve, tmp_path):
    s = serve(lambda server, body: (401, {"error": "bad key"}))
    with teacher(s.url, max_retries=3) as t:
        replies = t.analyse(PAIRS[:1], 1)
    assert replies[0].text is None and "HTTP 401" in replies[0].error
    assert s.count() == 1


def test_reply_without_verdict_counts_as_a_wrong_try(serve, tmp_path):
    s = serve(lambda server, body: (200, "I think the first one, maybe."))
    with teacher(s.url) as t:
        out = curate(PAIRS[:2], t, tmp_path / "c.jsonl", max_tries=3, progress=False)
    assert [p.difficulty for p in out] == [NEVER, NEVER]
    assert out[0].meta["teacher_analysis"] is None
    rec = read_records(tmp_path / "c.jsonl")["p0"]
    assert rec["status"] == "done"
    assert [a["outcome"] for a in rec["attempts"]] == ["no_verdict"] * 3
    assert s.count() == 6


def test_difficulty_is_the_first_correct_try(serve, tmp_path):
    """Wrong on the first two tries, right on the third -> difficulty 3."""
    seen: dict[str, int] = {}

    def third_time(server, body):
        q = prompt_of(body)
        with server.lock:
            seen[q] = seen.get(q, 0) + 1
            n = seen[q]
        k = int(re.search(r"pref(\d)", q).group(1))
        return 200, f"<think>try {n}</think><answer>{k if n == 3 else 3 - k}</answer>"

    s = serve(third_time)
    with teacher(s.url) as t:
        out = curate(PAIRS[:3], t, tmp_path / "c.jsonl", progress=False)
    assert [p.difficulty for p in out] == [3, 3, 3]
    assert out[0].meta["teacher_analysis"] == "try 3"
    outcomes = [a["outcome"] for a in read_records(tmp_path / "c.jsonl")["p1"]["attempts"]]
    assert outcomes == ["wrong", "wrong", "correct"]


def test_failed_pairs_are_redone_on_the_next_run(serve, tmp_path):
    out_path = tmp_path / "c.jsonl"
    with teacher(f"http://127.0.0.1:{closed_port()}/v1", max_retries=0) as t:
        assert curate(PAIRS[:3], t, out_path, max_tries=1, progress=False) == []
    s = serve(right_answer)
    with teacher(s.url) as t:
        out = curate(PAIRS[:3], t, out_path, progress=False)
    assert [p.difficulty for p in out] == [1, 1, 1]
    assert {r["status"] for r in read_records(out_path).values()} == {"done"}
    with teacher(s.url) as t:  # a third run has nothing left to do
        before = s.count()
        again = curate(PAIRS[:3], t, out_path, progress=False)
    assert s.count() == before and [p.id for p in again] == [p.id for p in out]


class CountingTeacher:
    """Always right; counts calls per pair id; raises after ``crash_after`` calls."""

    name = "counting"

    def __init__(self, crash_after: int | None = None):
        self.calls: dict[str, int] = {}
        self.crash_after = crash_after

    def analyse(self, pairs, attempt):
        out = []
        for p in pairs:
            if self.crash_after is not None and sum(self.calls.values()) >= self.crash_after:
                raise KeyboardInterrupt("simulated kill")
            self.calls[p.id] = self.calls.get(p.id, 0) + 1
            out.append(Reply(f"<think>ok</think><answer>{p.preferred}</answer>"))
        return out


def test_interrupted_run_and_torn_line_resume_without_redoing(tmp_path):
    out_path = tmp_path / "c.jsonl"
    t1 = CountingTeacher(crash_after=3)
    with pytest.raises(KeyboardInterrupt):
        curate(PAIRS, t1, out_path, batch_size=1, progress=False)
    finished = set(read_records(out_path))
    assert finished == {"p0", "p1", "p2"}
    with out_path.open("a") as fh:  # a kill in the middle of writing the next record
        fh.write('{"id": "p3", "status": "do')
    t2 = CountingTeacher()
    out = curate(PAIRS, t2, out_path, batch_size=1, progress=False)
    assert [p.id for p in out] == [p.id for p in PAIRS]
    assert set(t2.calls) == {"p3", "p4", "p5"}  # nothing finished was asked again
    lines = out_path.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]  # every line parses: the torn tail is gone
    assert sorted(ids) == sorted(p.id for p in PAIRS)


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    good = json.dumps({"id": "a", "status": "done", "difficulty": 1})
    path.write_text(good + "\nnot json\n" + good.replace('"a"', '"b"') + "\n")
    with pytest.raises(ValueError, match=r"c\.jsonl:2: not a curation record"):
        read_records(path)


def test_teacher_exception_is_recorded_not_raised(tmp_path):
    class Broken:
        name = "broken"

        def analyse(self, pairs, attempt):
            raise RuntimeError("model exploded")

    out = curate(PAIRS[:2], Broken(), tmp_path / "c.jsonl", progress=False)
    assert out == []
    rec = read_records(tmp_path / "c.jsonl")["p0"]
    assert rec["status"] == "failed" and "model exploded" in rec["attempts"][0]["error"]


def test_duplicate_ids_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate pair ids"):
        curate([PAIRS[0], PAIRS[0]], CountingTeacher(), tmp_path / "c.jsonl", progress=False)


def test_select_hard_and_histogram():
    pairs = [make_pair(i, 1, difficulty=d) for i, d in enumerate([1, 1, 2, 3, 4, None])]
    assert [p.difficulty for p in select_hard(pairs)] == [2, 3, 4]
    assert [p.difficulty for p in select_hard(pairs, min_difficulty=3)] == [3, 4]
    assert difficulty_histogram(pairs) == {1: 2, 2: 1, 3: 1, 4: 1}


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from PIL import Image
    from r1reward.curation import OpenAITeacher, curate
    from r1reward.data.schema import PreferencePair
    pairs = [PreferencePair(id=f"p{i}", question=f"q{i} pref{1 + i % 2}",
                            images=[Image.new("RGB", (8, 8))], response_1="a", response_2="b",
                            preferred=1 + i % 2) for i in range(int(sys.argv[3]))]
    with OpenAITeacher(sys.argv[1], "m", "", concurrency=1, max_retries=0) as t:
        curate(pairs, t, sys.argv[2], batch_size=1, progress=False)
    """
)


def test_killed_subprocess_resumes_without_redoing_finished_pairs(serve, tmp_path):
    def slow(server, body):
        time.sleep(0.05)
        return right_answer(server, body)

    s = serve(slow)
    out_path = tmp_path / "c.jsonl"
    n = 40
    cmd = [sys.executable, "-c", KILL_SCRIPT, s.url, str(out_path), str(n)]
    proc = subprocess.Popen(cmd, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out_path.exists() and out_path.read_text().count("\n") >= 5:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    done_before = set(read_records(out_path))
    assert 5 <= len(done_before) < n
    asked_before = s.count()
    subprocess.run(cmd, cwd=REPO, check=True, timeout=120)
    recs = read_records(out_path)
    ids = [json.loads(line)["id"] for line in out_path.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == n  # no duplicates, all done
    assert all(r["status"] == "done" and r["difficulty"] == 1 for r in recs.values())
    asked_after = [prompt_of(b).split()[0] for b in s.requests[asked_before:]]
    assert not {q.replace("q", "p") for q in asked_after} & done_before


def test_cli_help_mentions_resume_and_env_vars(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "resume" in text and "R1REWARD_TEACHER_BASE_URL" in text


def test_toy_teacher_error_rate_grows_with_level():
    t = ToyTeacher(0, base_error=0.1, error_per_difficulty=0.2, max_error=0.45)
    rates = [t.error_rate(make_pair(0, 1, difficulty=d)) for d in (1, 2, 3)]
    assert rates == pytest.approx([0.1, 0.3, 0.45])


def test_toy_teacher_end_to_end_is_deterministic_and_harder_for_harder_pairs(tmp_path):
    from r1reward.toy import world as toy

    pairs = toy.make_pairs(300, seed=0)
    teacher = ToyTeacher(0, base_error=0.1, error_per_difficulty=0.3)
    out = curate(pairs, teacher, tmp_path / "a.jsonl", progress=False)
    again = curate(
        pairs,
        ToyTeacher(0, base_error=0.1, error_per_difficulty=0.3),
        tmp_path / "b.jsonl",
        progress=False,
    )
    assert [p.difficulty for p in out] == [p.difficulty for p in again]
    assert len(out) == len(pairs)  # the toy teacher never fails to reply
    for p in out[:50]:
        if p.difficulty < NEVER:
            assert p.meta["teacher_analysis"] == toy.teacher_analysis(p, p.preferred)
    recs = read_records(tmp_path / "a.jsonl")
    wrong = [a for r in recs.values() for a in r["attempts"] if a["outcome"] == "wrong"]
    assert wrong and all(
        toy.analysis_verdict(a["text"].split("<think>")[1].split("</think>")[0]) == a["verdict"]
        for a in wrong
    )

    assert [p.meta["level"] for p in out] == [raw.difficulty for raw in pairs]
    assert [teacher.level(p) for p in out] == [teacher.level(raw) for raw in pairs]

    def mean_tries(level):
        sub = [p for p, raw in zip(out, pairs) if raw.difficulty == level]
        return sum(p.difficulty for p in sub) / len(sub)

    assert mean_tries(1) < mean_tries(3)
    hist = difficulty_histogram(out)
    assert sum(hist.values()) == len(out) and hist[1] > hist[2] > 0


def test_cli_curates_toy_pairs_and_resumes(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert main(["--toy", "20", "--out", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert "curated 20/20" in first and "difficulty" in first
    n_lines = len(out.read_text().splitlines())
    assert main(["--toy", "20", "--out", str(out), "--quiet"]) == 0
    assert len(out.read_text().splitlines()) == n_lines == 20  # nothing redone
