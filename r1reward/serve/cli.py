"""``r1reward serve``: the command line (:func:`build_parser`, :func:`main`).

Loads the model once (:func:`~r1reward.serve.engine.build_engine`), builds the app
(:func:`~r1reward.serve.app.create_app`) with the limits, access rules and connection settings
given as flags, and runs it with uvicorn in this process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from r1reward.engines import add_engine_argument, resolve_engine
from r1reward.serve.app import create_app
from r1reward.serve.engine import build_engine
from r1reward.serve.limits import (
    API_KEY_ENV,
    LOOPBACK_NAMES,
    Access,
    add_limit_arguments,
    is_loopback,
    limits_from_args,
)
from r1reward.serve.server import ServerSettings

__all__ = ["build_parser", "bind_message", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``r1reward serve`` arguments; the limits come from :class:`~r1reward.serve.limits.Limits`' fields."""
    parser = argparse.ArgumentParser(
        prog="r1reward serve",
        description=(
            "Serve a generative reward model over HTTP: OpenAI-compatible /v1/chat/completions and "
            "/v1/models, the pairwise reward POST /v1/reward, and GET /health. Loads the model once."
        ),
        epilog=(
            "example: r1reward build-tiny --out runs/tiny && r1reward serve --model runs/tiny --port 8000\n"
            "then: curl -s localhost:8000/v1/reward -H 'content-type: application/json' -d "
            '\'{"question": "...", "response_1": "...", "response_2": "...", "k": 4}\''
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    u = ServerSettings()
    parser.add_argument("--model", required=True, help="model folder or Hugging Face hub id")
    parser.add_argument(
        "--served-model-name", default=None, help="name in /v1/models (default: folder name)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1: this machine only; 0.0.0.0: every interface)",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--dtype", default=None, help="torch dtype, e.g. bfloat16 (default: the model's)"
    )
    parser.add_argument(
        "--device-map", default=None, help="e.g. auto or cuda:0 (default: CPU/accelerate default)"
    )
    add_engine_argument(parser)
    parser.add_argument(
        "--batch-size", type=int, default=16, help="prompts per generate call (default 16)"
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a batch waits for company (default 5)",
    )
    parser.add_argument(
        "--max-batch-items",
        type=int,
        default=64,
        help="prompts merged into one batch at most (default 64)",
    )
    parser.add_argument(
        "--reward-max-tokens", type=int, default=1024, help="judgment length budget for /v1/reward"
    )
    parser.add_argument(
        "--reward-temperature",
        type=float,
        default=1.0,
        help="sampling temperature for /v1/reward (k > 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for generation (default: torch's choice); on a small shared "
        "CPU, 1 avoids oversubscription",
    )
    add_limit_arguments(parser.add_argument_group("limits (each request's cost and memory)"))
    conn = parser.add_argument_group("connections (uvicorn)")
    conn.add_argument("--timeout-keep-alive", type=int, default=u.timeout_keep_alive)
    conn.add_argument(
        "--timeout-header",
        type=float,
        default=u.timeout_header,
        help=f"seconds to send a complete request head (default {u.timeout_header:g})",
    )
    conn.add_argument(
        "--max-connections",
        type=int,
        default=u.limit_concurrency,
        help=f"connections + requests at once, beyond it 503 (default {u.limit_concurrency})",
    )
    conn.add_argument(
        "--shutdown-timeout",
        type=int,
        default=u.timeout_graceful_shutdown,
        help="seconds a stopping server waits for requests in flight "
        f"(default {u.timeout_graceful_shutdown})",
    )
    access = parser.add_argument_group("access")
    access.add_argument(
        "--api-key",
        default=None,
        help=f"require Authorization: Bearer KEY on every route but /health (default: ${API_KEY_ENV})",
    )
    add_limit_arguments(access, "access")
    access.add_argument(
        "--no-local-images", action="store_true", help=argparse.SUPPRESS
    )  # the default since local paths became opt-in; kept so old command lines still run
    access.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json")
    access.add_argument(
        "--allowed-hosts",
        default=None,
        help="comma-separated Host header names to accept (default: loopback names when bound "
        "to loopback, any otherwise)",
    )
    parser.add_argument("--log-level", default="info")
    return parser


def bind_message(host: str, port: int) -> str:
    """What ``main`` prints about the bind address (loopback is any 127.x / ::1 / localhost)."""
    if is_loopback(host.strip("[]").lower()):
        return f"r1reward serve: listening on {host}:{port}: this machine only"
    return f"r1reward serve: listening on {host}:{port}: reachable from other machines"


def main(argv: list[str] | None = None) -> int:
    """``r1reward serve``: load the model once and serve it until stopped (0 on a clean stop)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import uvicorn

    if args.allow_local_images and not args.image_root:
        parser.error("--allow-local-images needs --image-root DIR (paths are confined to it)")
    if args.image_root and not Path(args.image_root).is_dir():
        parser.error(f"--image-root {args.image_root}: no such folder")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        engine_name = resolve_engine(args.engine)  # vLLM keeps its RL share (0.3) of the GPU
    except ImportError as exc:
        parser.error(str(exc))

    limits = limits_from_args(args)
    loopback = is_loopback(args.host.strip("[]").lower())
    hosts: tuple[str, ...] | None = None
    if args.allowed_hosts:
        hosts = tuple(h.strip().lower() for h in args.allowed_hosts.split(",") if h.strip())
        hosts += LOOPBACK_NAMES if loopback else ()
    elif loopback:
        hosts = LOOPBACK_NAMES
    access = Access(
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        docs=bool(args.docs),
        allowed_hosts=hosts,
    )
    settings = ServerSettings(
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_header=args.timeout_header,
        limit_concurrency=args.max_connections,
        timeout_graceful_shutdown=args.shutdown_timeout,
    )
    engine = build_engine(
        args.model,
        name=args.served_model_name,
        dtype=args.dtype,
        device_map=args.device_map,
        engine=engine_name,
        batch_size=args.batch_size,
        reward_max_tokens=args.reward_max_tokens,
        reward_temperature=args.reward_temperature,
        batch_wait_ms=args.batch_wait_ms,
        max_batch_items=args.max_batch_items,
        seed=args.seed,
    )
    print(bind_message(args.host, args.port), flush=True)
    if not loopback and access.api_key is None:
        print(
            f"r1reward serve: no API key (--api-key or ${API_KEY_ENV}): anyone who reaches the "
            "port can use the model",
            flush=True,
        )
    config = settings.config(
        create_app(engine, limits, access),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
    uvicorn.Server(config).run()
    engine.close()
    return 0
