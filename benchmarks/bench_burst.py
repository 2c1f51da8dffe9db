"""A GRPO-shaped burst on ``r1reward serve``: many group-ranking requests at once, /health polled.

A GRPO step asks for the rewards of all its groups at the same moment. This script starts the
real server (``python -m r1reward.cli serve``, as ``bench_serve.py`` does) with the tiny
Qwen2.5-VL (or ``--model PATH``), then sends ``--requests`` ``POST /v1/reward/group`` requests
of ``--group`` candidates each, all in flight at once (``--concurrency``), while a second task
polls ``GET /health`` every ``--health-every`` seconds. It prints whether every request finished
with 200, the burst's wall time, judgments/s (a group of G costs G (G - 1) judgments, times k
when sampling), request latency p50/p95/max, and the /health latency p50/p95/max during the burst
and how many health polls failed.

Each group is a toy question with its 56x56 image and G answers (the two toy responses and
variants of them). The tiny model is untrained, so each judgment runs to ``--max-tokens``: the
figures measure the service (batching, the event loop staying free), not a 7B judge.

    python benchmarks/bench_burst.py                       # 64 requests of G=4, all at once
    python benchmarks/bench_burst.py --requests 32 --group 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import Server, _percentile  # noqa: E402 - the same server runner

from r1reward.clients import image_to_data_url  # noqa: E402


def _groups(n: int, g: int) -> list[dict]:
    """``n`` group-ranking bodies of ``g`` candidates each, from held-out toy pairs."""
    from r1reward.toy.world import make_pairs

    out = []
    for pair in make_pairs(n, seed=321, split="heldout"):
        base = [pair.response_1, pair.response_2]
        candidates = [base[i % 2] + ("" if i < 2 else f" (variant {i})") for i in range(g)]
        out.append(
            {
                "question": pair.question,
                "images": [image_to_data_url(im) for im in pair.images],
                "responses": candidates,
            }
        )
    return out


async def _burst(
    url: str, bodies: list[dict], k: int, concurrency: int, health_every: float
) -> dict:
    limits = httpx.Limits(
        max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2
    )
    statuses: list[int] = []
    latencies: list[float] = []
    health: list[float] = []
    health_failures = 0
    done = asyncio.Event()
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=1200, limits=limits) as client:

        async def one(body: dict) -> None:
            async with gate:
                start = time.perf_counter()
                response = await client.post("/v1/reward/group", json={**body, "k": k})
                latencies.append(time.perf_counter() - start)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    data = response.json()
                    assert len(data["scores"]) == len(body["responses"]), data

        async def poll() -> None:
            nonlocal health_failures
            async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
                while not done.is_set():
                    start = time.perf_counter()
                    try:
                        ok = (await probe.get("/health")).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    health.append(time.perf_counter() - start)
                    health_failures += not ok
                    await asyncio.sleep(health_every)

        poller = asyncio.create_task(poll())
        start = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        wall = time.perf_counter() - start
        done.set()
        await poller
    return {
        "wall": wall,
        "statuses": statuses,
        "latencies": latencies,
        "health": health,
        "health_failures": health_failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="model folder (default: build the tiny model)"
    )
    parser.add_argument("--requests", type=int, default=64, help="group requests in the burst")
    parser.add_argument("--group", type=int, default=4, help="candidates per group (G)")
    parser.add_argument("--k", type=int, default=1, help="judgments per order (1 = greedy)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at once")
    parser.add_argument(
        "--max-tokens", type=int, default=64, help="judgment budget (--reward-max-tokens)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument(
        "--health-every", type=float, default=0.25, help="seconds between /health polls"
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=300.0, help="seconds to wait for /health at start"
    )
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_burst_"))
    model = args.model
    if model is None:
        from r1reward.toy.tiny_model import build_tiny_model

        model = str(build_tiny_model(workdir / "tiny"))
    bodies = _groups(args.requests, args.group)
    per_request = args.group * (args.group - 1) * (1 if args.k == 1 else args.k)
    load = os.getloadavg()[0]
    server = Server(
        model,
        ["--reward-max-tokens", str(args.max_tokens), "--threads", str(args.threads)],
        workdir / "server.log",
        startup_timeout=args.startup_timeout,
    )
    try:
        asyncio.run(_burst(server.url, bodies[:1], args.k, 1, args.health_every))  # warm-up
        before = httpx.get(server.url + "/health").json()
        r = asyncio.run(_burst(server.url, bodies, args.k, args.concurrency, args.health_every))
        after = httpx.get(server.url + "/health").json()
    finally:
        server.stop()
    ok = sum(s == 200 for s in r["statuses"])
    judgments = ok * per_request
    figures = {
        "requests": len(bodies),
        "ok": ok,
        "group": args.group,
        "k": args.k,
        "judgments": judgments,
        "wall_s": r["wall"],
        "judgments_per_s": judgments / r["wall"],
        "requests_per_s": ok / r["wall"],
        "p50_ms": 1000 * statistics.median(r["latencies"]),
        "p95_ms": 1000 * _percentile(r["latencies"], 95),
        "max_ms": 1000 * max(r["latencies"]),
        "health_polls": len(r["health"]),
        "health_failures": r["health_failures"],
        "health_p50_ms": 1000 * statistics.median(r["health"]),
        "health_p95_ms": 1000 * _percentile(r["health"], 95),
        "health_max_ms": 1000 * max(r["health"]),
        "batches": after["batches"] - before["batches"],
        "max_requests_per_batch": after["max_requests_per_batch"],
    }
    print(
        f"r1reward serve /v1/reward/group burst: model={model}, {args.requests} requests of G="
        f"{args.group} (k={args.k}: {per_request} judgments each), {args.concurrency} in flight, "
        f"max_tokens={args.max_tokens}, server torch threads={args.threads}, cpu cores="
        f"{os.cpu_count()}, load average at start={load:.1f}"
    )
    print(
        f"finished {ok}/{len(bodies)} with 200 in {r['wall']:.1f} s: {figures['judgments_per_s']:.1f} "
        f"judgments/s, {figures['requests_per_s']:.2f} requests/s; request latency p50 "
        f"{figures['p50_ms']:.0f} ms, p95 {figures['p95_ms']:.0f} ms, max {figures['max_ms']:.0f} ms"
    )
    print(
        f"/health during the burst: {figures['health_polls']} polls, {figures['health_failures']} "
        f"failed, p50 {figures['health_p50_ms']:.0f} ms, p95 {figures['health_p95_ms']:.0f} ms, "
        f"max {figures['health_max_ms']:.0f} ms; {figures['batches']} model batches, at most "
        f"{figures['max_requests_per_batch']} requests in one"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0 if ok == len(bodies) and not r["health_failures"] else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # a SIGTERM (a timeout, a kill) unwinds through the finally that stops the server subprocess
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
