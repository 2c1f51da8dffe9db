"""The tiny Qwen2.5-VL of the toy world: its tokenizer, config and model folder.

One code path from toy to 7B: the tiny model is a real
``Qwen2_5_VLForConditionalGeneration`` built from a small config, with a byte-level BPE tokenizer
trained locally with ``tokenizers`` on the toy corpus, Qwen2.5-VL's special tokens and chat
template, and the Qwen2-VL image processor with pixel bounds matching the 56x56 toy images
(16 patches of 14 px, merged 2x2 into 4 visual tokens). It is saved as an ordinary Hugging Face
folder, so :func:`r1reward.models.load_model` reads it exactly as it reads
``"Qwen/Qwen2.5-VL-7B-Instruct"``; nothing on that path imports this module.

A real Qwen2.5-VL starts pretrained on image-text data; a randomly initialised tiny one does
not, so ``build_tiny_model(..., pretrain_steps=N)`` runs the short caption pretraining of
:mod:`r1reward.toy.pretrain` before saving the weights.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from r1reward.data import markers
from r1reward.models import processor_without_video, torchvision_available
from r1reward.prompt import PROMPT_TEMPLATE, build_prompt
from r1reward.toy import world
from r1reward.toy.pretrain import pretrain_tiny_model

__all__ = [
    "BUILD_VERSION",
    "CHAT_TEMPLATE",
    "MARKER",
    "SIZES",
    "SPECIAL_TOKENS",
    "TAG_TOKENS",
    "build_tiny_model",
    "read_marker",
    "template_pieces",
    "tiny_config",
]

#: Marker written last into a complete tiny-model folder (a crash never leaves a folder that
#: looks complete).
#: Marker written last into a complete tiny-model folder (a crash never leaves a folder that
#: looks complete).
MARKER = "r1reward_tiny.json"
#: Bump when the folder layout/tokenizer recipe changes, so old cached folders get rebuilt.
BUILD_VERSION = 4

#: Qwen2.5-VL's special tokens, in the order of their ids in the real tokenizer (151643 ...).
#: The tiny tokenizer gives them ids 0..len-1 in the same order.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: Non-special added tokens in the real Qwen2.5 vocabulary (kept when decoding).
QWEN_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
#: The R1-Reward output tags (Table 1). Single tokens in the tiny vocabulary so the format is
#: cheap to learn; *not* special, so ``decode(skip_special_tokens=True)`` keeps them as text.
TAG_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

#: Image geometry of the tiny model: the toy world's 56x56 images (:data:`world.IMAGE_SIZE`) ->
#: 4x4 patches of 14 px -> 2x2 merged tokens.
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2

#: Qwen2.5-VL's chat template, written for this project. Content items follow r1reward.prompt's messages:
#: ``{"type": "image", "image": ...}``, ``{"type": "video", "video": ...}``,
#: ``{"type": "text", "text": ...}``; a string content is plain text. A default system message is
#: added like Qwen's own template. ``add_vision_id`` labels images "Picture 1: ..." when set.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}{{ 'Picture ' + image_count.value|string + ': ' }}{% endif %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}{{ 'Video ' + video_count.value|string + ': ' }}{% endif %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)

#: Model shapes. "tiny" is about 0.9M parameters (fast tests, ci profile); "small" about 3M
#: (the cpu profile, where the toy must be learnt in minutes). ``vocab_size`` is the BPE
#: trainer's upper bound: the toy corpus saturates at about 630 tokens (whole words).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        vocab_size=1024,
        hidden=96,
        layers=4,
        heads=4,
        kv_heads=2,
        intermediate=384,
        v_hidden=64,
        v_depth=2,
        v_heads=4,
        v_intermediate=128,
    ),
    "small": dict(
        vocab_size=2048,
        hidden=192,
        layers=6,
        heads=6,
        kv_heads=2,
        intermediate=512,
        v_hidden=96,
        v_depth=2,
        v_heads=4,
        v_intermediate=256,
    ),
}

# --------------------------------------------------------------------------------------------
# corpus + tokenizer
# --------------------------------------------------------------------------------------------


#: Text around every conversation rendered by :data:`CHAT_TEMPLATE` (part of the corpus so the
#: framing costs few tokens).
_CHAT_FRAMING = ("system\nYou are a helpful assistant.", "user\n", "assistant\n")


def _toy_corpus(n_pairs: int, seed: int) -> Iterator[str]:
    """Texts the tokenizer is trained on: for ``n_pairs`` toy training pairs, the Table-1 prompt
    (:func:`r1reward.prompt.build_prompt`) and the target ``<think>..</think><answer>..``
    (:func:`r1reward.toy.world.target_text`), plus the chat framing. Held-out pairs are never
    read; any other text still encodes (byte-level BPE), only in more tokens."""
    for pair in world.make_pairs(n_pairs, seed=seed, split="train"):
        yield build_prompt(pair.question, pair.response_1, pair.response_2)
        yield world.target_text(pair)
    for _ in range(100):
        yield from _CHAT_FRAMING


def _train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE (no unknown tokens: any text encodes) trained on ``texts``; returns a
    ``tokenizers.Tokenizer`` whose first ids are Qwen2.5-VL's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t in QWEN_ADDED_TOKENS + TAG_TOKENS + template_pieces()
        ]
    )
    return tok


def template_pieces() -> tuple[str, ...]:
    """The fixed text of the Table-1 template between its placeholders (4 pieces).

    The tiny tokenizer holds each piece as one (non-special) token, so a toy prompt costs about
    45 tokens instead of about 195 and a CPU training step is several times cheaper. The model
    still receives exactly the text of :func:`r1reward.prompt.build_prompt` (decoding gives it
    back verbatim); a prompt whose wording differs falls back to ordinary BPE tokens. Real
    Qwen2.5-VL tokenizers are untouched: this only concerns the toy vocabulary.
    """
    pieces = [literal for literal, *_ in string.Formatter().parse(PROMPT_TEMPLATE)]
    return tuple(p for p in pieces if p)


# --------------------------------------------------------------------------------------------
# config + build
# --------------------------------------------------------------------------------------------


def tiny_config(size: str, vocab_size: int, token_ids: dict[str, int]):
    """A ``Qwen2_5_VLConfig`` of the given size with the tiny tokenizer's special-token ids."""
    from transformers import Qwen2_5_VLConfig

    if size not in SIZES:
        raise ValueError(f"build_tiny_model: size={size!r}; expected one of {sorted(SIZES)}")
    s = SIZES[size]
    head_dim = s["hidden"] // s["heads"]
    # M-RoPE splits head_dim/2 rotary frequencies between (temporal, height, width); the real
    # model uses [16, 24, 24] for head_dim 128. Keep about the same 2:3:3 proportions.
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    mrope = [t, h, half - t - h]
    text = dict(
        vocab_size=vocab_size,
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=token_ids["<|im_end|>"],
        pad_token_id=token_ids["<|endoftext|>"],
        tie_word_embeddings=True,
    )
    vision = dict(
        depth=s["v_depth"],
        hidden_size=s["v_hidden"],
        intermediate_size=s["v_intermediate"],
        num_heads=s["v_heads"],
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        window_size=112,
        out_hidden_size=s["hidden"],
        fullatt_block_indexes=[s["v_depth"] - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def _image_processor_kwargs() -> dict[str, Any]:
    px = world.IMAGE_SIZE * world.IMAGE_SIZE
    return dict(
        min_pixels=px,
        max_pixels=px,
        patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        merge_size=MERGE_SIZE,
    )


def read_marker(path: Path) -> dict[str, Any] | None:
    """The build record (:data:`MARKER`) of a complete tiny-model folder, or None."""
    return markers.read_marker(path / MARKER)


#: Marker values of builds made before a key existed (folders without caption pretraining).
_MARKER_DEFAULTS: dict[str, Any] = {
    "pretrain_steps": 0,
    "pretrain_lr": None,
    "pretrain_batch_size": None,
    "pretrain_text_batch_size": None,
}


def _marker_value(info: dict[str, Any], key: str) -> Any:
    return info.get(key, _MARKER_DEFAULTS.get(key))


def _pretrain_key(
    steps: int, lr: float, batch_size: int, text_batch_size: int = 0
) -> dict[str, Any]:
    """The pretraining settings a build marker records (lr/batches only matter with steps > 0)."""
    steps = int(steps)
    if steps == 0:
        return {
            "pretrain_steps": 0,
            "pretrain_lr": None,
            "pretrain_batch_size": None,
            "pretrain_text_batch_size": None,
        }
    return {
        "pretrain_steps": steps,
        "pretrain_lr": float(lr),
        "pretrain_batch_size": int(batch_size),
        "pretrain_text_batch_size": int(text_batch_size),
    }


def _same_build(path: Path, wanted: dict[str, Any]) -> bool:
    info = read_marker(path)
    return info is not None and {k: _marker_value(info, k) for k in wanted} == wanted


def build_tiny_model(
    path: str | os.PathLike[str],
    *,
    size: str = "tiny",
    seed: int = 0,
    corpus_pairs: int = 500,
    pretrain_steps: int = 0,
    pretrain_lr: float = 3e-3,
    pretrain_batch_size: int = 16,
    pretrain_text_batch_size: int = 0,
) -> Path:
    """Write a tiny Qwen2.5-VL model folder at ``path`` and return it.

    The weights are randomly initialised and then, when ``pretrain_steps > 0``, trained for
    that many steps on captions of toy scenes (:func:`pretrain_tiny_model`, learning rate
    ``pretrain_lr``, ``pretrain_batch_size`` scenes a step): the toy's stand-in for the
    vision-language pretraining a real Qwen2.5-VL starts from. It never sees a Table-1 prompt,
    a question, a response or a label.

    The folder holds ``config.json`` + ``model.safetensors``
    (``Qwen2_5_VLForConditionalGeneration``, :data:`SIZES`), ``tokenizer.json`` (byte-level
    BPE trained on the Table-1 prompts and targets of ``corpus_pairs`` toy training pairs, with
    Qwen2.5-VL's special tokens and single-token ``<think>``/``<answer>`` tags),
    ``chat_template.jinja`` (:data:`CHAT_TEMPLATE`), ``processor_config.json`` (Qwen2-VL image
    and video processors with ``min_pixels = max_pixels = 56*56``) and, written last, a marker
    file :data:`MARKER`.

    Idempotent: a complete folder built with the same settings is returned as is; one built
    with other ``size``/``seed``/``corpus_pairs`` raises ``FileExistsError`` (never silently
    overwritten), and one from an older :data:`BUILD_VERSION` is rebuilt. The build happens in
    a temporary sibling folder renamed into place at the end, so a crash never leaves a folder
    that looks complete. Deterministic: the same arguments give byte-identical files.
    """
    path = Path(path)
    if size not in SIZES:
        raise ValueError(f"build_tiny_model: size={size!r}; expected one of {sorted(SIZES)}")
    if (
        pretrain_steps < 0
        or pretrain_text_batch_size < 0
        or (pretrain_steps and (pretrain_lr <= 0 or pretrain_batch_size < 1))
    ):
        raise ValueError(
            f"build_tiny_model: pretrain_steps={pretrain_steps}, pretrain_lr={pretrain_lr}, "
            f"pretrain_batch_size={pretrain_batch_size}, pretrain_text_batch_size="
            f"{pretrain_text_batch_size}; expected steps >= 0, text batch size >= 0, and with "
            "steps > 0 lr > 0 and batch size >= 1"
        )
    pretrain = _pretrain_key(
        pretrain_steps, pretrain_lr, pretrain_batch_size, pretrain_text_batch_size
    )
    wanted = {
        "size": size,
        "seed": seed,
        "corpus_pairs": corpus_pairs,
        **pretrain,
        "version": BUILD_VERSION,
        "toy_version": world.TOY_VERSION,  # the tokenizer corpus and pretraining scenes come from the toy
    }
    info = read_marker(path)
    if info is not None:
        if _same_build(path, wanted):
            return path
        keys = ("size", "seed", "corpus_pairs", *pretrain)
        if any(_marker_value(info, k) != wanted[k] for k in keys):
            got = {k: _marker_value(info, k) for k in keys}
            raise FileExistsError(
                f"{path}: a tiny model built with {got} already exists; asked for "
                f"{ {k: wanted[k] for k in keys} }. Use another folder or delete this one."
            )
        # the same request built by an older recipe (version): rebuilt below
    elif path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(
            f"{path}: exists and is not a complete tiny-model folder (no {MARKER}); "
            "refusing to overwrite it. Use another folder or delete this one."
        )
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        report = _write_tiny_folder(
            tmp,
            size=size,
            seed=seed,
            corpus_pairs=corpus_pairs,
            pretrain_steps=pretrain_steps,
            pretrain_lr=pretrain_lr,
            pretrain_batch_size=pretrain_batch_size,
            pretrain_text_batch_size=pretrain_text_batch_size,
        )
        marker = dict(
            wanted,
            n_params=_count_parameters(tmp),
            build_seconds=round(time.perf_counter() - t0, 3),
        )
        if report:
            marker["pretrain_report"] = {k: v for k, v in report.items() if k != "log"}
        markers.write_marker(tmp / MARKER, marker, indent=2)
        if path.exists():
            if _same_build(path, wanted):  # another process finished the same build first
                shutil.rmtree(tmp)
                return path
            shutil.rmtree(path)  # an empty folder, or our own folder from an older version
        try:
            os.replace(tmp, path)
        except OSError:
            if not _same_build(path, wanted):
                raise
            shutil.rmtree(tmp)  # lost a race to an identical build
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _count_parameters(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, framework="pt") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= d
                total += n
    return total


def _write_tiny_folder(
    tmp: Path,
    *,
    size: str,
    seed: int,
    corpus_pairs: int,
    pretrain_steps: int = 0,
    pretrain_lr: float = 3e-3,
    pretrain_batch_size: int = 16,
    pretrain_text_batch_size: int = 0,
) -> dict[str, Any] | None:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLForConditionalGeneration

    tok = _train_tokenizer(_toy_corpus(corpus_pairs, seed), SIZES[size]["vocab_size"])
    vocab = tok.get_vocab()
    ids = {t: vocab[t] for t in SPECIAL_TOKENS}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[
            t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")
        ],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    config = tiny_config(size, len(hf_tok), ids)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    processor = _make_processor(hf_tok)
    # saved before pretraining: encoding batches leaves padding state in the fast tokenizer,
    # which would otherwise be written into tokenizer.json
    processor.save_pretrained(tmp)
    _finish_processor_files(tmp)
    report = None
    if pretrain_steps > 0:
        report = pretrain_tiny_model(
            model,
            processor,
            steps=pretrain_steps,
            lr=pretrain_lr,
            batch_size=pretrain_batch_size,
            seed=seed,
            text_batch_size=pretrain_text_batch_size,
        )
    model.save_pretrained(tmp)
    return report


# --------------------------------------------------------------------------------------------
# processor
# --------------------------------------------------------------------------------------------


def _make_processor(tokenizer):
    """The Qwen2.5-VL processor around ``tokenizer`` with the toy image bounds."""
    from transformers import Qwen2_5_VLProcessor

    if torchvision_available():
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        return Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(**_image_processor_kwargs()),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(**_image_processor_kwargs()),
            chat_template=CHAT_TEMPLATE,
        )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    cls = processor_without_video(Qwen2_5_VLProcessor)
    return cls(
        image_processor=Qwen2VLImageProcessorPil(**_image_processor_kwargs()),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def _video_processor_dict() -> dict[str, Any]:
    """What ``Qwen2VLVideoProcessor(**_image_processor_kwargs()).to_dict()`` holds that differs
    from the class defaults; written by hand when torchvision is missing at build time, so the
    folder loads with its video processor on machines that have torchvision."""
    px = world.IMAGE_SIZE * world.IMAGE_SIZE
    return {
        "video_processor_type": "Qwen2VLVideoProcessor",
        "size": {"longest_edge": px, "shortest_edge": px},
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
    }


def _finish_processor_files(folder: Path) -> None:
    """Make the saved processor files those of a normal Qwen2.5-VL folder."""
    cfg_path = folder / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["processor_class"] = "Qwen2_5_VLProcessor"
    cfg.setdefault("video_processor", _video_processor_dict())
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tok_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(tok_path.read_text())
    tok_cfg["processor_class"] = "Qwen2_5_VLProcessor"
    tok_path.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
