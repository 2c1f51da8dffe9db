"""``r1reward eval`` holds its ``--out`` folder: a second run on it refuses instead of writing
duplicate lines into ``results.jsonl`` (before: two runs on one folder wrote 192 duplicates)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import r1reward.evaluate as ev
from r1reward.data import PreferencePair


def _pairs(n: int) -> list[PreferencePair]:
    return [
        PreferencePair(id=f"p{i}", question=f"q{i}?", response_1="a", response_2="b", preferred=1)
        for i in range(n)
    ]


def test_second_run_on_a_locked_out_refuses(tmp_path) -> None:
    with ev.output_lock(tmp_path):
        with pytest.raises(ev.OutputLocked, match="another evaluation is writing here"):
            ev.evaluate(ev.ConstantSampler(), _pairs(2), ks=[1], out_dir=tmp_path, progress=False)
        assert not (tmp_path / ev.RESULTS_FILE).exists()
    # released: the same call now runs, and again (a resume) without duplicating a line
    for _ in range(2):
        ev.evaluate(ev.ConstantSampler(), _pairs(2), ks=[1], out_dir=tmp_path, progress=False)
    lines = (tmp_path / ev.RESULTS_FILE).read_text().splitlines()
    keys = [(r["pair_id"], r["order"], r["sample"]) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2  # pairs x orders x (greedy + 1 sample)


def test_cli_refuses_while_another_process_holds_the_folder(tmp_path, capsys) -> None:
    """A real second process holds the lock; the CLI answers one line and exit code 2."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, r1reward.evaluate as ev\n"
            "with ev.output_lock(sys.argv[1]):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        data = tmp_path / "pairs.jsonl"
        data.write_text(
            "".join(
                json.dumps(
                    {
                        "id": p.id,
                        "question": p.question,
                        "response_1": "a",
                        "response_2": "b",
                        "preferred": 1,
                    }
                )
                + "\n"
                for p in _pairs(2)
            )
        )
        start = time.perf_counter()
        code = ev.main(
            [
                "--model",
                "const:1",
                "--data",
                str(data),
                "--out",
                str(tmp_path),
                "--k",
                "1",
                "--quiet",
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and time.perf_counter() - start < 10
        assert len(err.splitlines()) == 1 and "another evaluation is writing here" in err, err
    finally:
        holder.kill()
        holder.wait()
