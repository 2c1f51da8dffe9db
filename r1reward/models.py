"""Load any Qwen2.5-VL-style model + processor by path, and build the tiny one.

One code path from toy to 7B (DESIGN.md): the tiny model is a real
``Qwen2_5_VLForConditionalGeneration`` built from a small config, with a byte-level BPE tokenizer
trained locally with ``tokenizers`` on the toy corpus, Qwen2.5-VL's special tokens and chat
template, and the Qwen2-VL image processor with pixel bounds matching the 56x56 toy images
(16 patches of 14 px, merged 2x2 into 4 visual tokens). It is saved as an ordinary Hugging Face
folder, so ``load_model(folder)`` and ``load_model("Qwen/Qwen2.5-VL-7B-Instruct")`` run the same
code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
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
    "build_tiny_model",
    "load_model",
    "load_processor",
    "tiny_config",
    "main",
]

#: Marker written last into a complete tiny-model folder (a crash never leaves a folder that
#: looks complete).
MARKER = "r1reward_tiny.json"
#: Bump when the folder layout/tokenizer recipe changes, so old cached folders get rebuilt.
BUILD_VERSION = 3

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


def _same_build(path: Path, wanted: dict[str, Any]) -> bool:
    info = _is_complete(path)
    return info is not None and {k: info.get(k) for k in wanted} == wanted


def build_tiny_model(
    path: str | os.PathLike[str],
    *,
    size: str = "tiny",
    seed: int = 0,
    corpus_pairs: int = 500,
) -> Path:
    """Write a tiny, randomly initialised Qwen2.5-VL model folder at ``path`` and return it.

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
    wanted = {"size": size, "seed": seed, "corpus_pairs": corpus_pairs, "version": BUILD_VERSION}
    if size not in SIZES:
        raise ValueError(f"build_tiny_model: size={size!r}; expected one of {sorted(SIZES)}")
    info = _is_complete(path)
    if info is not None:
        if _same_build(path, wanted):
            return path
        keys = ("size", "seed", "corpus_pairs")
        if any(info.get(k) != wanted[k] for k in keys):
            got = {k: info.get(k) for k in keys}
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
        _write_tiny_folder(tmp, size=size, seed=seed, corpus_pairs=corpus_pairs)
        marker = dict(
            wanted,
            n_params=_count_parameters(tmp),
            build_seconds=round(time.perf_counter() - t0, 3),
        )
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


def _write_tiny_folder(tmp: Path, *, size: str, seed: int, corpus_pairs: int) -> None:
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
    model.save_pretrained(tmp)

    processor = _make_processor(hf_tok)
    processor.save_pretrained(tmp)
    _finish_processor_files(tmp)


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


def load_model(
    path_or_hub_id: str | os.PathLike[str],
    *,
    dtype: Any = None,
    device_map: Any = None,
    lora: Any = None,
    quantization: Any = None,
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

    Returns:
        ``(model, processor)``; the model is a ``Qwen2_5_VLForConditionalGeneration`` (or a
        ``PeftModel`` around it) and the processor a ``Qwen2_5_VLProcessor``.
    """
    from transformers import AutoModelForImageTextToText

    src = str(path_or_hub_id)
    local = Path(src).expanduser()
    kwargs: dict[str, Any] = {}
    if local.is_dir():
        src = str(local)
        kwargs["local_files_only"] = True
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local}: not a model folder (no config.json)")
    elif src.startswith((".", "/", "~")) or src.count("/") > 1:
        # looks like a path, not a Hub id ("org/name"): do not send it to the Hub
        raise FileNotFoundError(f"{src}: no such model folder")
    dtype = _resolve_dtype(dtype)
    model_kwargs = dict(kwargs)
    if quantization is not None:
        model_kwargs["quantization_config"] = _quantization_config(quantization, dtype)
    if dtype is not None:
        model_kwargs["dtype"] = dtype
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    processor = load_processor(src, **kwargs)
    model = AutoModelForImageTextToText.from_pretrained(src, **model_kwargs)
    if lora is not None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        config = _lora_config(lora)
        if quantization is not None:
            model = prepare_model_for_kbit_training(model)
        model = get_peft_model(model, config)
    return model, processor


def main(argv: list[str] | None = None) -> int:
    """``r1reward build-tiny --out DIR [--size tiny|small] [--seed N]``."""
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
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = build_tiny_model(args.out, size=args.size, seed=args.seed)
    except FileExistsError as err:
        print(f"r1reward build-tiny: {err}", file=sys.stderr)
        return 1
    info = _is_complete(out) or {}
    print(
        f"{out}: {info.get('n_params', 0):,} parameters, size={args.size}, seed={args.seed} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0
