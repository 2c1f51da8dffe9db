"""Strict and official scores of ``r1reward eval`` on the published-schema fixtures.

Writes every fixture of :mod:`r1reward.data.fixtures` under ``OUT/fixtures``, runs
``r1reward eval --scoring official --k 1`` on each with each judge, in both answer orders and in
the paper's chosen-first protocol, and prints one Markdown table: greedy accuracy counted
strictly (both orders; unparseable is wrong) and by each benchmark's official rules.

    python benchmarks/fixture_scores.py OUT const:1              # the always-"1" judge
    python benchmarks/fixture_scores.py OUT const:1 PATH/TO/tiny # + a model folder
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from r1reward import evaluate as ev
from r1reward.data.fixtures import write_fixtures


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder (fixtures and runs)")
    ap.add_argument("models", nargs="+", help="judges: const:1, const:2 or a model folder")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args(argv)

    fixtures = write_fixtures(args.out / "fixtures")
    print(
        "| format | judge | strict, both orders | official, both orders | official, chosen-first |"
    )
    print("|---|---|---:|---:|---:|")
    for name, info in fixtures.items():
        for model in args.models:
            cells = []
            for orders in ("both", "chosen-first"):
                out = args.out / "runs" / name / model.replace(":", "").replace("/", "_") / orders
                argv_eval = ["--model", model, "--data", str(info["path"]), "--k", "1"]
                argv_eval += ["--orders", orders, "--scoring", "official", "--out", str(out)]
                argv_eval += ["--max-new-tokens", str(args.max_new_tokens), "--quiet"]
                if info.get("image_root"):
                    argv_eval += ["--image-root", str(info["image_root"])]
                with contextlib.redirect_stdout(io.StringIO()):
                    if ev.main(argv_eval) != 0:
                        raise SystemExit(f"r1reward eval failed on {name} with {model}")
                s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
                official = next(iter(s["official"].values()))
                if orders == "both":
                    n_bad = s["unparseable"]["greedy_count"]
                    cells.append(f"{_pct(s['overall']['greedy'])} ({n_bad} unparseable)")
                cells.append(_pct(official["overall"]) if official.get("script") else "no script")
            print(f"| `{name}` | `{model}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
