"""Load any Qwen2.5-VL-style model + processor by path, and build the tiny one.

One code path from toy to 7B (DESIGN.md): the tiny model is a real
``Qwen2_5_VLForConditionalGeneration`` built from a small config, with a byte-level BPE tokenizer
trained locally with ``tokenizers`` on the toy corpus, Qwen2.5-VL's special tokens and chat
template, and the Qwen2-VL image processor with pixel bounds matching the 56x56 toy images
(16 patches of 14 px, merged 2x2 into 4 visual tokens). It is saved as an ordinary Hugging Face
folder, so ``load_model(folder)`` and ``load_model("Qwen/Qwen2.5-VL-7B-Instruct")`` run the same
code.

A real Qwen2.5-VL starts pretrained on image-text data; a randomly initialised tiny one does
not, and fine-tuning it on the Table-1 task alone settles on ignoring the image.
``build_tiny_model(..., pretrain_steps=N)`` therefore runs a short, deterministic caption
pretraining (:func:`pretrain_tiny_model`) on toy scenes that no preference pair uses
(:func:`pretrain_scene`, :func:`scene_caption`), with the fixed instruction "Describe the
image." and never a question, response or label.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BUILD_VERSION",
    "CHAT_TEMPLATE",
    "DEFAULT_LORA_TARGETS",
    "MARKER",
    "SIZES",
    "SPECIAL_TOKENS",
    "TAG_TOKENS",
    "PRETRAIN_INSTRUCTION",
    "build_tiny_model",
    "caption_metrics",
    "adapter_base",
    "cap_pixels",
    "check_model_path",
    "is_adapter",
    "load_model",
    "load_processor",
    "merge_adapter",
    "merge_main",
    "tiny_config",
    "pretrain_scene",
    "pretrain_tiny_model",
    "scene_caption",
    "main",
]

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

#: Image geometry of the toy world: 56x56 images -> 4x4 patches of 14 px -> 2x2 merged tokens.
TOY_IMAGE_SIZE = 56
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2

#: Qwen2.5-VL's chat template, written for this project. Content items follow INTERFACES.md:
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
    (:func:`r1reward.data.toy.target_text`), plus the chat framing. Held-out pairs are never
    read; any other text still encodes (byte-level BPE), only in more tokens."""
    from r1reward.data import toy
    from r1reward.prompt import build_prompt

    for pair in toy.make_pairs(n_pairs, seed=seed, split="train"):
        yield build_prompt(pair.question, pair.response_1, pair.response_2)
        yield toy.target_text(pair)
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
    import string

    from r1reward.prompt import PROMPT_TEMPLATE

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
    px = TOY_IMAGE_SIZE * TOY_IMAGE_SIZE
    return dict(
        min_pixels=px,
        max_pixels=px,
        patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        merge_size=MERGE_SIZE,
    )


def _is_complete(path: Path) -> dict[str, Any] | None:
    marker = path / MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info


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
    info = _is_complete(path)
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
    from r1reward.data.toy import TOY_VERSION

    pretrain = _pretrain_key(
        pretrain_steps, pretrain_lr, pretrain_batch_size, pretrain_text_batch_size
    )
    wanted = {
        "size": size,
        "seed": seed,
        "corpus_pairs": corpus_pairs,
        **pretrain,
        "version": BUILD_VERSION,
        "toy_version": TOY_VERSION,  # the tokenizer corpus and pretraining scenes come from the toy
    }
    info = _is_complete(path)
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
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
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


def _processor_without_video(processor_cls: type) -> type:
    """A subclass of ``processor_cls`` (e.g. ``Qwen2_5_VLProcessor``) without its video processor.

    Why, exactly (transformers 5.x, torchvision not installed):

    - ``AutoProcessor.from_pretrained`` loads every sub-processor named in the processor's
      ``__init__``; the video one is ``Qwen2VLVideoProcessor``, which raises ``ImportError:
      Qwen2VLVideoProcessor requires the Torchvision library``;
    - constructing the processor with ``video_processor=None`` fails too:
      ``ProcessorMixin.check_argument_for_proper_class`` looks the argument's base class
      (``VideoProcessorMixin``) up, which is not exported without torchvision, and its
      fallback lookup raises ``AttributeError: ... VIDEO_PROCESSOR_MAPPING has no attribute
      '_extra_content'``.

    The subclass drops ``video_processor`` from ``__init__``'s signature (``ProcessorMixin``
    derives its sub-processors from it), so only the image processor (its PIL backend, no
    torchvision) and the tokenizer are loaded. Everything else is the real class. It is used
    only when torchvision is missing; video inputs then raise a clear error instead of being
    dropped silently.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template)

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        if videos is not None:
            raise ImportError(
                f"{processor_cls.__name__}: video inputs need transformers' video processor, "
                "which needs torchvision (pip install torchvision matching your torch build). "
                "Images work without it."
            )
        return processor_cls.__call__(self, images=images, text=text, **kwargs)

    return type(
        processor_cls.__name__,  # saved folders keep the real class name
        (processor_cls,),
        {"__init__": __init__, "__call__": __call__, "__module__": __name__},
    )


def _torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return is_torchvision_available()


def _make_processor(tokenizer):
    """The Qwen2.5-VL processor around ``tokenizer`` with the toy image bounds."""
    from transformers import Qwen2_5_VLProcessor

    if _torchvision_available():
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

    cls = _processor_without_video(Qwen2_5_VLProcessor)
    return cls(
        image_processor=Qwen2VLImageProcessorPil(**_image_processor_kwargs()),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def _video_processor_dict() -> dict[str, Any]:
    """What ``Qwen2VLVideoProcessor(**_image_processor_kwargs()).to_dict()`` holds that differs
    from the class defaults; written by hand when torchvision is missing at build time, so the
    folder loads with its video processor on machines that have torchvision."""
    px = TOY_IMAGE_SIZE * TOY_IMAGE_SIZE
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


def _processor_class_name(path_or_hub_id: str, **kwargs: Any) -> str | None:
    """The processor class a folder or Hub id asks for: ``processor_class`` in a local
    folder's processor/preprocessor/tokenizer config, else the class registered for the
    model type of its ``config.json``."""
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    folder = Path(path_or_hub_id)
    if folder.is_dir():
        for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
            f = folder / name
            if f.is_file():
                try:
                    cls_name = json.loads(f.read_text()).get("processor_class")
                except (OSError, json.JSONDecodeError, AttributeError):
                    cls_name = None
                if isinstance(cls_name, str):
                    return cls_name
        if not (folder / "config.json").is_file():
            return None
    config = AutoConfig.from_pretrained(path_or_hub_id, **kwargs)
    name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    return name if isinstance(name, str) else None


def load_processor(path_or_hub_id: str | os.PathLike[str], **kwargs: Any):
    """``AutoProcessor.from_pretrained`` that also works without torchvision (see
    :func:`_processor_without_video`); ``kwargs`` go to ``from_pretrained``.

    With torchvision installed this is exactly ``AutoProcessor.from_pretrained``.
    """
    import transformers
    from transformers import AutoProcessor

    src = str(path_or_hub_id)
    if _torchvision_available():
        return AutoProcessor.from_pretrained(src, **kwargs)
    name = _processor_class_name(src, **kwargs)
    cls = getattr(transformers, name, None) if name else None
    if not isinstance(cls, type) or "video_processor" not in cls.get_attributes():
        return AutoProcessor.from_pretrained(src, **kwargs)
    return _processor_without_video(cls).from_pretrained(src, **kwargs)


# --------------------------------------------------------------------------------------------
# caption pretraining
# --------------------------------------------------------------------------------------------

#: The only instruction caption pretraining shows the model (never the Table-1 prompt).
PRETRAIN_INSTRUCTION = "Describe the image."


def scene_caption(truth: dict[str, Any]) -> str:
    """The caption of a toy scene: every visual fact the toy questions ask about.

    Object scenes: the objects as ``shape colour`` ordered by shape (then colour), the same
    objects as ``colour shape`` ordered by colour (then shape), and the count of each shape;
    e.g. ``"circle green, circle red, square blue. blue square, red circle, green circle.
    2 circles, 1 square."`` (shapes in the order of ``toy.SHAPES``, colours in the order of
    ``toy.COLOURS``). Bar charts: the bars from the tallest to the shortest with colour and
    height in eighths of the plot, then the tallest and the shortest bar; e.g. ``"3 bars:
    green 7, red 5, blue 2. tallest: green. shortest: blue."``.

    Every fact is addressed by content (which shape is which colour, which colour which shape,
    which bar is taller), never by place in the image: with captions in reading order
    ("cell 1: red circle") the tiny model learnt shapes, heights and occupancy in 1200 steps but
    stayed at chance on colours, which it would have to fetch from a given cell. The toy
    questions are all content-addressed too ("what colour is the circle?").
    """
    from r1reward.data import toy

    if truth["task"] == "bars":
        bars = sorted(truth["bars"], key=lambda b: -b["height"])
        listed = ", ".join(f"{b['colour']} {b['height']}" for b in bars)
        top, low = bars[0]["colour"], bars[-1]["colour"]
        return f"{len(bars)} bars: {listed}. tallest: {top}. shortest: {low}."
    shape_rank = {s: i for i, s in enumerate(toy.SHAPES)}
    colour_rank = {c: i for i, c in enumerate(toy.COLOURS)}
    objs = truth["objects"]
    by_shape = sorted(objs, key=lambda o: (shape_rank[o["shape"]], colour_rank[o["colour"]]))
    by_colour = sorted(objs, key=lambda o: (colour_rank[o["colour"]], shape_rank[o["shape"]]))
    counts = [
        f"{n} {toy.PLURAL[s] if n > 1 else s}"
        for s in toy.SHAPES
        if (n := sum(o["shape"] == s for o in objs))
    ]
    return (
        ", ".join(f"{o['shape']} {o['colour']}" for o in by_shape)
        + ". "
        + ", ".join(f"{o['colour']} {o['shape']}" for o in by_colour)
        + ". "
        + ", ".join(counts)
        + "."
    )


def _scene_rng(stream: str, seed: int, index: int):
    import hashlib
    import random

    h = hashlib.sha256(f"r1reward-pretrain|{stream}|{seed}|{index}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def pretrain_scene(
    index: int, *, seed: int = 0, stream: str = "train", image_size: int = TOY_IMAGE_SIZE
) -> tuple[Any, str, dict[str, Any]]:
    """Scene ``index`` of a caption-pretraining stream: ``(PIL image, caption, truth)``.

    Scenes come from :func:`r1reward.data.toy.random_scene` with a generator seeded from
    ``("r1reward-pretrain", stream, seed, index)``, a stream no preference pair is drawn from
    (pairs use ``"r1reward-toy"``). ``stream="train"`` is what pretraining reads,
    ``stream="eval"`` the held-out scenes its caption accuracy is measured on.

    The background is an off-white tint (each channel 232..255, never pure white) drawn per
    scene, while every toy pair image has a pure white background: a pretraining image can
    therefore never equal a train or held-out pair image, pixel for pixel (pair images can
    coincide by chance across splits; these cannot), and the model also learns not to care
    about the exact background.
    """
    import numpy as np
    from PIL import Image

    from r1reward.data import toy

    if stream not in ("train", "eval"):
        raise ValueError(f"pretrain_scene: stream={stream!r}; expected 'train' or 'eval'")
    rng = _scene_rng(stream, seed, index)
    truth = toy.random_scene(rng)
    while True:
        bg = tuple(rng.randint(232, 255) for _ in range(3))
        if bg != (255, 255, 255):
            break
    pixels = np.array(toy.render(truth, image_size))
    white = (pixels == 255).all(axis=-1)
    pixels[white] = bg
    return Image.fromarray(pixels), scene_caption(truth), truth


def _caption_batch(processor: Any, scenes: list[tuple[Any, str, Any]]) -> tuple[Any, Any]:
    """``build_batch`` tensors for ``[Describe the image.] -> caption<|im_end|>`` rows."""
    from r1reward.rollout import build_batch

    tok = getattr(processor, "tokenizer", processor)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    convs = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": img},
                    {"type": "text", "text": PRETRAIN_INSTRUCTION},
                ],
            }
        ]
        for img, _, _ in scenes
    ]
    targets = [tok.encode(cap, add_special_tokens=False) + [end] for _, cap, _ in scenes]
    return build_batch(processor, convs, targets)


def _caption_loss(model: Any, batch: Any, mask: Any, facts: Any = None) -> tuple[Any, Any, Any]:
    """Mean next-token cross-entropy over caption tokens, and argmax hits and token counts per
    row ``(B,)``; with ``facts`` (a 1-D tensor of token ids) hits and counts are pairs
    ``(all caption tokens, fact tokens)``. ``batch``: ``input_ids``/``attention_mask``
    ``(B, T)`` + image tensors; ``mask`` ``(B, T)`` 1 on caption tokens."""
    import torch

    first = int(mask.any(dim=0).nonzero()[0])
    keep = mask.shape[1] - first + 1
    logits = model(**batch, logits_to_keep=keep).logits[:, :-1].float()  # (B, T-first, V)
    targets = batch["input_ids"][:, first:]
    m = mask[:, first:].float()
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets, reduction="none"
    )  # (B, T-first)
    loss = (nll * m).sum() / m.sum()
    right = (logits.argmax(-1) == targets).float()
    if facts is None:
        return loss, (right * m).sum(dim=1), m.sum(dim=1)
    mf = m * torch.isin(targets, facts.to(targets.device)).float()
    return loss, ((right * m).sum(1), (right * mf).sum(1)), (m.sum(1), mf.sum(1))


def caption_metrics(
    model: Any,
    processor: Any,
    *,
    n: int = 64,
    seed: int = 0,
    image_size: int = TOY_IMAGE_SIZE,
    batch_size: int = 32,
) -> dict[str, float]:
    """Teacher-forced caption loss and accuracy on ``n`` held-out pretraining scenes.

    Returns ``{"loss", "token_accuracy", "fact_accuracy", "caption_accuracy"}``: mean
    cross-entropy per caption token, share of caption tokens whose argmax is right, the same
    share over the *fact* tokens only (colour and shape words, digits: what a model that does
    not read the image can only guess; the caption's fixed wording is easy), and share of
    captions whose every token is right (``stream="eval"`` scenes, never trained on).
    """
    import torch

    scenes = [pretrain_scene(i, seed=seed, stream="eval", image_size=image_size) for i in range(n)]
    facts = torch.tensor(sorted(_fact_token_ids(processor)))
    was_training = model.training
    model.eval()
    tot_loss = tot_tok = tot_hit = exact = fact_hit = fact_tok = 0.0
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                chunk = scenes[start : start + batch_size]
                batch, mask = _caption_batch(processor, chunk)
                batch = batch.to(model.device)
                mask = mask.to(model.device)
                loss, hits, count = _caption_loss(model, batch, mask, facts=facts)
                tot_loss += float(loss) * float(count[0].sum())
                tot_tok += float(count[0].sum())
                tot_hit += float(hits[0].sum())
                exact += float((hits[0] == count[0]).sum())
                fact_hit += float(hits[1].sum())
                fact_tok += float(count[1].sum())
    finally:
        model.train(was_training)
    return {
        "loss": tot_loss / tot_tok,
        "token_accuracy": tot_hit / tot_tok,
        "fact_accuracy": fact_hit / max(fact_tok, 1.0),
        "caption_accuracy": exact / n,
    }


def _fact_token_ids(processor: Any) -> set[int]:
    """Vocabulary ids whose text (spaces stripped) is a toy colour, shape (or plural) or digit."""
    from r1reward.data import toy

    tok = getattr(processor, "tokenizer", processor)
    words = set(toy.COLOURS) | set(toy.SHAPES) | set(toy.PLURAL.values()) | set("0123456789")
    return {
        i for t, i in tok.get_vocab().items() if tok.convert_tokens_to_string([t]).strip() in words
    }


def _text_batch(processor: Any, seed: int, index: int, n: int) -> tuple[Any, Any]:
    """``(input_ids, mask)`` ``(n, T)`` for ``n`` analysis texts of the text stream (right-padded;
    ``mask`` 1 on real tokens). Stream ``("r1reward-pretrain-text", seed, index)``: no pair."""
    import random

    from r1reward.data import toy

    rng = random.Random(f"r1reward-pretrain-text|{seed}|{index}")
    _, ids, mask = _encode_texts(processor, [toy.random_analysis(rng) for _ in range(n)])
    return ids, mask


def _encode_texts(processor: Any, texts: Sequence[str]) -> tuple[list[list[int]], Any, Any]:
    """Token ids of ``texts`` (no special tokens) and the right-padded ``(ids, mask)``
    ``(len(texts), T)`` tensors, ``mask`` 1 on real tokens."""
    import torch

    tok = getattr(processor, "tokenizer", processor)
    rows = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return rows, ids, mask


def _text_loss(model: Any, ids: Any, mask: Any) -> Any:
    """Mean next-token cross-entropy over the real tokens of a text batch (no image)."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    m = mask[:, 1:].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return (nll * m).sum() / m.sum()


def reading_metrics(model: Any, processor: Any, *, n: int = 256, seed: int = 0) -> dict[str, float]:
    """How well the model reads an analysis: on ``n`` held-out texts of the text stream
    (:func:`r1reward.data.toy.random_analysis`, indices never trained on), the teacher-forced
    argmax accuracy of its decision words, which follow from the words before them.

    ``first_mark_accuracy`` is the one that needs reading: "right"/"wrong" after Response 1's
    claim, i.e. whether that claim equals the observation (chance 0.5). The second mark is the
    opposite of the first, and the verdict digit names the response called right.

    Returns ``{"first_mark_accuracy", "second_mark_accuracy", "verdict_accuracy", "n"}``.
    """
    import random

    import torch

    from r1reward.data import toy

    tok = getattr(processor, "tokenizer", processor)
    rng = random.Random(f"r1reward-pretrain-text-eval|{seed}")
    marks = {tok.encode(f" {w}", add_special_tokens=False)[0] for w in ("right", "wrong")}
    digits = {tok.encode(f" {d}", add_special_tokens=False)[0] for d in "12"}
    hits = [0, 0, 0]
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, n, 64):
                texts = [toy.random_analysis(rng) for _ in range(min(64, n - start))]
                rows, ids, mask = _encode_texts(processor, texts)
                logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
                pred = logits[:, :-1].argmax(-1).cpu()
                for i, r in enumerate(rows):
                    mark_pos = [t for t in range(1, len(r)) if r[t] in marks][:2]
                    verdict_pos = max(t for t in range(1, len(r)) if r[t] in digits)
                    for k, t in enumerate([*mark_pos, verdict_pos]):
                        hits[k] += int(pred[i, t - 1] == r[t])
    finally:
        model.train(was_training)
    return {
        "first_mark_accuracy": hits[0] / n,
        "second_mark_accuracy": hits[1] / n,
        "verdict_accuracy": hits[2] / n,
        "n": n,
    }


def pretrain_tiny_model(
    model: Any,
    processor: Any,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    image_size: int = TOY_IMAGE_SIZE,
    progress: bool = False,
    eval_scenes: int = 64,
    vision_lr_scale: float = 0.0,
    text_batch_size: int = 0,
) -> dict[str, Any]:
    """Caption pretraining of the tiny model, in place: the toy's vision-language pretraining.

    A real Qwen2.5-VL is pretrained on image-text data before anyone fine-tunes it into a
    reward model; a randomly initialised tiny one is not, and SFT on the Table-1 task alone
    settles on ignoring the image. This stage gives it the same start at toy scale: for
    ``steps`` steps, ``batch_size`` fresh scenes of the ``stream="train"`` pretraining stream
    (:func:`pretrain_scene`, disjoint from every preference pair) are shown in a chat turn
    ``[image] Describe the image.`` and the model (vision tower and language model) learns the
    caption (:func:`scene_caption`) followed by ``<|im_end|>``; the loss is the mean
    cross-entropy over those caption tokens only (prompt tokens carry no loss). AdamW, linear
    warm-up over the first 5 % of steps then cosine decay to 10 % of ``lr``, gradient norm
    clipped at 1. Deterministic for a given ``seed`` and thread count.

    With ``text_batch_size > 0`` every step also reads that many analysis-shaped texts
    (:func:`r1reward.data.toy.random_analysis`: no image, no preference pair of any split) with
    the language-modelling loss on every token, added to the caption loss: the toy's stand-in for
    the text a real model reads in pretraining, where it learns to compare two words and copy a
    conclusion. The SFT pairs alone did not teach the tiny model that step (its "right"/"wrong"
    stayed near chance even after a correct observation; see the cold-start chapter).

    Returns:
        ``{"steps", "seconds", "first_loss", "last_loss", "log": [{"step", "loss"}, ...],
        "heldout": caption_metrics(...) before and after}`` (``"heldout_before"``,
        ``"heldout"``); with text, ``"reading_before"``/``"reading"`` too
        (:func:`reading_metrics`).
    """
    import math

    import torch

    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"pretrain_tiny_model: steps={steps}, batch_size={batch_size}, lr={lr}; expected "
            "steps >= 1, batch_size >= 1, lr > 0"
        )
    t0 = time.perf_counter()
    before = caption_metrics(model, processor, n=eval_scenes, seed=seed, image_size=image_size)
    reading_before = reading_metrics(model, processor, seed=seed) if text_batch_size else None
    vision, text = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (vision if ".visual." in f".{name}" else text).append(p)
    frozen = vision if vision_lr_scale == 0 else []
    params = text + (vision if vision_lr_scale > 0 else [])
    groups = [{"params": text, "lr": lr}]
    if vision_lr_scale > 0:
        groups.append({"params": vision, "lr": lr * vision_lr_scale})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    log: list[dict[str, float]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="caption pretraining", unit="step")
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for step in range(steps):
                scenes = [
                    pretrain_scene(step * batch_size + i, seed=seed, image_size=image_size)
                    for i in range(batch_size)
                ]
                batch, mask = _caption_batch(processor, scenes)
                loss, _, _ = _caption_loss(model, batch.to(device), mask.to(device))
                if text_batch_size:
                    ids, tmask = _text_batch(processor, seed, step, text_batch_size)
                    loss = loss + _text_loss(model, ids.to(device), tmask.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                log.append({"step": step + 1, "loss": round(float(loss.detach()), 5)})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=log[-1]["loss"])
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(True)
        if bar is not None:
            bar.close()
    after = caption_metrics(model, processor, n=eval_scenes, seed=seed, image_size=image_size)
    tail = log[-max(1, steps // 10) :]
    reading = (
        {"reading_before": reading_before, "reading": reading_metrics(model, processor, seed=seed)}
        if text_batch_size
        else {}
    )
    return {
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "seconds": round(time.perf_counter() - t0, 2),
        "first_loss": log[0]["loss"],
        "last_loss": round(sum(r["loss"] for r in tail) / len(tail), 5),
        "heldout_before": before,
        "heldout": after,
        **reading,
        "text_batch_size": int(text_batch_size),
        "log": log,
    }


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


#: LoRA targets when ``lora`` is a dict without ``target_modules``: the attention and MLP
#: projections of the language model (the vision tower, whose MLP uses the same names, stays
#: frozen). A regex: peft matches it against the full module name.
DEFAULT_LORA_TARGETS = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)


_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}


def _resolve_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        dtype = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if isinstance(resolved, torch.dtype) and resolved.is_floating_point:
        return resolved
    raise ValueError(
        f"dtype={dtype!r}: expected a floating torch.dtype, 'auto', or a name such as "
        "'bfloat16'/'bf16', 'float16'/'fp16', 'float32'"
    )


def _quantization_config(quantization: Any, dtype: Any) -> Any:
    """``BitsAndBytesConfig`` for ``"4bit"`` (NF4, double quantization, bf16 compute) or
    ``"8bit"``; a ready ``BitsAndBytesConfig`` passes through. Needs bitsandbytes and CUDA."""
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if isinstance(quantization, BitsAndBytesConfig):
        config = quantization
    elif quantization in ("4bit", "8bit"):
        config = None
    else:
        raise ValueError(
            f"quantization={quantization!r}: expected None, '4bit', '8bit' or a BitsAndBytesConfig"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"quantization={quantization!r} needs the bitsandbytes package, which is not "
            "installed: `pip install bitsandbytes` (or `pip install 'r1reward[gpu]'`) on a "
            "machine with a CUDA GPU."
        )
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"quantization={quantization!r}: bitsandbytes 4/8-bit layers need a CUDA GPU and "
            "none is visible (torch.cuda.is_available() is False). Load without quantization "
            "on CPU."
        )
    if config is not None:
        return config
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def _lora_config(lora: Any) -> Any:
    from peft import LoraConfig, PeftConfig

    if isinstance(lora, PeftConfig):
        return lora
    if not isinstance(lora, dict):
        raise TypeError(f"lora={lora!r}: expected a dict of LoraConfig fields or a LoraConfig")
    fields = dict(lora)
    fields.setdefault("target_modules", DEFAULT_LORA_TARGETS)
    fields.setdefault("task_type", "CAUSAL_LM")
    try:
        return LoraConfig(**fields)
    except TypeError as err:
        raise TypeError(f"lora={lora!r}: not valid LoraConfig fields ({err})") from err


def resolve_attn_implementation(choice: str | None, dtype: Any) -> str | None:
    """``"auto"`` -> ``"flash_attention_2"`` where it can run (package, CUDA, 16-bit), else None."""
    if choice != "auto":
        return choice
    import importlib.util

    import torch

    if (
        importlib.util.find_spec("flash_attn") is not None
        and torch.cuda.is_available()
        and dtype in (torch.bfloat16, torch.float16)
    ):
        return "flash_attention_2"
    return None


def load_model(
    path_or_hub_id: str | os.PathLike[str],
    *,
    dtype: Any = None,
    device_map: Any = None,
    lora: Any = None,
    quantization: Any = None,
    attn_implementation: str | None = "auto",
    max_pixels: int | None = None,
):
    """Load a Qwen2.5-VL-style model and its processor: ``(model, processor)``.

    The same code loads a folder written by :func:`build_tiny_model`, a fine-tuned folder, or a
    Hub checkpoint such as ``"Qwen/Qwen2.5-VL-7B-Instruct"`` (through
    ``AutoModelForImageTextToText`` and ``AutoProcessor``). A local folder is read with
    ``local_files_only=True``: nothing is downloaded.

    Args:
        dtype: ``torch.dtype``, its name (``"bfloat16"``, ``"bf16"``, ``"float16"``/``"fp16"``,
            ``"float32"``) or ``"auto"``; None keeps transformers' default (float32).
        device_map: passed to ``from_pretrained`` (``"auto"``, ``{"": 0}``, ...).
        lora: a dict of ``peft.LoraConfig`` fields (``target_modules`` defaults to
            :data:`DEFAULT_LORA_TARGETS`, ``task_type`` to ``CAUSAL_LM``) or a ``LoraConfig``;
            the model is wrapped with ``peft.get_peft_model``.
        quantization: ``"4bit"`` (NF4, QLoRA-style), ``"8bit"`` or a ``BitsAndBytesConfig``;
            needs bitsandbytes and CUDA, otherwise raises ``ImportError``/``RuntimeError``
            saying so. With ``lora`` the model is first prepared for k-bit training.
        attn_implementation: ``"auto"`` (default) picks FlashAttention-2 when the
            ``flash_attn`` package is installed, a CUDA GPU is visible and the dtype is 16-bit,
            and transformers' default (SDPA) otherwise; any other value (``"sdpa"``,
            ``"eager"``, ``"flash_attention_2"``) is passed to ``from_pretrained``; None leaves
            the choice to transformers.
        max_pixels: cap on the pixels of one image after the processor's resizing (a larger
            image is downscaled, keeping its aspect ratio); None keeps the processor's setting.

    An adapter folder (``adapter_config.json``, as LoRA/QLoRA training writes) loads its base
    model (``base_model_name_or_path``) and the adapter on top: merged into a plain model unless
    the base is quantized (then a ``PeftModel``, its adapter trainable when ``lora`` is given, so
    RL continues the SFT adapter); with ``lora`` and an unquantized base a fresh adapter is put
    on the merged model. The processor comes from the adapter folder when it holds one.

    Returns:
        ``(model, processor)``; the model is a ``Qwen2_5_VLForConditionalGeneration`` (or a
        ``PeftModel`` around it) and the processor a ``Qwen2_5_VLProcessor``.

    Raises:
        FileNotFoundError: a path that is neither a model folder, an adapter folder nor a Hub id,
            or an adapter whose base model is missing.
    """
    from transformers import AutoModelForImageTextToText

    if is_adapter(path_or_hub_id):
        model, processor = _load_adapter(
            Path(path_or_hub_id).expanduser(), dtype=dtype, device_map=device_map, lora=lora,
            quantization=quantization, attn_implementation=attn_implementation)
        return model, cap_pixels(processor, max_pixels)
    src = check_model_path(path_or_hub_id)
    kwargs: dict[str, Any] = {"local_files_only": True} if Path(src).is_dir() else {}
    dtype = _resolve_dtype(dtype)
    model_kwargs = dict(kwargs)
    if quantization is not None:
        model_kwargs["quantization_config"] = _quantization_config(quantization, dtype)
    if dtype is not None:
        model_kwargs["dtype"] = dtype
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    attn = resolve_attn_implementation(attn_implementation, dtype)
    if attn is not None:
        model_kwargs["attn_implementation"] = attn
    processor = load_processor(src, **kwargs)
    model = AutoModelForImageTextToText.from_pretrained(src, **model_kwargs)
    if lora is not None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        config = _lora_config(lora)
        if quantization is not None:
            model = prepare_model_for_kbit_training(model)
        model = get_peft_model(model, config)
    return model, cap_pixels(processor, max_pixels)


def cap_pixels(processor: Any, max_pixels: int | None) -> Any:
    """Set the image processor's pixel cap (``max_pixels``, ``size["longest_edge"]`` in
    transformers' Qwen2-VL image processor; the floor ``shortest_edge`` is lowered to the cap
    when above it) in place; ``None`` leaves it. Returns ``processor``."""
    if max_pixels is None:
        return processor
    image = getattr(processor, "image_processor", None)
    if image is None:
        raise ValueError(f"model.max_pixels={max_pixels}: the processor has no image processor")
    size, cap = getattr(image, "size", None), int(max_pixels)

    def get(key: str) -> Any:
        return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

    def put(key: str, value: int) -> None:
        if isinstance(size, dict):
            size[key] = value
        else:
            setattr(size, key, value)

    if get("longest_edge") is not None:  # in pixels: the cap, and a floor not above it
        put("longest_edge", cap)
        if (get("shortest_edge") or 0) > cap:
            put("shortest_edge", cap)
    if getattr(image, "max_pixels", None) is not None:
        image.max_pixels = cap
    return processor


# --------------------------------------------------------------------------------------------
# model paths and LoRA/QLoRA adapter folders
# --------------------------------------------------------------------------------------------


def is_adapter(path: str | os.PathLike[str]) -> bool:
    """True for a peft adapter folder (``adapter_config.json`` and no ``config.json``)."""
    local = Path(path).expanduser()
    return (local / "adapter_config.json").is_file() and not (local / "config.json").is_file()


def check_model_path(path_or_hub_id: str | os.PathLike[str]) -> str:
    """The model source to load, checked before any expensive work: a model folder (with
    ``config.json``), an adapter folder, or something shaped like a Hub id (``org/name``).

    Raises:
        FileNotFoundError: a folder without ``config.json`` / ``adapter_config.json``, or a path
            (``./x``, ``/x``, ``~/x``, ``a/b/c``) that does not exist.
    """
    src = str(path_or_hub_id)
    local = Path(src).expanduser()
    if local.is_dir():
        if not ((local / "config.json").is_file() or is_adapter(local)):
            raise FileNotFoundError(
                f"{local}: not a model folder (no config.json) nor an adapter folder "
                "(no adapter_config.json)"
            )
        return str(local)
    if src.startswith((".", "/", "~")) or src.count("/") > 1 or local.exists():
        # looks like a path, not a Hub id ("org/name"): do not send it to the Hub
        raise FileNotFoundError(f"{src}: no such model folder")
    return src


def adapter_base(adapter: str | os.PathLike[str], base_model: str | None = None) -> str:
    """The base model of an adapter folder: ``base_model`` when given, else its
    ``adapter_config.json``'s ``base_model_name_or_path`` (a relative path is tried from the
    working directory, then from the adapter folder).

    Raises:
        FileNotFoundError: the base model is neither a folder nor a Hub id.
    """
    import json

    adapter = Path(adapter).expanduser()
    config_path = adapter / "adapter_config.json"
    base = base_model or json.loads(config_path.read_text()).get("base_model_name_or_path")
    if not base:
        raise FileNotFoundError(f"{config_path}: no base_model_name_or_path; pass the base model")
    if not Path(base).expanduser().is_dir() and (adapter / base).is_dir():
        base = str(adapter / base)
    try:
        return check_model_path(base)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{config_path}: base model {base!r} not found ({exc})") from None


def _has_processor(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))


def _load_adapter(adapter: Path, *, base_model: str | None = None, dtype: Any = None,
                  device_map: Any = None, lora: Any = None, quantization: Any = None,
                  attn_implementation: str | None = "auto"):
    """``(model, processor)`` of an adapter folder on its base (see :func:`load_model`)."""
    from peft import PeftModel

    base = adapter_base(adapter, base_model)
    model, processor = load_model(base, dtype=dtype, device_map=device_map,
                                  quantization=quantization,
                                  attn_implementation=attn_implementation)
    if _has_processor(adapter):
        processor = load_processor(str(adapter), local_files_only=True)
    trainable = lora is not None and quantization is not None
    model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    if quantization is not None:
        return model, processor
    model = model.merge_and_unload()
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(lora))
    return model, processor


def merge_adapter(
    adapter: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    dtype: Any = None,
) -> Path:
    """Merge a LoRA adapter folder into its base model and save a plain model folder.

    ``out`` gets the merged weights (``model.safetensors``), ``config.json`` and the processor
    files (the adapter folder's when it has them, else the base model's); it loads with
    :func:`load_model` like any model folder. The base is loaded unquantized: a QLoRA adapter
    merges into the full-precision base (``dtype``, default the base's float32 load).
    """
    model, processor = _load_adapter(Path(adapter).expanduser(), base_model=base_model,
                                     dtype=dtype)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def merge_main(argv: list[str] | None = None) -> int:
    """``r1reward merge ADAPTER --out DIR [--base PATH] [--dtype bfloat16]``."""
    parser = argparse.ArgumentParser(
        prog="r1reward merge",
        description="Merge a LoRA/QLoRA adapter folder (what LoRA SFT or RL writes) into its base "
        "model and save a plain model folder that eval, serve and rl.init_model load.",
        epilog="example:\n  r1reward merge runs/sft-7b-qlora --out runs/sft-7b-merged --dtype bfloat16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("adapter", help="adapter folder (adapter_config.json + adapter weights)")
    parser.add_argument("--out", required=True, help="folder for the merged model")
    parser.add_argument("--base", default=None,
                        help="base model path or hub id (default: the adapter's base_model_name_or_path)")
    parser.add_argument("--dtype", default=None, help="bfloat16, float16 or float32 (default float32)")
    args = parser.parse_args(argv)
    if not is_adapter(args.adapter):
        print(f"r1reward merge: {args.adapter}: not an adapter folder (no adapter_config.json, or "
              "it is already a full model)", file=sys.stderr)
        return 2
    try:
        base = adapter_base(args.adapter, args.base)
    except FileNotFoundError as exc:
        print(f"r1reward merge: {exc}", file=sys.stderr)
        return 2
    out = merge_adapter(args.adapter, args.out, base_model=base, dtype=args.dtype)
    print(f"{args.adapter} + {base} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``r1reward build-tiny --out DIR [--size tiny|small] [--seed N] [--pretrain-steps N]``."""
    parser = argparse.ArgumentParser(
        prog="r1reward build-tiny",
        description=(
            "Build a tiny, randomly initialised Qwen2.5-VL model folder (real "
            "Qwen2_5_VLForConditionalGeneration, tokenizer trained on the toy corpus, Qwen's "
            "special tokens and chat template, image processor for 56x56 toy images). "
            "Reuses a complete folder built with the same settings."
        ),
    )
    parser.add_argument("--out", required=True, help="folder to write (reused if complete)")
    parser.add_argument(
        "--size",
        default="tiny",
        choices=sorted(SIZES),
        help="tiny: about 0.9M parameters (tests, ci); small: about 3M (cpu profile)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and corpus seed")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="steps of caption pretraining on toy scenes after initialisation (default 0: none)",
    )
    parser.add_argument("--pretrain-lr", type=float, default=3e-3, help="its learning rate")
    parser.add_argument("--pretrain-batch-size", type=int, default=16, help="scenes per step")
    parser.add_argument(
        "--pretrain-text-batch-size",
        type=int,
        default=0,
        help="analysis-shaped texts per step read alongside the captions (default 0: none; the "
        "cpu recipe uses 32)",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = build_tiny_model(
            args.out,
            size=args.size,
            seed=args.seed,
            pretrain_steps=args.pretrain_steps,
            pretrain_lr=args.pretrain_lr,
            pretrain_batch_size=args.pretrain_batch_size,
            pretrain_text_batch_size=args.pretrain_text_batch_size,
        )
    except FileExistsError as err:
        print(f"r1reward build-tiny: {err}", file=sys.stderr)
        return 1
    info = _is_complete(out) or {}
    print(
        f"{out}: {info.get('n_params', 0):,} parameters, size={args.size}, seed={args.seed} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    held = (info.get("pretrain_report") or {}).get("heldout")
    if held:
        print(
            f"caption pretraining, {args.pretrain_steps} steps: held-out caption loss "
            f"{held['loss']:.3f}, token accuracy {held['token_accuracy']:.3f}, fact accuracy "
            f"{held['fact_accuracy']:.3f}"
        )
    reading = (info.get("pretrain_report") or {}).get("reading")
    if reading:
        print(
            f"reading analysis text: first right/wrong {reading['first_mark_accuracy']:.3f} "
            f"(chance 0.5), verdict {reading['verdict_accuracy']:.3f}"
        )
    return 0
