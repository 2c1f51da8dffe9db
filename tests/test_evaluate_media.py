"""Tests for r1reward.evaluate's media: video pairs skipped (and counted) without a reader or a
video processor, frames read through the reader, and a missing image naming its pair."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_evaluate import answer, make_pairs

from r1reward import evaluate as ev
from r1reward.evaluate import run as eval_run


def video_pairs(tmp_path):
    from PIL import Image

    frames = tmp_path / "clip_frames"
    frames.mkdir()
    for i in range(12):
        Image.new("RGB", (28, 28), (i * 20, 0, 0)).save(frames / f"{i:03d}.png")
    (tmp_path / "clip.mp4").write_bytes(b"not really a video")
    base = make_pairs(3)
    base[0].videos = [str(tmp_path / "clip.mp4")]
    base[1].videos = ["clip_frames"]  # relative: resolved under image_root
    return base


def test_video_files_are_skipped_and_counted_without_a_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(eval_run, "video_reader", lambda: None)
    seen = []

    def spy(conv, index, seed):
        seen.append([c["type"] for c in conv[0]["content"]])
        return answer(1)

    s = ev.evaluate(
        ev.FunctionSampler(spy),
        video_pairs(tmp_path),
        ks=(1,),
        orders="chosen-first",
        out_dir=tmp_path / "out",
        image_root=tmp_path,
        video_frames=4,
        progress=False,
    )
    assert s["skipped"]["count"] == 1
    assert s["skipped"]["ids"] == ["p000"]
    assert s["counts"]["pairs"] == 2  # the frame folder needs no reader
    assert ["video", "text"] in seen
    assert s["skipped"]["reasons"] == {"video pair: no video reader installed (pip install av)": 1}
    report = (tmp_path / "out" / "summary.md").read_text()
    assert "| pairs skipped | 1 |" in report
    assert "no video reader installed" in report


def test_video_pairs_are_skipped_when_the_processor_takes_no_video(tmp_path):
    class NoVideo(ev.FunctionSampler):
        supports_video = False

    s = ev.evaluate(
        NoVideo(lambda conv, i, seed: answer(1)),
        video_pairs(tmp_path),
        ks=(1,),
        orders="both",
        out_dir=tmp_path / "out",
        image_root=tmp_path,
        progress=False,
    )
    assert s["skipped"]["count"] == 2
    assert sorted(s["skipped"]["ids"]) == ["p000", "p001"]
    assert list(s["skipped"]["reasons"].values()) == [2]
    assert s["counts"] == {"pairs": 1, "units": 2, "samples_per_unit": 1}


def test_video_files_are_read_through_the_reader_when_installed(tmp_path, monkeypatch):
    from PIL import Image

    read = []

    def fake_reader(path, n):
        read.append((Path(path).name, n))
        return [Image.new("RGB", (28, 28))] * n

    monkeypatch.setattr(eval_run, "video_reader", lambda: fake_reader)
    n_frames = []

    def spy(conv, index, seed):
        n_frames.extend(len(c["video"]) for c in conv[0]["content"] if c["type"] == "video")
        return answer(1)

    s = ev.evaluate(
        ev.FunctionSampler(spy),
        video_pairs(tmp_path),
        ks=(1,),
        orders="chosen-first",
        out_dir=tmp_path / "out",
        image_root=tmp_path,
        video_frames=4,
        progress=False,
    )
    assert s["skipped"]["count"] == 0
    assert s["counts"]["pairs"] == 3
    assert read and read[0] == ("clip.mp4", 4)
    assert set(n_frames) == {4}


def test_missing_image_names_the_pair(tmp_path):
    pairs = make_pairs(1)
    pairs[0].images = ["nowhere.png"]
    with pytest.raises(ValueError, match="p000"):
        ev.evaluate(
            ev.FunctionSampler(lambda conv, i, seed: answer(1)),
            pairs,
            ks=(1,),
            out_dir=tmp_path,
            image_root=tmp_path,
            progress=False,
        )
