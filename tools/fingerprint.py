"""Fingerprint the numbers of a toy-ci SFT, scalar, RL and evaluation run, to prove a refactor kept them.

Runs the command-line entry points in a scratch folder with one torch thread (the numbers are
deterministic for a given seed and thread count) and writes one JSON object: for every output
file a SHA-256 of its content with what legitimately differs between runs taken out (wall-clock
seconds, memory, absolute paths), and for every weights file a SHA-256 of its tensors. Two
fingerprints are equal exactly when the runs produced the same numbers bit for bit.

    python tools/fingerprint.py --model artifacts/cpu/sft-c194b053fcb7 --out /tmp/fp-before.json
    python tools/fingerprint.py --model artifacts/cpu/sft-c194b053fcb7 --out /tmp/fp-after.json \
        --compare /tmp/fp-before.json

``--compare`` prints each entry that differs and exits 1 if any does. Takes about a minute and
a half on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Keys whose values are wall-clock time, memory or machine facts: dropped before hashing.
VOLATILE = re.compile(
    r"(seconds|elapsed|_s$|runtime|per_second|^time|timestamp|rss|_mb$|threads|started|finished|date|"
    r"run_id|host)"
)


def _scrub(value: Any, root: str) -> Any:
    """``value`` without volatile keys, with the scratch folder's path replaced by ``<root>``."""
    if isinstance(value, dict):
        return {k: _scrub(v, root) for k, v in value.items() if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [_scrub(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<root>")
    return value


def _hash_json_file(path: Path, root: str) -> str:
    """SHA-256 of a JSON or JSONL file's records after :func:`_scrub` (key order kept)."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = [json.loads(text)]
    canon = json.dumps([_scrub(r, root) for r in records], sort_keys=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def _hash_tensors(path: Path) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a weights file's tensors."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    else:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(tensors, dict):
            tensors = {"": tensors}
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r}".encode())
            continue
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


#: The runs, in order: (name, argv after ``r1reward``). ``{d}`` is the scratch folder.
RUNS = [
    ("toy", ["toy", "--n", "16", "--split", "heldout", "--out", "{d}/pairs"]),
    ("sft", ["sft", "--recipe", "toy-ci", "--out", "{d}/sft"]),
    ("scalar", ["scalar", "--recipe", "toy-ci", "--out", "{d}/scalar"]),
    (
        "rl",
        [
            "rl", "--recipe", "toy-ci", "rl.init_model={m}", "rl.max_new_tokens=128",
            "rl.prompts_per_step=8", "rl.rollout_batch_size=8", "rl.mini_batch_size=4",
            "rl.micro_batch_size=4", "--out", "{d}/rl",
        ],
    ),
    (
        "eval",
        [
            "eval", "--model", "{m}", "--data", "{d}/pairs", "--k", "1,3",
            "--max-new-tokens", "128", "--out", "{d}/eval", "--quiet",
        ],
    ),
]  # fmt: skip

#: Files whose numbers are compared (relative to the scratch folder).
JSON_FILES = [
    "sft/sft_log.jsonl",
    "sft/sft_summary.json",
    "sft/curated.jsonl",
    "scalar/scalar_log.jsonl",
    "scalar/scalar_summary.json",
    "rl/metrics.jsonl",
    "rl/summary.json",
    "eval/results.jsonl",
    "eval/summary.json",
]
WEIGHT_FILES = [
    "sft/model.safetensors",
    "scalar/scalar_head.pt",
    "rl/final/model.safetensors",
]


def fingerprint(workdir: Path, model: str | None = None) -> dict[str, Any]:
    """Run :data:`RUNS` in ``workdir`` and hash their outputs: ``{"files": {...}, "seconds": {...}}``.

    ``model``: the judge RL starts from and eval scores (default: this run's own SFT model).
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("R1REWARD_PROFILE", None)
    runs: dict[str, float] = {}
    for name, argv in RUNS:
        cmd = [
            sys.executable,
            "-m",
            "r1reward.cli",
            *[a.format(d=workdir, m=model or workdir / "sft") for a in argv],
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
        runs[name] = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            sys.exit(
                f"fingerprint: `{' '.join(cmd)}` failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        print(f"  {name}: {runs[name]} s", file=sys.stderr)
    files: dict[str, str] = {}
    root = str(workdir)
    for rel in JSON_FILES:
        p = workdir / rel
        files[rel] = _hash_json_file(p, root) if p.exists() else "missing"
    for rel in WEIGHT_FILES:
        p = workdir / rel
        files[rel] = _hash_tensors(p) if p.exists() else "missing"
    return {"files": files, "seconds": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="where to write the fingerprint (JSON)")
    ap.add_argument("--compare", help="a fingerprint recorded earlier: report what differs")
    ap.add_argument(
        "--model",
        help="a trained toy judge for the RL and eval runs, e.g. artifacts/cpu/sft-*/ (default: "
        "the run's own toy-ci SFT model, which writes nothing well-formed, so RL leaves it as it is)",
    )
    ap.add_argument("--keep", help="run in this folder (kept) instead of a temporary one")
    args = ap.parse_args(argv)
    if args.keep:
        work = Path(args.keep).resolve()
        if work.exists() and any(work.iterdir()):
            sys.exit(f"fingerprint: --keep {work} is not empty; give a new folder")
        work.mkdir(parents=True, exist_ok=True)
        fp = fingerprint(work, args.model)
    else:
        with tempfile.TemporaryDirectory(prefix="r1reward-fp-") as tmp:
            fp = fingerprint(Path(tmp), args.model)
    Path(args.out).write_text(json.dumps(fp, indent=1) + "\n")
    print(f"wrote {args.out}")
    if not args.compare:
        return 0
    before = json.loads(Path(args.compare).read_text())["files"]
    differ = [
        k for k in sorted(set(before) | set(fp["files"])) if before.get(k) != fp["files"].get(k)
    ]
    for k in differ:
        print(f"DIFFERS {k}: {before.get(k)} -> {fp['files'].get(k)}")
    print(f"{len(fp['files']) - len(differ)} of {len(fp['files'])} outputs identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
