"""The published schemas, read from fixtures written in exactly those schemas (r1reward.data.fixtures),
and images decided by decoding (r1reward.data.media)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from PIL import Image

from r1reward.data import DataError, detect_format, load, open_images
from r1reward.data.fixtures import FIXTURES, formats_table, image_bytes, write_fixtures
from r1reward.data.formats import mm_rlhf_category
from r1reward.data.media import MediaError, image_refs, remap_by_tail


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return write_fixtures(tmp_path_factory.mktemp("published"))


@pytest.mark.parametrize("name", list(FIXTURES))
def test_each_published_schema_is_detected_loaded_and_its_images_decode(fixtures, name):
    info = fixtures[name]
    assert detect_format(info["path"]) == FIXTURES[name]
    pairs = load(info["path"], image_root=info.get("image_root"))
    assert pairs.format == FIXTURES[name]
    # the same file read by name gives the same pairs
    named = load(info["path"], FIXTURES[name], image_root=info.get("image_root"))
    assert [p.to_dict() for p in named] == [p.to_dict() for p in pairs]
    for pair in pairs:
        images = open_images(pair)
        assert all(isinstance(im, Image.Image) and im.size == (16, 16) for im in images)
        assert pair.images or pair.videos
        assert Path(pair.meta["source_file"]).is_file() and pair.meta["source_line"] >= 1


def test_vl_rewardbench_three_releases_agree(fixtures):
    """Hub parquet, GitHub jsonl and R1-Reward's re-export hold the same pairs: same ids,
    categories (cal.py's dataset folders = the id prefixes), preferred text and order."""
    loaded = {
        n: load(fixtures[n]["path"])
        for n in ("vl-rewardbench-hub", "vl-rewardbench-github", "vl-rewardbench")
    }
    views = {
        n: [(p.id, p.category, p.chosen, p.rejected, p.preferred) for p in ps]
        for n, ps in loaded.items()
    }
    assert views["vl-rewardbench-hub"] == views["vl-rewardbench-github"] == views["vl-rewardbench"]
    cats = [c for _, c, *_ in views["vl-rewardbench-hub"]]
    assert cats.count("hallucination") == 3 and cats.count("reasoning") == 2
    # human_ranking [1, 0]: the second response is preferred
    first = loaded["vl-rewardbench-hub"][0]
    assert first.id == "RLAIF-V-14" and first.chosen.startswith("The image shows a red")
    hub = loaded["vl-rewardbench-hub"]
    assert {p.images[0].split(";")[0] for p in hub} == {"data:image/png", "data:image/jpeg"}
    assert hub[0].meta["models"] == ["model-a", "model-b"]


def test_r1_reward_rl_image_column_wins_and_cluster_paths_remap_by_tail(fixtures):
    info = fixtures["r1-reward-rl"]
    pairs = load(info["path"], image_root=info["image_root"])
    kinds = [p.images[0][:15] if p.images[0].startswith("data:") else "path" for p in pairs]
    # base64 JPEG text ("/9j/..."), raw PNG bytes, nothing (cluster path remapped)
    assert kinds[:3] == ["data:image/jpeg", "data:image/png;", "path"]
    assert pairs[2].images[0] == str(info["image_root"] / "RLAIF-V-image" / "artwork_2.jpg")
    assert [p.preferred for p in pairs] == [1, 2, 1, 2, 1, 2]
    assert pairs[1].question == "Describe artwork 1." and pairs[1].response_2 == "A green square."
    # without image_root the cluster path is kept and the error names file, row and id
    bare = load(info["path"])
    assert bare[2].images[0].startswith("/mmu_mllm_hdd/")
    with pytest.raises(DataError, match=r"r1_reward_rl\.parquet, row 3, id 'r1_reward_rl-3'"):
        open_images(bare[2])


def test_mm_rlhf_absolute_paths_keep_categories_and_groups(fixtures):
    pairs = load(fixtures["mm-rlhf-rewardbench"]["path"])
    assert all(Path(p.images[0] if p.images else p.videos[0]).is_absolute() for p in pairs)
    assert [p.category for p in pairs] == ["mcq"] * 2 + ["long"] + ["short"] * 2 + ["safety"] + [
        "video"
    ] * 2
    assert [p.meta["group"] for p in pairs][:2] == ["073712_6205145"] * 2
    assert mm_rlhf_category("/data/longterm/short/x.png") == "short"  # the folder rule
    assert mm_rlhf_category("/data/mcq_short.png") == "mcq"  # the script's substring rule


def test_mm_rlhf_category_rule_agrees_with_the_official_substring_rule_on_the_release(
    benchmarks_dir,
):
    for line in (benchmarks_dir / "mm_rlhf_rewardbench.jsonl").open():
        rec = json.loads(line)
        path = rec.get("image") or rec.get("video")
        official = next(c for c in ("mcq", "long", "short", "safety", "video") if c in path)
        assert mm_rlhf_category(path) == official


def test_a_folder_of_shards_reads_as_one_dataset_and_errors_name_the_shard(tmp_path, fixtures):
    src = Path(fixtures["vl-rewardbench-github"]["path"])
    lines = src.read_text().splitlines(keepends=True)
    shards = tmp_path / "shards"
    (shards / "b").mkdir(parents=True)
    (shards / "a-000.jsonl").write_text("".join(lines[:3]))
    (shards / "b" / "a-001.jsonl").write_text("".join(lines[3:]))
    whole = load(src, image_root=src.parent)
    parts = load(shards, image_root=src.parent)

    def strip(p):
        d = p.to_dict()
        d["meta"] = {k: v for k, v in d["meta"].items() if not k.startswith("source_")}
        return d

    assert [strip(p) for p in parts] == [strip(p) for p in whole]
    assert (
        parts[3].meta["source_file"].endswith("a-001.jsonl") and parts[3].meta["source_line"] == 1
    )
    bad = json.loads(lines[4])
    bad["human_ranking"] = [1, 1]
    (shards / "b" / "a-001.jsonl").write_text(lines[3] + json.dumps(bad) + "\n")
    with pytest.raises(
        DataError, match=r"a-001\.jsonl, line 2, id 'mmmu_5': field 'human_ranking'"
    ):
        load(shards)
    (tmp_path / "no-shards").mkdir()
    with pytest.raises(DataError, match="a folder without data shards"):
        load(tmp_path / "no-shards")


def test_bad_inputs_give_one_line_errors_naming_file_and_row(tmp_path, fixtures):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no records"):
        load(empty)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"foo": 1, "bar": 2}\n')
    with pytest.raises(DataError, match=r"unknown\.jsonl: cannot tell the format"):
        load(unknown)
    # a row whose image bytes decode as nothing
    import pyarrow.parquet as pq

    table = pq.read_table(
        Path(fixtures["vl-rewardbench-hub"]["path"]) / "test-00000-of-00001.parquet"
    )
    rows = table.to_pylist()
    rows[2]["image"] = {"bytes": b"\x00not an image at all", "path": None}
    import pyarrow as pa

    broken = tmp_path / "broken.parquet"
    pq.write_table(pa.Table.from_pylist(rows), broken)
    with pytest.raises(DataError) as exc:
        load(broken)
    msg = str(exc.value)
    assert "broken.parquet, row 3, id 'hallucination_pair-1003'" in msg and "\n" not in msg
    assert "no image decoder recognises" in msg


# ----------------------------------------------------------------------------- media


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_base64_of_any_image_type_is_an_image_not_a_path(fmt):
    raw = image_bytes(3, fmt)
    b64 = base64.b64encode(raw).decode()
    (ref,) = image_refs(b64)
    assert ref.startswith(f"data:image/{fmt.lower()};base64,")
    (again,) = image_refs(raw)  # raw bytes
    assert again == ref
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))  # MIME line wrapping
    assert image_refs(wrapped) == [ref]
    assert image_refs({"bytes": raw, "path": "x.png"}) == [ref]  # Hub struct: bytes win
    assert image_refs(ref) == [ref]  # data: URLs pass through


def test_jpeg_base64_with_slashes_is_decoded_and_paths_stay_paths(tmp_path):
    b64 = base64.b64encode(image_bytes(1, "JPEG")).decode()
    assert b64.startswith("/9j/")
    assert image_refs(b64)[0].startswith("data:image/jpeg;base64,")
    # strings that are valid base64 but not an image are paths; so are ordinary paths
    assert image_refs("abcdABCD1234wxyz", base=tmp_path) == [str(tmp_path / "abcdABCD1234wxyz")]
    assert image_refs(["img/a.png", None, ""], base=tmp_path) == [str(tmp_path / "img/a.png")]
    assert image_refs({"path": "b.jpg", "bytes": None}, base=tmp_path) == [str(tmp_path / "b.jpg")]
    with pytest.raises(MediaError, match="no image decoder"):
        image_refs(b"\x00\x01\x02")
    with pytest.raises(MediaError, match="got int"):
        image_refs(7)


def test_remap_by_tail_prefers_the_longest_existing_tail(tmp_path):
    root = tmp_path / "root"
    (root / "RLAIF-V-image").mkdir(parents=True)
    (root / "RLAIF-V-image" / "x.jpg").write_bytes(image_bytes(0, "JPEG"))
    (root / "x.jpg").write_bytes(image_bytes(1, "JPEG"))
    got = remap_by_tail("/cluster/data/RLAIF-V-image/x.jpg", root)
    assert got == str(root / "RLAIF-V-image" / "x.jpg")
    assert remap_by_tail("/cluster/other/y.jpg", root) is None
    # an existing path is not remapped
    real = root / "x.jpg"
    assert image_refs(str(real), image_root=tmp_path / "nowhere") == [str(real)]


def test_formats_table_lists_every_fixture(tmp_path):
    table = formats_table(tmp_path)
    for name in FIXTURES:
        assert f"| `{name}` |" in table
    assert "| `mm-rlhf-rewardbench` | `mm_rlhf_rewardbench.jsonl` | 8 |" in table


def test_hub_dataset_ids_go_through_datasets_and_local_typos_do_not(
    fx_hub_rows, monkeypatch, tmp_path
):
    """``owner/name[:split]`` with no such local path is read through ``datasets.load_dataset``
    (stubbed here with the Hub fixture's rows: no network), image columns left undecoded; a
    mistyped local file is reported as missing, never looked up on the Hub."""
    import datasets

    calls = []

    def fake_load_dataset(repo, split):
        calls.append((repo, split))
        features = datasets.Features(
            {
                "id": datasets.Value("string"),
                "query": datasets.Value("string"),
                "response": datasets.List(datasets.Value("string")),
                "human_ranking": datasets.List(datasets.Value("int64")),
                "image": datasets.Image(),
            }
        )
        return datasets.Dataset.from_list(fx_hub_rows, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    pairs = load("MMInstruction/VL-RewardBench")
    assert calls == [("MMInstruction/VL-RewardBench", "test")] * 2  # detect, then read
    assert pairs.format == "vl-rewardbench-hub" and len(pairs) == 7
    assert all(p.images[0].startswith("data:image/") for p in pairs)
    assert load("MMInstruction/VL-RewardBench:train")[0].id == "RLAIF-V-14"
    assert calls[-1] == ("MMInstruction/VL-RewardBench", "train")
    (tmp_path / "toy").mkdir()
    for local in ("toy/missing", "owner/name.jsonl"):
        with pytest.raises(DataError, match="file not found"):
            load(local)
    assert len(calls) == 4


@pytest.fixture()
def fx_hub_rows(fixtures):
    import pyarrow.parquet as pq

    rows = pq.read_table(Path(fixtures["vl-rewardbench-hub"]["path"])).to_pylist()
    keep = ("id", "query", "response", "human_ranking", "image")
    return [{k: r[k] for k in keep} for r in rows]
