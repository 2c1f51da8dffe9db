"""Tiny files in exactly the schemas the benchmark and dataset owners publish, with generated images.

The tests, the README's table of formats and the ``r1reward eval --help`` examples read these
instead of the real releases (which need the network and gigabytes of images). Each fixture keeps
the published field names, value types and media conventions:

============================ =============================================================
``vl-rewardbench-hub``       ``MMInstruction/VL-RewardBench`` parquet; images as
                             ``{"bytes", "path"}`` structs (PNG and JPEG bytes)
``vl-rewardbench-github``    the benchmark's GitHub ``data/data.jsonl`` (``image_path``)
``vl-rewardbench``           R1-Reward's re-export (``chosen``/``rejected``; relative paths)
``mm-rlhf-rewardbench``      R1-Reward's ``mm_reward_bench.jsonl`` with *absolute* paths (as
                             its README tells users to rewrite them), one video (frame folder)
``multimodal-rewardbench``   Meta's ``all_data.json`` (a JSON array; ``Meta.Category``)
``r1-reward-rl``             ``yifanzhang114/R1-Reward-RL`` parquet: ``message`` (a JSON string
                             with the released-layout prompt and a cluster image path),
                             ``question``, ``answer``, and an ``image`` column holding raw
                             base64 JPEG, raw PNG bytes, or nothing (then the cluster path is
                             found under ``image_root`` by its tail)
============================ =============================================================

``python -m r1reward.data.fixtures DIR`` writes them all and prints :func:`formats_table`.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["FIXTURES", "write_fixtures", "formats_table", "image_bytes"]

#: Fixture name -> the format the readers should detect for it.
FIXTURES: dict[str, str] = {
    "vl-rewardbench-hub": "vl-rewardbench-hub",
    "vl-rewardbench-github": "vl-rewardbench-github",
    "vl-rewardbench": "vl-rewardbench",
    "mm-rlhf-rewardbench": "mm-rlhf-rewardbench",
    "multimodal-rewardbench": "multimodal-rewardbench",
    "r1-reward-rl": "r1-reward-rl",
}

_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]


def image_bytes(k: int, fmt: str = "PNG") -> bytes:
    """A 16x16 image of colour ``k`` encoded as ``fmt`` (PNG, JPEG, WEBP, GIF ...)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), _COLOURS[k % len(_COLOURS)]).save(buf, format=fmt)
    return buf.getvalue()


def _save(path: Path, k: int, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(k, fmt))
    return path


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# (id, dataset folder as cal.py knows it, first response preferred?)
_VL_ROWS = [
    ("RLAIF-V-14", "rlaif-v", False),
    ("RLHF-V-7", "rlhf-v", True),
    ("hallucination_pair-1003", "povid", True),
    ("mathverse_21", "reasoning_tasks", False),
    ("mmmu_5", "reasoning_tasks", True),
    ("wildvision-battle-3", "wildvision-battle", False),
    ("LRVInstruction-000000007746", "vlfeedback", False),
]


def _vl_release_rows() -> list[dict[str, Any]]:
    rows = []
    for k, (pid, dataset, first) in enumerate(_VL_ROWS):
        good, bad = f"The image shows a {_COLOURS[k]} square.", "The image shows a cat."
        rows.append(
            {
                "id": pid,
                "query": f"What is in image {k}?",
                "response": [good, bad] if first else [bad, good],
                "human_ranking": [0, 1] if first else [1, 0],
                "models": ["model-a", "model-b"],
                "judge": "human",
                "rationale": None,
                "query_source": dataset,
                "ground_truth": None,
                "_dataset": dataset,
            }
        )
    return rows


def _vl_hub(folder: Path) -> dict[str, Any]:
    rows = []
    for k, row in enumerate(_vl_release_rows()):
        row = {key: v for key, v in row.items() if key != "_dataset"}
        fmt = "JPEG" if k % 2 else "PNG"
        row["image"] = {"bytes": image_bytes(k, fmt), "path": f"{row['id']}.{fmt.lower()}"}
        rows.append(row)
    return {"path": _write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows)}


def _vl_github(folder: Path) -> dict[str, Any]:
    rows = []
    for k, row in enumerate(_vl_release_rows()):
        dataset = row.pop("_dataset")
        rel = f"images/{dataset}/{row['id']}.jpg"
        _save(folder / rel, k, "JPEG")
        rows.append(
            {
                "id": row["id"],
                "image_path": rel,
                **{key: v for key, v in row.items() if key != "id"},
            }
        )
    return {"path": _write_jsonl(folder / "data.jsonl", rows)}


def _vl_r1(folder: Path) -> dict[str, Any]:
    rows = []
    for k, row in enumerate(_vl_release_rows()):
        chosen, rejected = (
            row["response"] if row["human_ranking"][0] == 0 else row["response"][::-1]
        )
        rel = f"vl_reward/img/image_{k}.jpg"
        _save(folder / rel, k, "JPEG")
        rows.append(
            {
                "id": row["id"],
                "prompt": row["query"],
                "chosen": chosen,
                "rejected": rejected,
                "image": rel,
                "chosen_reason": "names the colour",
                "rejected_reason": "hallucinates a cat",
            }
        )
    return {"path": _write_jsonl(folder / "vl_rewardbench.jsonl", rows)}


def _mm_rlhf(folder: Path) -> dict[str, Any]:
    media = folder / "mm_rlhf_media"  # absolute paths, as the reference README has users write
    rows = []
    spec = [  # (group id, category, pairs in the group)
        ("073712", "mcq", 2),
        ("100231", "long", 1),
        ("200114", "short", 2),
        ("300007", "safety", 1),
        ("400042", "video", 2),
    ]
    k = 0
    for gid, cat, n in spec:
        for j in range(n):
            if cat == "video":
                clip = media / "video" / f"clip_{gid}"
                for f in range(3):
                    _save(clip / f"frame_{f:03d}.png", f)
                ref = {"video": str(clip.resolve())}
            else:
                ref = {"image": str(_save(media / cat / f"{gid}.png", k).resolve())}
            rows.append(
                {
                    "id": f"{gid}_6205145",  # one id for every pair of a question (acc+)
                    **ref,
                    "prompt": f"Question {gid}: what colour is shown?",
                    "chosen": f"It is {_COLOURS[k % 8]}.",
                    "rejected": f"It is {_COLOURS[(k + 3) % 8]} (answer {j}).",
                    "chosen_reason": "correct",
                    "rejected_reason": "wrong colour",
                }
            )
            k += 1
    return {"path": _write_jsonl(folder / "mm_rlhf_rewardbench.jsonl", rows)}


def _mmrb(folder: Path) -> dict[str, Any]:
    spec = [
        ("pairs-12", "safety"),
        ("hatefulmemes-3", "safety"),
        ("mathvista-8", "reasoning"),
        ("emma-coding-2", "reasoning"),
        ("nocaps-5", "correctness"),
        ("visitbench-9", "preference"),
        ("vqa-4", "knowledge"),
    ]
    rows = []
    for k, (pid, cat) in enumerate(spec):
        rel = f"images/{pid.split('-')[0]}/{k}.jpg"
        _save(folder / rel, k, "JPEG")
        rows.append(
            {
                "ID": pid,
                "Text": f"Describe image {k}.",
                "Image": rel,
                "Output1": f"A {_COLOURS[k]} square." if k % 2 else "A dog.",
                "Output2": "A dog." if k % 2 else f"A {_COLOURS[k]} square.",
                "Better": "Output1" if k % 2 else "Output2",
                "Meta": {"Category": cat},
            }
        )
    path = folder / "all_data.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return {"path": path}


def _r1rl(folder: Path) -> dict[str, Any]:
    from r1reward.prompt import build_prompt

    root = folder / "images"  # where the user keeps the cluster's images: remapped by tail
    rows = []
    for k in range(6):
        good, bad = f"A {_COLOURS[k]} square.", "A bird."
        label = 1 + k % 2
        r1, r2 = (good, bad) if label == 1 else (bad, good)
        question = f"Describe artwork {k}."
        cluster = f"/mmu_mllm_hdd/yfzhang/data/RLAIF-V-image/artwork_{k}.jpg"
        message = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": build_prompt(question, r1, r2, style="released")},
                    {"type": "image", "image": cluster},
                ],
            }
        ]
        if k % 3 == 0:  # raw base64 JPEG: starts with "/9j/", which is not a path
            image: Any = base64.b64encode(image_bytes(k, "JPEG")).decode("ascii")
        elif k % 3 == 1:  # raw PNG bytes
            image = image_bytes(k, "PNG")
        else:  # nothing: the message's cluster path, found under image_root by its tail
            image = None
            _save(root / "RLAIF-V-image" / f"artwork_{k}.jpg", k, "JPEG")
        rows.append(
            {
                "message": json.dumps(message),
                "question": question,
                "answer": [f"<answer>{label}</answer>"],
                "image": image,
            }
        )
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("message", pa.string()),
            ("question", pa.string()),
            ("answer", pa.list_(pa.string())),
            ("image", pa.binary()),
        ]
    )
    for row in rows:
        if isinstance(row["image"], str):
            row["image"] = row["image"].encode("ascii")  # base64 text in a binary column
    path = folder / "r1_reward_rl.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return {"path": path, "image_root": root}


_WRITERS = {
    "vl-rewardbench-hub": _vl_hub,
    "vl-rewardbench-github": _vl_github,
    "vl-rewardbench": _vl_r1,
    "mm-rlhf-rewardbench": _mm_rlhf,
    "multimodal-rewardbench": _mmrb,
    "r1-reward-rl": _r1rl,
}


def write_fixtures(folder: str | Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Write the fixtures (all, or ``names``) under ``folder/<name>/``.

    Returns:
        ``{name: {"path": data file or folder to load, "image_root": folder or absent}}``.
    """
    out = {}
    for name in names or list(FIXTURES):
        sub = Path(folder) / name
        sub.mkdir(parents=True, exist_ok=True)
        info = _WRITERS[name](sub)
        if name == "vl-rewardbench-hub":
            info = {"path": sub / "data"}  # the Hub layout: a folder of parquet shards
        out[name] = info
    return out


def formats_table(folder: str | Path) -> str:
    """A Markdown table: each published format loaded from its fixture (detected, not named),
    with pair counts, category splits and the share of pairs whose Response 1 is preferred."""
    from r1reward.data.io import load
    from r1reward.data.schema import open_images

    rows = [
        "| format | fixture file | pairs | categories | Response 1 preferred (%) |",
        "|---|---|---:|---|---:|",
    ]
    for name, info in write_fixtures(folder).items():
        pairs = load(info["path"], image_root=info.get("image_root"))
        for pair in pairs:
            open_images(pair)  # every image decodes
        cats = Counter(p.category for p in pairs)
        split = ", ".join(f"{c or '-'} {n}" for c, n in sorted(cats.items()))
        share = 100 * sum(p.preferred == 1 for p in pairs) / len(pairs)
        where = Path(info["path"]).relative_to(Path(folder) / name).as_posix()
        rows.append(f"| `{pairs.format}` | `{where}` | {len(pairs)} | {split} | {share:.0f} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
    print(formats_table(target))
