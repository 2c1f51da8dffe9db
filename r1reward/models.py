"""Load any Qwen2.5-VL-style model, processor or LoRA/QLoRA adapter by path.

One code path from toy to 7B: ``load_model(folder)`` reads the tiny model that
``r1reward build-tiny`` writes, a fine-tuned folder, an adapter folder or a Hub checkpoint such as
``"Qwen/Qwen2.5-VL-7B-Instruct"`` with the same code. Nothing here knows the toy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "adapter_base",
    "cap_pixels",
    "check_model_path",
    "is_adapter",
    "load_model",
    "load_processor",
    "merge_adapter",
    "merge_main",
    "processor_without_video",
    "resolve_attn_implementation",
    "torchvision_available",
]


def processor_without_video(processor_cls: type) -> type:
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


def torchvision_available() -> bool:
    """Whether transformers can use torchvision (its video processors need it)."""
    from transformers.utils import is_torchvision_available

    return is_torchvision_available()


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
    :func:`processor_without_video`); ``kwargs`` go to ``from_pretrained``.

    With torchvision installed this is exactly ``AutoProcessor.from_pretrained``.
    """
    import transformers
    from transformers import AutoProcessor

    src = str(path_or_hub_id)
    if torchvision_available():
        return AutoProcessor.from_pretrained(src, **kwargs)
    name = _processor_class_name(src, **kwargs)
    cls = getattr(transformers, name, None) if name else None
    if not isinstance(cls, type) or "video_processor" not in cls.get_attributes():
        return AutoProcessor.from_pretrained(src, **kwargs)
    return processor_without_video(cls).from_pretrained(src, **kwargs)


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
            Path(path_or_hub_id).expanduser(),
            dtype=dtype,
            device_map=device_map,
            lora=lora,
            quantization=quantization,
            attn_implementation=attn_implementation,
        )
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


def _load_adapter(
    adapter: Path,
    *,
    base_model: str | None = None,
    dtype: Any = None,
    device_map: Any = None,
    lora: Any = None,
    quantization: Any = None,
    attn_implementation: str | None = "auto",
):
    """``(model, processor)`` of an adapter folder on its base (see :func:`load_model`)."""
    from peft import PeftModel

    base = adapter_base(adapter, base_model)
    model, processor = load_model(
        base,
        dtype=dtype,
        device_map=device_map,
        quantization=quantization,
        attn_implementation=attn_implementation,
    )
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
    model, processor = _load_adapter(Path(adapter).expanduser(), base_model=base_model, dtype=dtype)
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
    parser.add_argument(
        "--base",
        default=None,
        help="base model path or hub id (default: the adapter's base_model_name_or_path)",
    )
    parser.add_argument(
        "--dtype", default=None, help="bfloat16, float16 or float32 (default float32)"
    )
    args = parser.parse_args(argv)
    if not is_adapter(args.adapter):
        print(
            f"r1reward merge: {args.adapter}: not an adapter folder (no adapter_config.json, or "
            "it is already a full model)",
            file=sys.stderr,
        )
        return 2
    try:
        base = adapter_base(args.adapter, args.base)
    except FileNotFoundError as exc:
        print(f"r1reward merge: {exc}", file=sys.stderr)
        return 2
    out = merge_adapter(args.adapter, args.out, base_model=base, dtype=args.dtype)
    print(f"{args.adapter} + {base} -> {out}")
    return 0
