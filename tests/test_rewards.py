"""Tests for r1reward.rewards: format, result, consistency-weighted final reward."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1reward.prompt import format_target
from r1reward.rewards import (
    combine,
    combine_batch,
    format_reward,
    format_rewards,
    r1_reward,
    r1_rewards,
    result_reward,
    result_rewards,
)

GOOD_1 = "<think>Response 1 counts three circles, as the image shows.</think><answer>1</answer>"
GOOD_2 = "<think>Response 2 is right.</think>\n<answer>2</answer>\n"


# ----------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_1, 1.0),
        (GOOD_2, 1.0),
        ("<think>x</think><answer>3</answer>", 0.0),
        ("<think>x</think> and so <answer>1</answer>", 0.0),
        ("<answer>1</answer>", 0.0),
        ("<think>x</think><answer>1</answer><answer>1</answer>", 0.0),
        ("", 0.0),
    ],
)
def test_format_reward(text, expected):
    assert format_reward(text) == expected


@pytest.mark.parametrize("bad", [None, 7, b"<think>x</think><answer>1</answer>", object()])
def test_non_string_text_never_earns_a_positive_reward(bad):
    assert format_reward(bad) == 0.0
    assert result_reward(bad, 1) == 0.0
    assert result_reward(bad, 2) == 0.0
    assert r1_reward(bad, 1, 1) == 0.0


# ----------------------------------------------------------------------------- result


def test_result_reward_matches_label():
    assert result_reward(GOOD_1, 1) == 1.0
    assert result_reward(GOOD_1, 2) == 0.0
    assert result_reward(GOOD_2, 2) == 1.0
    assert result_reward(GOOD_2, 1) == 0.0


def test_result_reward_counts_the_verdict_even_if_format_is_broken():
    text = "Response 2 is better. <answer>2</answer>"
    assert format_reward(text) == 0.0
    assert result_reward(text, 2) == 1.0


def test_result_reward_for_missing_invalid_or_hedged_answers_is_zero():
    for text in [
        "<think>x</think>",
        "<think>x</think><answer>3</answer>",
        "<think>x</think><answer>1</answer><answer>2</answer>",
    ]:
        assert result_reward(text, 1) == 0.0
        assert result_reward(text, 2) == 0.0


@pytest.mark.parametrize("label", [0, 3, -1, 1.5, "1", None, True, float("nan")])
def test_result_reward_rejects_bad_labels(label):
    with pytest.raises(ValueError, match="label") as info:
        result_reward(GOOD_1, label)
    assert repr(label) in str(info.value)


def test_result_reward_accepts_numpy_and_tensor_labels():
    assert result_reward(GOOD_1, np.int64(1)) == 1.0
    assert result_reward(GOOD_2, torch.tensor(2)) == 1.0
    assert result_reward(GOOD_2, 2.0) == 1.0


# ----------------------------------------------------------------------------- combine


def test_combine_table_is_the_paper_formula():
    for f, r, c in itertools.product((0, 1), (0, 1), (1, -1, 0)):
        assert combine(f, r, c) == pytest.approx(r * (1 + 0.5 * c) + 0.5 * f)


def test_combine_named_values():
    assert combine(1, 1, 1) == 2.0  # right, consistent, well formed
    assert combine(1, 1, -1) == 1.0  # right verdict, analysis argues the other way
    assert combine(1, 1, 0) == 1.5  # judge gave nothing usable
    assert combine(1, 0, 1) == 0.5  # wrong verdict: only the format bonus
    assert combine(0, 0, -1) == 0.0
    assert combine(format=0, result=1, consistency=1) == 1.5


def test_wrong_verdict_never_beats_right_verdict():
    wrong = max(combine(f, 0, c) for f in (0, 1) for c in (1, -1, 0))
    right = min(combine(f, 1, c) for f in (0, 1) for c in (1, -1, 0))
    assert wrong <= 0.5 and right >= 0.5 and wrong <= right


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((2, 1, 1), "format"),
        ((0.5, 1, 1), "format"),
        ((1, -1, 1), "result"),
        ((1, 1, 2), "consistency"),
        ((1, 1, 0.5), "consistency"),
        ((1, 1, float("nan")), "consistency"),
        ((1, float("inf"), 1), "result"),
        ((None, 1, 1), "format"),
        (("1", 1, 1), "format"),
    ],
)
def test_combine_rejects_values_outside_their_sets(args, name):
    with pytest.raises(ValueError, match=name):
        combine(*args)


def test_combine_accepts_numpy_and_tensor_scalars():
    assert combine(np.float32(1.0), torch.tensor(1), np.int8(-1)) == 1.0


# ----------------------------------------------------------------------------- batches


def test_batch_versions_match_scalar_versions():
    texts = [GOOD_1, GOOD_2, "junk", "<think>x</think><answer>2</answer>", None]
    labels = [1, 1, 2, 2, 1]
    cons = [1, -1, 0, 1, 1]
    assert format_rewards(texts) == [format_reward(t) for t in texts]
    assert result_rewards(texts, labels) == [result_reward(t, y) for t, y in zip(texts, labels)]
    fs, rs = format_rewards(texts), result_rewards(texts, labels)
    assert combine_batch(fs, rs, cons) == [combine(f, r, c) for f, r, c in zip(fs, rs, cons)]
    assert r1_rewards(texts, labels, cons) == combine_batch(fs, rs, cons)
    assert r1_rewards(texts, labels, cons) == [2.0, 0.5, 0.0, 2.0, 0.0]


def test_batch_errors_name_the_record():
    with pytest.raises(ValueError, match=r"record 2: .*label.*got 0"):
        result_rewards([GOOD_1] * 3, [1, 2, 0])
    with pytest.raises(ValueError, match=r"record 1: .*consistency"):
        combine_batch([1, 1], [1, 1], [1, 5])
    with pytest.raises(ValueError, match="lengths differ"):
        result_rewards([GOOD_1], [1, 2])
    with pytest.raises(ValueError, match="lengths differ"):
        combine_batch([1], [1], [])
    assert combine_batch([], [], []) == []
    assert format_rewards([]) == []


@settings(max_examples=100, deadline=None)
@given(
    text=st.one_of(st.text(max_size=200), st.none(), st.integers()), label=st.sampled_from([1, 2])
)
def test_rewards_stay_in_range_for_any_text(text, label):
    f = format_reward(text)
    r = result_reward(text, label)
    assert f in (0.0, 1.0) and r in (0.0, 1.0)
    # a well-formed text has an answer, so exactly one of the two labels is right
    if f == 1.0:
        assert result_reward(text, 1) + result_reward(text, 2) == 1.0
    for c in (1, -1, 0):
        assert 0.0 <= combine(f, r, c) <= 2.0


@settings(max_examples=100, deadline=None)
@given(
    analysis=st.text(max_size=100).filter(
        lambda s: all(t not in s for t in ("<think>", "</think>", "<answer>", "</answer>"))
    ),
    answer=st.sampled_from([1, 2]),
)
def test_well_formed_target_earns_full_format_and_right_result(analysis, answer):
    text = format_target(analysis, answer)
    assert format_reward(text) == 1.0
    assert result_reward(text, answer) == 1.0
    assert result_reward(text, 3 - answer) == 0.0
    assert r1_reward(text, answer, 1) == 2.0
