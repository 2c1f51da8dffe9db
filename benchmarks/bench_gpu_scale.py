"""Peak memory and throughput of rollout, one SFT step and one RL step at the real model shapes.

A randomly initialised model of the exact Qwen2.5-VL-3B or -7B shape (``r1reward.scaling``) is
written once to a local folder with the tiny model's tokenizer and processor, so nothing is
downloaded, and then loaded through ``r1reward.models.load_model`` -- the same code path as a real
checkpoint -- under LoRA (bf16), QLoRA (4-bit, bitsandbytes) and full bf16 training. For each mode
it prints a row: peak GPU memory and tokens/s for rollout (``r1reward.rollout.generate``), one SFT
step (forward + backward + AdamW on prompt + completion) and one RL step (completion log-probs,
``algorithms.policy_loss`` with Pre-Clip, backward, AdamW).

Random weights do not stop, so rollout runs to ``--new-tokens`` and the figures are upper-bound
lengths; speed and memory depend on shapes, not on what the weights say.

Mode ``engines`` compares the rollout engines on the same bf16 model, prompts, lengths and seed in
one run: transformers ``generate`` and the colocated vLLM engine (``r1reward.rollout_vllm``; needs
``pip install vllm`` and CUDA, otherwise its half of the row records the error). Put it last in
``--modes``: vLLM keeps its memory until the process ends.

    python benchmarks/bench_gpu_scale.py --size 7b --modes lora,qlora,full --out runs/scale
    python benchmarks/bench_gpu_scale.py --size 7b --modes engines --batch 16 --out runs/scale
    python benchmarks/bench_gpu_scale.py --size tiny --modes lora,full   # CPU dry run of the code
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from r1reward import algorithms
from r1reward.models import load_model
from r1reward.prompt import build_messages
from r1reward.rollout import build_batch, completion_logprobs, generate
from r1reward.toy import world as toy
from r1reward.toy.tiny_model import build_tiny_model

SPECIAL = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|endoftext|>",
    "<|im_end|>",
)


def random_checkpoint(size: str, root: Path, tiny: Path) -> Path:
    """A folder holding a random model of the real shape, with the tiny processor files."""
    if size == "tiny":
        return tiny
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from r1reward.scaling import qwen25_vl_config

    out = root / f"random-qwen2.5-vl-{size}"
    if (out / "DONE").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(tiny)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config = qwen25_vl_config(size, token_ids=ids)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    del model
    for f in tiny.iterdir():  # tokenizer, chat template, image processor
        if (
            f.is_file()
            and not f.name.startswith(("model", "config", "generation"))
            and f.suffix != ".safetensors"
        ):
            shutil.copy2(f, out / f.name)
    (out / "DONE").write_text("ok\n")
    return out


def _reset() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()


def _peak_gib() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30
    return float("nan")


def measure(path: Path, mode: str, *, batch: int, new_tokens: int, seq_tokens: int) -> dict:
    _reset()
    cuda = torch.cuda.is_available()
    kwargs: dict = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if cuda:
        kwargs["device_map"] = {"": 0}
    if mode in ("lora", "qlora"):
        kwargs["lora"] = {"r": 64, "lora_alpha": 128}
    if mode == "qlora":
        kwargs["quantization"] = "4bit"
    t0 = time.perf_counter()
    model, processor = load_model(str(path), **kwargs)
    load_s = time.perf_counter() - t0
    if mode == "full" and cuda:
        model.gradient_checkpointing_enable()
    elif cuda:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    weights_gib = _peak_gib()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    pairs = toy.make_pairs(batch, seed=0, split="train")
    convs = [build_messages(p.question, p.response_1, p.response_2, images=p.images) for p in pairs]

    # rollout
    _reset()
    t0 = time.perf_counter()
    outs = generate(model, processor, convs, max_new_tokens=new_tokens, batch_size=batch, seed=0)
    dt = time.perf_counter() - t0
    gen_tokens = sum(len(c.token_ids) for o in outs for c in o)
    rollout = {"tokens_per_s": gen_tokens / dt, "peak_gib": _peak_gib(), "tokens": gen_tokens}

    # one SFT step: a completion of seq_tokens tokens per prompt, cross-entropy on it
    tok = processor.tokenizer
    completions = []
    for pair in pairs:  # the teacher's target text, repeated to seq_tokens (no special tokens)
        ids = tok(toy.target_text(pair), add_special_tokens=False)["input_ids"]
        completions.append((ids * (seq_tokens // len(ids) + 1))[:seq_tokens])
    enc, cmask = build_batch(processor, convs, completions)
    enc = enc.to(model.device)
    cmask = cmask.to(model.device)
    model.train()
    _reset()
    t0 = time.perf_counter()
    logp = completion_logprobs(model, enc, cmask)
    loss = -(logp * cmask).sum() / cmask.sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    n_tok = int(enc["attention_mask"].sum())
    sft = {
        "tokens_per_s": n_tok / dt,
        "peak_gib": _peak_gib(),
        "loss_finite": bool(torch.isfinite(loss)),
    }

    # one RL step: old log-probs without grad, then the clipped loss with Pre-Clip
    _reset()
    t0 = time.perf_counter()
    with torch.no_grad():
        old = completion_logprobs(model, enc, cmask)
    adv = algorithms.normalize_advantages(torch.randn(batch, device=old.device), filter_sigma=3.0)[
        0
    ]
    logp = completion_logprobs(model, enc, cmask)
    rl_loss, stats = algorithms.policy_loss(logp, old, adv, cmask)
    rl_loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    rl = {
        "tokens_per_s": n_tok / dt,
        "peak_gib": _peak_gib(),
        "loss_finite": bool(torch.isfinite(rl_loss)),
    }
    row = {
        "mode": mode,
        "trainable_m": sum(p.numel() for p in params) / 1e6,
        "load_s": load_s,
        "weights_gib": weights_gib,
        "rollout": rollout,
        "sft_step": sft,
        "rl_step": rl,
        "batch": batch,
        "seq_tokens": n_tok // batch,
    }
    del model, opt
    _reset()
    return row


def measure_engines(path: Path, *, batch: int, new_tokens: int) -> dict:
    """Rollout tokens/s and peak memory of each engine on the same model, prompts and seed."""
    _reset()
    cuda = torch.cuda.is_available()
    model, processor = load_model(
        str(path),
        dtype=torch.bfloat16 if cuda else torch.float32,
        device_map={"": 0} if cuda else None,
    )
    pairs = toy.make_pairs(batch, seed=0, split="train")
    convs = [build_messages(p.question, p.response_1, p.response_2, images=p.images) for p in pairs]
    row: dict = {"mode": "engines", "batch": batch}
    for engine in ("transformers", "vllm"):
        try:  # warm-up: builds the vLLM engine (and its CUDA graphs) outside the timing
            generate(model, processor, convs[:1], max_new_tokens=8, seed=0, engine=engine)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            outs = generate(
                model,
                processor,
                convs,
                max_new_tokens=new_tokens,
                batch_size=batch,
                seed=0,
                engine=engine,
            )
            dt = time.perf_counter() - t0
            n = sum(len(c.token_ids) for o in outs for c in o)
            row[engine] = {"tokens_per_s": n / dt, "peak_gib": _peak_gib(), "tokens": n}
        except (ImportError, RuntimeError, NotImplementedError) as err:
            row[engine] = {"error": f"{type(err).__name__}: {err}"[:300]}
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="7b", choices=["tiny", "3b", "7b"])
    ap.add_argument(
        "--modes", default="lora,qlora,full", help="comma list of lora, qlora, full, engines"
    )
    ap.add_argument("--batch", type=int, default=4, help="prompts per step")
    ap.add_argument("--new-tokens", type=int, default=256, help="rollout tokens per prompt")
    ap.add_argument("--seq-tokens", type=int, default=512, help="completion tokens per SFT/RL row")
    ap.add_argument("--out", type=Path, default=Path("runs/scale"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tiny = build_tiny_model(args.out / "tiny")
    path = random_checkpoint(args.size, args.out, tiny)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device: {device}; model: random {args.size} at {path}", flush=True)
    rows = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        try:
            if mode == "engines":
                row = measure_engines(path, batch=args.batch, new_tokens=args.new_tokens)
            else:
                row = measure(
                    path,
                    mode,
                    batch=args.batch,
                    new_tokens=args.new_tokens,
                    seq_tokens=args.seq_tokens,
                )
        except (torch.OutOfMemoryError, RuntimeError, ImportError) as err:
            row = {"mode": mode, "error": f"{type(err).__name__}: {err}"[:300]}
            _reset()
        rows.append(row)
        print(json.dumps(row), flush=True)
    command = "python benchmarks/bench_gpu_scale.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    modes = "-".join(r["mode"] for r in rows)
    (args.out / f"scale-{args.size}-{modes}.json").write_text(
        json.dumps(
            {"device": device, "size": args.size, "command": command, "rows": rows}, indent=1
        )
    )
    print(
        f"\n{'mode':6} {'weights GiB':>11} {'rollout tok/s':>14} {'rollout GiB':>11} {'SFT tok/s':>10} {'SFT GiB':>8} {'RL tok/s':>9} {'RL GiB':>7}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:6} {r['error']}")
            continue
        if r["mode"] == "engines":
            for engine in ("transformers", "vllm"):
                e = r[engine]
                if "error" in e:
                    print(f"rollout engine {engine}: {e['error']}")
                else:
                    print(
                        f"rollout engine {engine}: {e['tokens_per_s']:.1f} tok/s, "
                        f"peak {e['peak_gib']:.1f} GiB"
                    )
            continue
        print(
            f"{r['mode']:6} {r['weights_gib']:11.1f} {r['rollout']['tokens_per_s']:14.1f} {r['rollout']['peak_gib']:11.1f}"
            f" {r['sft_step']['tokens_per_s']:10.1f} {r['sft_step']['peak_gib']:8.1f}"
            f" {r['rl_step']['tokens_per_s']:9.1f} {r['rl_step']['peak_gib']:7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
