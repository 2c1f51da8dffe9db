"""The scalar Bradley-Terry reward model: the baseline R1-Reward is compared against (paper Sec. 2, 5).

A conventional reward model reads (image, question, one response) and outputs one number. Here it
is the same Qwen2.5-VL-style model the generative judge uses (:func:`r1reward.models.load_model`)
with a linear head on the hidden state of the last token:

    r(x, y) = w^T h_T(x, y) + b,        h_T in R^{hidden}

trained on preference pairs with the Bradley-Terry loss

    L = -log sigmoid(r(x, y_chosen) - r(x, y_rejected)).

Held-out accuracy is the fraction of pairs with ``r(chosen) > r(rejected)``. Unlike the
generative judge it writes no rationale and has nothing to sample, so there is no test-time
scaling by voting (paper Sec. 5.3).

Entry points: :func:`train_scalar` (typed settings, a model path and pairs; :func:`scalar_inputs`
resolves a recipe into them, once) and ``r1reward scalar``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from r1reward.data import PreferencePair
from r1reward.data.splits import load_split
from r1reward.recipes import load_recipe, resolve_model_path, save_recipe
from r1reward.recipes.config import ModelConfig, ScalarConfig
from r1reward.train.common import (
    freeze_vision,
    load_for_training,
    peak_rss_mb,
    preflight,
    refuse_used_out,
)

__all__ = [
    "ScalarRewardModel",
    "encode_responses",
    "scalar_inputs",
    "train_scalar",
    "scalar_accuracy",
    "main",
]

LOG_NAME = "scalar_log.jsonl"


def _backbone(model: nn.Module) -> nn.Module:
    """The transformer that returns hidden states (no LM head); works through a peft wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, "model", inner)


class ScalarRewardModel(nn.Module):
    """A VLM with a scalar head on the last token: ``forward(**batch) -> rewards (batch,)``.

    The batch must be *left* padded, so position ``-1`` is every row's last real token.
    """

    def __init__(self, model: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.model = model
        self.head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / hidden_size**0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        out = _backbone(self.model)(**batch, use_cache=False)
        hidden = out.last_hidden_state[:, -1, :]  # (batch, hidden)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # (batch,)


def encode_responses(processor: Any, pairs: Sequence[Any], which: Sequence[int]) -> Any:
    """Tokenise (image, question, response ``which[i]`` of pair i) as one chat turn each.

    Returns a left-padded ``BatchFeature`` (``input_ids`` (batch, tokens), ``attention_mask``,
    ``pixel_values``, ``image_grid_thw``).
    """
    texts, images = [], []
    for pair, k in zip(pairs, which):
        response = pair.response_1 if k == 1 else pair.response_2
        content = [{"type": "image", "image": img} for img in pair.images]
        content.append({"type": "text", "text": pair.question})
        msgs = [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": response}]},
        ]
        texts.append(processor.apply_chat_template(msgs, tokenize=False))
        images.extend(img.convert("RGB") if hasattr(img, "convert") else img for img in pair.images)
    tok = getattr(processor, "tokenizer", processor)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return processor(
        text=texts,
        images=images or None,
        padding=True,
        padding_side="left",
        return_tensors="pt",
        add_special_tokens=False,
    )


def _rewards(rm: ScalarRewardModel, processor: Any, pairs: Sequence[Any]) -> torch.Tensor:
    """Rewards of (chosen, rejected) for each pair -> (batch, 2)."""
    chosen = [p.preferred for p in pairs]
    rejected = [3 - p.preferred for p in pairs]
    batch = encode_responses(processor, [*pairs, *pairs], [*chosen, *rejected])
    device = next(rm.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    batch.pop("mm_token_type_ids", None)
    r = rm(**batch)
    return torch.stack([r[: len(pairs)], r[len(pairs) :]], dim=1)


@torch.no_grad()
def scalar_accuracy(
    rm: ScalarRewardModel, processor: Any, pairs: Sequence[Any], batch_size: int = 32
) -> float:
    """Fraction of pairs with ``r(chosen) > r(rejected)`` (ties count as wrong)."""
    rm.eval()
    right = 0
    for i in range(0, len(pairs), batch_size):
        r = _rewards(rm, processor, pairs[i : i + batch_size])
        right += int((r[:, 0] > r[:, 1]).sum())
    return right / max(1, len(pairs))


def scalar_inputs(
    recipe: dict,
    *,
    pairs: Sequence[PreferencePair] | None = None,
    heldout: Sequence[PreferencePair] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`train_scalar` for a loaded recipe, resolved once here: the
    ``scalar`` and ``model`` sections, the model path (:func:`r1reward.recipes.resolve_model_path`,
    which builds the tiny model when ``model.path`` is null), the training and held-out pairs
    (default: the two sides of the recipe's declared split,
    :func:`r1reward.data.splits.load_split`; uncurated: the baseline needs only labels) and the
    recipe as the run's record. ``train_scalar(**scalar_inputs(recipe), out_dir=...)`` runs it.
    """
    if pairs is None:
        pairs = load_split(recipe["data"], "train")
    if heldout is None:
        heldout = load_split(recipe["data"], "heldout")
    return {
        "cfg": ScalarConfig.from_dict(recipe.get("scalar")),
        "model_cfg": ModelConfig.from_dict(recipe.get("model")),
        "model_path": resolve_model_path(recipe),
        "pairs": pairs,
        "heldout": heldout,
        "record": recipe,
    }


def train_scalar(
    cfg: ScalarConfig,
    *,
    model_cfg: ModelConfig,
    model_path: str,
    pairs: Sequence[PreferencePair],
    heldout: Sequence[PreferencePair],
    out_dir: str | Path,
    progress: bool = True,
    save_model: bool = False,
    record: dict | None = None,
) -> dict[str, Any]:
    """Train the Bradley-Terry baseline with the ``scalar`` settings ``cfg``; evaluate on
    ``heldout``.

    Args:
        cfg: the recipe's ``scalar`` section.
        model_cfg: the recipe's ``model`` section (dtype, LoRA/QLoRA, max_pixels).
        model_path: the model folder or hub id the backbone is loaded from.
        pairs, heldout: training / evaluation pairs (:func:`scalar_inputs` reads a recipe's).
        out_dir: receives ``scalar_log.jsonl`` (loss per step), ``scalar_head.pt``,
            ``scalar_summary.json`` and ``recipe.yaml`` (``record``).
        save_model: also save the trained backbone and processor to ``out_dir/model`` (the
            head alone is kept otherwise), so the reward model can score new answers later.
        record: the recipe the run came from, written as ``recipe.yaml`` for the record.

    Returns:
        ``{"heldout_accuracy", "train_accuracy", "steps", "train_seconds", "peak_rss_mb",
        "n_train", "n_heldout", "log": [{"step", "loss", "epoch"}...]}``.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = cfg.seed
    torch.manual_seed(seed)
    t0 = time.monotonic()
    model, processor = load_for_training(model_path, model_cfg)
    if cfg.freeze_vision:
        freeze_vision(model)
    hidden = model.config.get_text_config().hidden_size
    rm = ScalarRewardModel(model, hidden)
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(cfg.lr), weight_decay=0.0)
    bs, epochs = cfg.batch_size, cfg.epochs
    total = epochs * ((len(pairs) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(1, total))
    rng = random.Random(seed)
    log: list[dict] = []
    log_path = out_dir / LOG_NAME
    log_path.unlink(missing_ok=True)
    step = 0
    bar = tqdm(total=total, desc="scalar BT", disable=not progress)
    with log_path.open("a", encoding="utf-8") as fh:
        for epoch in range(epochs):
            order = list(range(len(pairs)))
            rng.shuffle(order)
            rm.train()
            for i in range(0, len(order), bs):
                batch = [pairs[j] for j in order[i : i + bs]]
                r = _rewards(rm, processor, batch)  # (b, 2)
                margin = r[:, 0] - r[:, 1]
                loss = -torch.nn.functional.logsigmoid(margin).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                step += 1
                rec = {
                    "step": step,
                    "epoch": epoch + (i + len(batch)) / len(order),
                    "loss": loss.item(),
                    "batch_accuracy": (margin > 0).float().mean().item(),
                }
                log.append(rec)
                fh.write(json.dumps(rec) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}")
    bar.close()
    train_seconds = time.monotonic() - t0
    summary = {
        "heldout_accuracy": scalar_accuracy(rm, processor, list(heldout)),
        "train_accuracy": scalar_accuracy(rm, processor, list(pairs)[: len(heldout) or None]),
        "steps": step,
        "train_seconds": round(train_seconds, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "n_train": len(pairs),
        "n_heldout": len(heldout),
    }
    torch.save(rm.head.state_dict(), out_dir / "scalar_head.pt")
    if save_model:
        model.save_pretrained(out_dir / "model")
        processor.save_pretrained(out_dir / "model")
    if record is not None:
        save_recipe(record, out_dir)
    (out_dir / "scalar_summary.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "log": log}


def main(argv: list[str] | None = None) -> int:
    """``r1reward scalar``: see ``r1reward scalar --help``."""
    parser = argparse.ArgumentParser(
        prog="r1reward scalar",
        description=(
            "Train the scalar Bradley-Terry reward model baseline (the same VLM with a scalar "
            "head on the last token, loss -log sigmoid(r_chosen - r_rejected)) and print its "
            "held-out accuracy."
        ),
        epilog="example:\n  r1reward scalar --recipe toy-cpu --out runs/scalar scalar.epochs=2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--recipe", required=True, help="recipe name (toy-cpu, ...) or YAML path")
    parser.add_argument("--out", required=True, help="output folder (log, head, summary)")
    parser.add_argument(
        "--overwrite", action="store_true", help="train into an --out that holds an earlier run"
    )
    parser.add_argument("overrides", nargs="*", help="dotted key=value recipe overrides")
    args = parser.parse_args(argv)

    try:  # the recipe, paths, --out and the held-out split are checked before any model loads
        recipe = load_recipe(args.recipe, args.overrides)
        preflight(recipe)
        reason = refuse_used_out(args.out, False, args.overwrite)
        if reason:
            raise ValueError(reason.replace("pass --resume to continue it or ", "pass "))
        inputs = scalar_inputs(recipe)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"r1reward scalar: {exc}", file=sys.stderr)
        return 2
    result = train_scalar(**inputs, out_dir=args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "log"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
