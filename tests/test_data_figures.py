"""The chapter-1 figure helpers build figures with the data they are given."""

from __future__ import annotations

from r1reward.data import PreferencePair, figures
from r1reward.toy import world as toy


def test_pair_grid_has_one_image_per_pair():
    pairs = toy.make_pairs(5, seed=2)
    fig = figures.pair_grid(pairs, cols=3)
    assert [t.type for t in fig.data] == ["image"] * 5
    assert fig.data[0].z.shape == (56, 56, 3)
    assert pairs[0].response_1 in fig.data[0].hovertemplate
    rows = figures.pair_rows(pairs)
    assert rows[4]["better"] == pairs[4].preferred and "teacher analysis" in rows[4]


def _p(i: int, cat: str, pref: int, video: bool = False) -> PreferencePair:
    return PreferencePair(
        id=str(i), question="q", videos=["v"] if video else [], preferred=pref, category=cat
    )


def test_category_and_position_bars_count():
    a = [_p(0, "x", 1), _p(1, "x", 2), _p(2, "y", 1, video=True)]
    fig = figures.category_bars({"A": a})
    image, video = fig.data
    assert list(image.x) == ["x", "y"] and list(image.y) == [2, 0] and list(video.y) == [0, 1]
    fig = figures.chosen_position_bars({"first": [_p(0, "x", 1)] * 4, "mixed": a[:2]})
    assert list(fig.data[0].y) == [100.0, 50.0]
