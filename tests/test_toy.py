"""The toy world: determinism, split disjointness, the teacher analysis, and the must-show check
that text-only judges sit at chance while the rule that reads the scene is always right."""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import pytest

from r1reward.data import load
from r1reward.toy import checks
from r1reward.toy import cli as toy_cli
from r1reward.toy import world as toy

N_HELDOUT = 2400


@pytest.fixture(scope="module")
def heldout():
    return toy.make_pairs(N_HELDOUT, seed=0, split="heldout")


def _content(p) -> str:
    """(image pixels, question, unordered responses) hashed independently of the toy module."""
    h = hashlib.sha256(p.images[0].tobytes())
    h.update(p.question.encode())
    for r in sorted((p.response_1, p.response_2)):
        h.update(b"|" + r.encode())
    return h.hexdigest()


def test_deterministic_per_seed_and_prefix_stable():
    a = toy.make_pairs(40, seed=5)
    b = toy.make_pairs(40, seed=5)
    assert [(p.question, p.response_1, p.response_2, p.preferred) for p in a] == [
        (p.question, p.response_1, p.response_2, p.preferred) for p in b
    ]
    assert [p.images[0].tobytes() for p in a] == [p.images[0].tobytes() for p in b]
    c = toy.make_pairs(10, seed=5)
    assert [_content(p) for p in c] == [_content(p) for p in a[:10]]
    d = toy.make_pairs(40, seed=6)
    assert sum(_content(x) == _content(y) for x, y in zip(a, d)) < 5


def test_images_are_rgb_of_requested_size():
    for size in (56, 84):
        p = toy.make_pairs(3, image_size=size)[0]
        assert p.images[0].mode == "RGB" and p.images[0].size == (size, size)
    with pytest.raises(ValueError, match="split"):
        toy.make_pairs(1, split="test")


def test_heldout_never_appears_in_training():
    train = set()
    for seed in (0, 1):
        train |= {_content(p) for p in toy.make_pairs(6_000, seed=seed, split="train")}
    held = [
        _content(p) for seed in (0, 1) for p in toy.make_pairs(1500, seed=seed, split="heldout")
    ]
    print(f"distinct training pairs: {len(train)}, held-out pairs: {len(held)}")
    assert not train & set(held)
    # the same seed in both splits still gives different pairs (different streams)
    assert toy.make_pairs(1, seed=0)[0].id != toy.make_pairs(1, seed=0, split="heldout")[0].id


def test_categories_difficulty_and_balance(heldout):
    cats = Counter(p.category for p in heldout)
    assert set(cats) == {"general", "hallucination", "reasoning"}
    assert all(abs(n / N_HELDOUT - 1 / 3) < 0.05 for n in cats.values()), cats
    assert {p.difficulty for p in heldout} == {1, 2, 3}
    assert set(Counter(p.meta["task"] for p in heldout)) == {
        "colour",
        "shape",
        "count",
        "exists",
        "bars",
        "total",
    }
    frac1 = sum(p.preferred == 1 for p in heldout) / N_HELDOUT
    assert abs(frac1 - 0.5) < 0.03, frac1


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", re.sub(r"\ban\b", "a", text))


def test_responses_differ_in_exactly_one_fact(heldout):
    for p in heldout[:800]:
        a, b = _tokens(p.response_1), _tokens(p.response_2)
        i = 0
        while i < min(len(a), len(b)) and a[i] == b[i]:
            i += 1
        j = 0
        while j < min(len(a), len(b)) - i and a[-1 - j] == b[-1 - j]:
            j += 1
        mid_a, mid_b = " ".join(a[i : len(a) - j]), " ".join(b[i : len(b) - j])
        # one contiguous slot differs, and what differs is part of the two claimed facts
        claims = p.meta["truth"]["claims"]
        assert mid_a and mid_b and mid_a != mid_b, (p.response_1, p.response_2)
        assert any(mid_a in c for c in claims) and any(mid_b in c for c in claims)
        assert len(a) == len(b) or p.meta["task"] == "exists"


def test_text_only_heuristics_at_chance_and_oracle_perfect(heldout):
    acc = checks.heuristic_accuracy(heldout)
    print(f"\ntoy held-out, {N_HELDOUT} pairs:")
    for name, a in acc.items():
        print(f"  {name:26s} {a:.1%}")
    for name in checks.TEXT_HEURISTICS:
        assert 0.47 <= acc[name] <= 0.53, (name, acc[name])
    assert acc["oracle (reads the scene)"] == 1.0


def test_teacher_analysis_short_and_verdict_readable(heldout):
    lengths = []
    for p in heldout[:600]:
        a = p.meta["teacher_analysis"]
        lengths.append(len(a.split()))
        assert a.endswith(f"Response {p.preferred} is better.")
        assert toy.analysis_verdict(a) == p.preferred
        wrong = toy.teacher_analysis(p, 3 - p.preferred)
        assert toy.analysis_verdict(wrong) == 3 - p.preferred and wrong != a
        assert toy.target_text(p) == f"<think>{a}</think><answer>{p.preferred}</answer>"
    print(f"teacher analysis words: min {min(lengths)}, max {max(lengths)}")
    assert 20 <= min(lengths) and max(lengths) <= 40
    assert toy.analysis_verdict("I think both are fine.") is None
    assert toy.analysis_verdict("Response 2 is better. Actually no.") is None
    with pytest.raises(ValueError):
        toy.teacher_analysis(heldout[0], 0)


def test_swap_keeps_oracle_and_rewrites_analysis(heldout):
    for p in heldout[:100]:
        s = p.swap()
        assert s.preferred == 3 - p.preferred
        assert toy.oracle_answer(s) == s.preferred
        assert toy.analysis_verdict(s.meta["teacher_analysis"]) == s.preferred


def test_cli_writes_loadable_pairs(tmp_path):
    assert (
        toy_cli.main(["--n", "12", "--split", "heldout", "--seed", "3", "--out", str(tmp_path)])
        == 0
    )
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1
    pairs = load(files[0], check_images=True)
    ref = toy.make_pairs(12, seed=3, split="heldout")
    assert [p.response_1 for p in pairs] == [p.response_1 for p in ref]
    assert all(toy.oracle_answer(p) == p.preferred for p in pairs)
    assert toy.target_text(pairs[0]) == toy.target_text(ref[0])


def test_observation_ends_with_the_claim_it_argues_for(heldout):
    # the first right/wrong compares the claim with the observed value a fixed few words back
    for p in heldout[:300]:
        c1, c2 = toy._claims(p)
        claim = c1 if p.preferred == 1 else c2
        first = p.meta["teacher_analysis"].split(" Response 1 says ")[0]
        assert first.endswith(f" {claim}."), (first, claim)


def test_random_analysis_is_consistent_deterministic_and_no_pair():
    import random

    texts = [toy.random_analysis(random.Random(i), with_prompt=False) for i in range(300)]
    assert texts == [toy.random_analysis(random.Random(i), with_prompt=False) for i in range(300)]
    seen_tasks = set()
    for text in texts:
        obs, rest = text.split(" Response 1 says ", 1)
        c1, rest = rest.split(", which is ", 1)
        mark1, rest = rest.split(". Response 2 says ", 1)
        c2, rest = rest.split(", which is ", 1)
        mark2 = rest.split(".")[0]
        # right exactly where the quoted claim is the observed value; the verdict follows it
        assert (mark1 == "right") == obs.endswith(f" {c1}.") and {mark1, mark2} == {
            "right",
            "wrong",
        }
        assert toy.analysis_verdict(text) == (1 if mark1 == "right" else 2)
        seen_tasks.add(obs.split()[1])
    assert len(seen_tasks) >= 4
    prompted = toy.random_analysis(random.Random(0))
    assert "[Response 1]:" in prompted and prompted.endswith(texts[0])


def test_judgment_breakdown_separates_seeing_from_comparing(heldout):
    pairs = heldout[:50]
    right = [
        f"<think>{p.meta['teacher_analysis']}</think><answer>{p.preferred}</answer>" for p in pairs
    ]
    wrong = [
        f"<think>{toy.teacher_analysis(p, 3 - p.preferred)}</think><answer>{3 - p.preferred}</answer>"
        for p in pairs
    ]
    assert checks.judgment_breakdown(pairs, right) == {
        "observation_right": 1.0,
        "marks_follow_observation": 1.0,
        "verdict_follows_marks": 1.0,
        "accuracy": 1.0,
        "n": 50,
    }
    # a fluent wrong trace: wrong observation, but marks and verdict follow it
    b = checks.judgment_breakdown(pairs, wrong)
    assert b["observation_right"] == 0.0 and b["accuracy"] == 0.0
    assert b["marks_follow_observation"] == 1.0 and b["verdict_follows_marks"] == 1.0
    # right observation, marks swapped (the failure the cold-start chapter diagnoses)
    swapped = [
        t.replace("which is right", "which is X")
        .replace("which is wrong", "which is right")
        .replace("which is X", "which is wrong")
        for t in right
    ]
    s = checks.judgment_breakdown(pairs, swapped)
    assert s["observation_right"] == 1.0 and s["marks_follow_observation"] == 0.0
    assert s["verdict_follows_marks"] == 0.0 and s["accuracy"] == 1.0  # answer tag kept
    assert checks.judgment_breakdown(pairs, ["no analysis"] * 50)["accuracy"] == 0.0


def test_the_real_path_does_not_import_the_toy_and_a_toy_file_still_swaps(tmp_path):
    """The data layer, the model loader, the sampler, the recipes, the trainers, the evaluator, the
    service and the lab import nothing from r1reward.toy; a toy
    pair read back from a file swaps with its teacher analysis rewritten all the same, through the
    lazy ``toy`` entry of r1reward.data.sources (imported only then)."""
    import subprocess
    import sys

    assert (
        toy_cli.main(["--n", "4", "--split", "heldout", "--seed", "1", "--out", str(tmp_path)]) == 0
    )
    (path,) = tmp_path.glob("*.jsonl")
    code = f"""
import sys
import r1reward.data, r1reward.data.splits, r1reward.models, r1reward.rollout, r1reward.recipes
import r1reward.train.rl, r1reward.train.sft, r1reward.train.scalar, r1reward.evaluate
import r1reward.serve, r1reward.lab, r1reward.judges, r1reward.curation
toy = [m for m in sys.modules if m.startswith("r1reward.toy")]
assert not toy, toy
pairs = r1reward.data.load({str(path)!r})
for p in pairs:
    s = p.swap()
    assert s.meta["teacher_analysis"].endswith(f"Response {{s.preferred}} is better."), s.meta
    assert p.meta["teacher_analysis"].endswith(f"Response {{p.preferred}} is better."), p.meta
assert "r1reward.toy.world" in sys.modules
print("ok", len(pairs))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok 4"
