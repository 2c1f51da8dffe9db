"""Load figures of ``r1reward serve``: requests/s and p50/p95 latency of ``POST /v1/reward``.

Starts the real server (``python -m r1reward.cli serve``) in a subprocess on 127.0.0.1 and a free
port, with the tiny Qwen2.5-VL built into a temporary folder (or ``--model PATH``), then sends a
bounded number of ``/v1/reward`` requests at several concurrency levels from an asyncio httpx
client and prints one table. With ``--compare-unbatched`` (default on) a second server with
``--max-batch-items 1`` (every request generated on its own) runs the same load, so the effect of
cross-request batching is measured in the same run.

Each request is a toy pair with its 56x56 image, judged with ``k`` judgments per order in both
orders (k=1: greedy). The tiny model is untrained, so its judgments run to ``--max-tokens``: the
figures measure the service and the batching, not a real 7B model.

    python benchmarks/bench_serve.py                      # defaults: k=1, levels 1,8,32,64
    python benchmarks/bench_serve.py --k 4 --levels 1,16 --requests 32
    python benchmarks/bench_serve.py --api-key KEY      # every request authenticated

Every server option the benchmark sets exists in the original service too, so the same script
measures the code before and after a change. ``--checkouts A,B --repeat N`` does it in one run:
the servers are started from each source tree in turn (its folder as working directory and
``PYTHONPATH``, so ``python -m r1reward.cli`` imports that tree's code), alternating ``N`` times,
so a change in the machine's load hits every checkout alike; a summary gives each checkout's
median and range per level.

    python benchmarks/bench_serve.py --model TINY --checkouts /tmp/before,. --repeat 5 --levels 1,8,64

Besides wall-clock figures each row has the server process's CPU time per request (user + system,
all threads, from ``/proc``; Linux only): on a machine shared with other work, wall-clock latency
moves with the neighbours' load while CPU time per request mostly does not.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _payloads(n: int, k: int) -> list[dict]:
    """``n`` toy pairs as /v1/reward bodies (images as data URLs)."""
    from r1reward.toy.world import make_pairs

    out = []
    for pair in make_pairs(n, seed=123, split="heldout"):
        images = []
        for image in pair.images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            images.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
        out.append(
            {
                "question": pair.question,
                "images": images,
                "response_1": pair.response_1,
                "response_2": pair.response_2,
                "k": k,
                "both_orders": True,
            }
        )
    return out


class Server:
    """``r1reward serve`` in a subprocess; ``url`` once ``/health`` answers."""

    def __init__(
        self,
        model: str,
        args: list[str],
        log: Path,
        startup_timeout: float = 900.0,
        source: Path | None = None,
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "r1reward.cli", "serve", "--model", model]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *args]
        env = None
        if source is not None:  # `python -m` puts the working directory first on sys.path
            env = {**os.environ, "PYTHONPATH": str(source)}
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=source, env=env
        )
        deadline = time.monotonic() + startup_timeout  # a loaded machine can take minutes
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"server did not answer /health within {startup_timeout:.0f} s; see {log}"
                )
            time.sleep(0.2)

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the server process so far (all its threads); ``None``
        where ``/proc`` is not there."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[
            stat.rindex(")") + 2 :
        ].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def _load(
    url: str, payloads: list[dict], concurrency: int, headers: dict | None = None
) -> tuple[float, list[float]]:
    """Send every payload, at most ``concurrency`` in flight; (wall seconds, latencies)."""
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=limits, headers=headers
    ) as client:

        async def one(body: dict) -> None:
            async with semaphore:
                start = time.perf_counter()
                response = await client.post("/v1/reward", json=body)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()
                data = response.json()
                assert data["votes"]["1"] + data["votes"]["2"] + data["votes"]["unparseable"] == (
                    2 * body["k"]
                ), data

        start = time.perf_counter()
        await asyncio.gather(*(one(body) for body in payloads))
        return time.perf_counter() - start, latencies


def _check_cost(model: str, payloads: list[dict]) -> list[float] | None:
    """Seconds per request of the service's own checks, in-process, without generating:
    admission, image decode within the pixel caps, and the prompt-token count of both orders.
    ``None`` on a checkout whose service has no :class:`r1reward.serve.Guard`."""
    try:
        from r1reward.serve import Engine, Guard, Limits
    except ImportError:
        return None
    from r1reward.evaluate import ConstantSampler
    from r1reward.models import load_model
    from r1reward.prompt import build_messages

    loaded, processor = load_model(model)
    engine = Engine(loaded, processor, "bench", sampler=ConstantSampler())
    guard = Guard(engine, Limits())

    async def one(body: dict) -> float:
        start = time.perf_counter()
        async with guard.admit() as ticket:
            refs = body["images"]
            images = await guard.images(ticket, refs, [f"images.{i}" for i in range(len(refs))])
            q, r1, r2 = body["question"], body["response_1"], body["response_2"]
            guard.check_prompts(
                [build_messages(q, r1, r2, images=images), build_messages(q, r2, r1, images=images)]
            )
        return time.perf_counter() - start

    async def run() -> list[float]:
        return [await one(body) for body in payloads]

    try:
        return asyncio.run(run())
    finally:
        guard.close()
        engine.close()


def _percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else values[0]
    )


def _label(source: Path | None) -> str:
    """A checkout's short commit (with ``+`` when its tracked files differ from it), else its path."""
    if source is None:
        return "this"
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "diff", "--quiet", "HEAD"], check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return str(source)
    return commit + ("+" if dirty else "")


def _measure(
    server: Server, name: str, payloads: list[dict], level: int, headers: dict | None
) -> dict:
    """One level's row: wall figures from the client, CPU per request from the server."""
    cpu_before = server.cpu_seconds()
    wall, latencies = asyncio.run(_load(server.url, payloads, level, headers))
    cpu_after = server.cpu_seconds()
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None:
        cpu_ms = 1000 * (cpu_after - cpu_before) / len(latencies)
    return {
        "server": name,
        "concurrency": level,
        "requests": len(latencies),
        "seconds": wall,
        "req_per_s": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * _percentile(latencies, 95),
        "cpu_ms_per_req": cpu_ms,
        "load_average": os.getloadavg()[0],
    }


def _summary(rows: list[dict]) -> None:
    """Per server and level: median and range over the repeated runs."""
    print(f"\nmedian [min - max] over {max(r['run'] for r in rows) + 1} runs")
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["server"], row["concurrency"]), []).append(row)
    for (name, level), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        parts = []
        for key, fmt in (("req_per_s", ".2f"), ("p50_ms", ".0f"), ("cpu_ms_per_req", ".0f")):
            values = [r[key] for r in group if r[key] is not None]
            if values:
                parts.append(
                    f"{key} {statistics.median(values):{fmt}} "
                    f"[{min(values):{fmt}} - {max(values):{fmt}}]"
                )
        print(f"{name:<24} {level:>4}  " + "  ".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="model folder (default: build the tiny model)"
    )
    parser.add_argument("--levels", default="1,8,32,64", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=64, help="requests per level")
    parser.add_argument("--k", type=int, default=1, help="judgments per order (1 = greedy)")
    parser.add_argument(
        "--max-tokens", type=int, default=64, help="judgment budget (--reward-max-tokens)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--no-compare-unbatched", action="store_true")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    parser.add_argument(
        "--api-key", default=None, help="start the servers with --api-key and send it"
    )
    parser.add_argument(
        "--checkouts",
        default=None,
        help="comma-separated source trees (e.g. a `git worktree` of the old commit, and .) whose "
        "servers are measured in turn; implies --no-compare-unbatched",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of every server, alternated (default 1)"
    )
    args = parser.parse_args()

    levels = [int(x) for x in args.levels.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    model = args.model
    if model is None:
        from r1reward.toy.tiny_model import build_tiny_model

        model = str(build_tiny_model(workdir / "tiny"))
    model = str(Path(model).resolve())  # the servers may run in other folders
    payloads = _payloads(args.requests, args.k)
    common = ["--reward-max-tokens", str(args.max_tokens), "--threads", str(args.threads)]
    headers = None
    if args.api_key:
        common += ["--api-key", args.api_key]
        headers = {"authorization": f"Bearer {args.api_key}"}
    sources: list[Path | None] = [None]
    if args.checkouts:
        sources = [Path(c).resolve() for c in args.checkouts.split(",")]
        for source in sources:
            if not (source / "r1reward" / "cli.py").is_file():
                parser.error(f"--checkouts: {source} holds no r1reward/cli.py")
    configs = [(_label(s) if args.checkouts else "batched", common, s) for s in sources]
    if not args.no_compare_unbatched and not args.checkouts:
        configs.append(("unbatched", [*common, "--max-batch-items", "1"], None))

    print(
        f"r1reward serve /v1/reward: model={model} k={args.k} both orders "
        f"({2 * args.k} judgments/request), max_tokens={args.max_tokens}, server torch threads="
        f"{args.threads}, {args.requests} requests per level, api key="
        f"{'yes' if args.api_key else 'no'}, cpu cores={os.cpu_count()}, "
        f"load average at start={os.getloadavg()[0]:.1f} (other processes share the cores)"
    )
    header = (
        f"{'server':<12} {'run':>3} {'concurrency':>11} {'requests':>8} {'seconds':>8} "
        f"{'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms/req':>10} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for run in range(args.repeat):
        for name, server_args, source in configs:
            server = Server(model, server_args, workdir / f"server_{name}_{run}.log", source=source)
            try:
                asyncio.run(_load(server.url, payloads[:2], 2, headers))  # warm-up, not timed
                for level in levels:
                    row = {"run": run, **_measure(server, name, payloads, level, headers)}
                    rows.append(row)
                    cpu = row["cpu_ms_per_req"]
                    print(
                        f"{name:<12} {run:>3} {level:>11} {row['requests']:>8} "
                        f"{row['seconds']:>8.2f} {row['req_per_s']:>7.2f} {row['p50_ms']:>8.0f} "
                        f"{row['p95_ms']:>8.0f} {'-' if cpu is None else f'{cpu:.0f}':>10} "
                        f"{row['load_average']:>5.1f}",
                        flush=True,
                    )
                health = httpx.get(server.url + "/health").json()
                print(
                    f"{'':<12} ({health['batches']} batches for {health['requests']} requests, "
                    f"at most {health['max_requests_per_batch']} requests in one batch)"
                )
            finally:
                server.stop()
    if args.repeat > 1:
        _summary(rows)
    costs = None if args.checkouts else _check_cost(model, payloads)
    if costs is not None:
        print(
            f"the service's checks alone (admission, image decode, prompt tokens of both orders), "
            f"in-process, one request at a time: p50 {1000 * statistics.median(costs):.1f} ms, "
            f"p95 {1000 * _percentile(costs, 95):.1f} ms per request"
        )
        rows.append({"server": "checks only", "p50_ms": 1000 * statistics.median(costs)})
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
