"""r1reward.data.jsonl.read_jsonl: the one JSONL reader, and its four ways of meeting a torn tail."""

from __future__ import annotations

import pytest

from r1reward.data.jsonl import read_jsonl

GOOD = b'{"id": "a", "n": 1}\n\n{"id": "b", "n": 2}\n'


def _write(tmp_path, data: bytes):
    path = tmp_path / "x.jsonl"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("mode", ["error", "skip", "drop", "cut"])
def test_clean_file_reads_the_same_in_every_mode(tmp_path, mode):
    path = _write(tmp_path, GOOD)
    recs = read_jsonl(path, torn_tail=mode)
    assert recs == [{"id": "a", "n": 1}, {"id": "b", "n": 2}]
    assert recs.torn == 0
    assert path.read_bytes() == GOOD


def test_unterminated_garbage_tail(tmp_path):
    data = GOOD + b'{"id": "c", "n'
    with pytest.raises(ValueError, match=r"x.jsonl:4: not a JSON record"):
        read_jsonl(_write(tmp_path, data), torn_tail="error")
    for mode in ("skip", "drop"):
        recs = read_jsonl(_write(tmp_path, data), torn_tail=mode)
        assert [r["id"] for r in recs] == ["a", "b"] and recs.torn == 1
        assert (tmp_path / "x.jsonl").read_bytes() == data  # left as it was
    recs = read_jsonl(_write(tmp_path, data), torn_tail="cut")
    assert [r["id"] for r in recs] == ["a", "b"] and recs.torn == 1
    assert (tmp_path / "x.jsonl").read_bytes() == GOOD  # cut back to the last newline


def test_unterminated_but_parseable_tail_is_a_record_only_without_the_newline_rule(tmp_path):
    data = GOOD + b'{"id": "c", "n": 3}'
    for mode in ("error", "skip"):
        assert [r["id"] for r in read_jsonl(_write(tmp_path, data), torn_tail=mode)] == [
            "a",
            "b",
            "c",
        ]
    for mode in ("drop", "cut"):
        recs = read_jsonl(_write(tmp_path, data), torn_tail=mode)
        assert [r["id"] for r in recs] == ["a", "b"] and recs.torn == 1
    assert (tmp_path / "x.jsonl").read_bytes() == GOOD


def test_unreadable_last_terminated_line(tmp_path):
    data = GOOD + b'{"id": "c",\n'
    for mode in ("error", "skip"):
        with pytest.raises(ValueError, match=r"x.jsonl:4: not a JSON record"):
            read_jsonl(_write(tmp_path, data), torn_tail=mode)
    recs = read_jsonl(_write(tmp_path, data), torn_tail="cut")
    assert [r["id"] for r in recs] == ["a", "b"] and recs.torn == 1
    assert (tmp_path / "x.jsonl").read_bytes() == GOOD


@pytest.mark.parametrize("mode", ["error", "skip", "drop", "cut"])
def test_damage_before_the_last_line_always_raises_and_nothing_is_cut(tmp_path, mode):
    data = b'{"id": "a"}\nnot json\n{"id": "b"}\n{"id": "c"'
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=r"x.jsonl:2: not a thing \(.*\); damaged"):
        read_jsonl(path, torn_tail=mode, what="thing", damaged="; damaged")
    assert path.read_bytes() == data


def test_a_bad_last_line_before_a_torn_tail_is_damage(tmp_path):
    # one torn line is a crash; an unreadable complete line before it is not
    path = _write(tmp_path, b'{"id": "a"}\n{"id"\n{"id": "c"')
    with pytest.raises(ValueError, match=r"x.jsonl:2:"):
        read_jsonl(path, torn_tail="cut")


def test_check_rejects_records_like_malformed_json(tmp_path):
    def need_id(rec):
        if "id" not in rec:
            raise ValueError("expected an 'id'")

    data = b'{"id": "a"}\n{"n": 1}\n'
    recs = read_jsonl(_write(tmp_path, data), torn_tail="drop", check=need_id)
    assert recs == [{"id": "a"}] and recs.torn == 1
    with pytest.raises(ValueError, match=r"x.jsonl:1: not a record \(expected an 'id'\)"):
        read_jsonl(_write(tmp_path, b'{"n": 1}\n{"id": "a"}\n'), check=need_id, what="record")
    with pytest.raises(ValueError, match=r"x.jsonl:1: not a JSON record \('k'\)"):
        read_jsonl(_write(tmp_path, b'{"n": 1}\n{"k": 1}\n'), check=lambda r: r["k"])


def test_bad_mode_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="torn_tail must be"):
        read_jsonl(_write(tmp_path, GOOD), torn_tail="repair")  # type: ignore[arg-type]
