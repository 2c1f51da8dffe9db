"""vLLM rollout engine: :func:`r1reward.rollout.generate`'s contract on a colocated ``vllm.LLM``.

Rollouts dominate the wall clock of R1-Reward's RL (Sec. 3.2: long ``<think>`` analyses sampled
for every prompt of every step). vLLM's paged KV cache and continuous batching sample them far
faster than transformers ``generate``; this module keeps everything else identical:

- the same prompts: each conversation is rendered with the processor's chat template (the
  ``<|vision_start|><|image_pad|><|vision_end|>`` placeholders stay unexpanded) and its PIL images
  go to vLLM through ``multi_modal_data={"image": [...]}``, so vLLM's own Qwen2.5-VL processor
  expands them to the same number of visual tokens as the transformers path;
- the same records: ``list[list[Completion]]`` with ``token_ids`` that end with the stop token
  when ``finish == "stop"``, text decoded by *our* tokenizer (``skip_special_tokens=True``), and
  greedy decoding returning ``num_return_sequences`` copies of one completion;
- the same neutral sampling: temperature and top-p only (no top-k, no repetition penalty, the
  checkpoint's ``generation_config`` ignored), so samples come from the policy that
  ``completion_logprobs`` scores;
- seeds per request: prompt ``i`` of a call seeded with ``seed`` is sampled with
  ``SamplingParams(seed=batch_seed(seed, i))``, so a call is reproducible and independent of how
  vLLM schedules the batch. vLLM's random streams differ from torch's, so sampled tokens are not
  those of the transformers engine; greedy decoding is what the two share (see the parity test).

**Colocated**: one ``vllm.LLM`` per training process, in the same process
(``distributed_executor_backend="external_launcher"``, tensor parallel 1), built on first use from
the policy's ``name_or_path`` and cached. **Weight sync**: before sampling, the policy's current
weights are pushed into vLLM's model with its ``load_weights`` -- for a peft model the adapter is
merged (``merge_adapter``), the merged base weights are sent under their original names, and the
adapter is unmerged again; DeepSpeed ZeRO-3 parameters are gathered, FSDP2 ``DTensor`` shards
materialised with ``full_tensor()``. A sync happens on the first call and whenever an optimizer
step has changed a trainable parameter since the last sync (tracked through the parameters'
in-place version counters); under ZeRO-3 / FSDP, where those counters do not see the sharded
update, every call syncs. :func:`sync_weights` forces one.

Honest status: **not run in this repository's CI** (vLLM needs CUDA; the build machine has no
GPU). Written against the vLLM 0.2x offline API (``vllm.LLM``, ``vllm.SamplingParams`` with
per-request ``seed``, ``RequestOutput.outputs[j].token_ids/finish_reason/stop_reason``,
``LLM.reset_prefix_cache``, the in-process worker model at
``llm.llm_engine.model_executor.driver_worker.model_runner.model``), the range that TRL 1.16 --
installed here -- supports (0.22 to 0.31) and uses the same way for its colocated mode. The CPU
tests drive this module with a stand-in ``vllm`` package backed by the transformers model; the
GPU parity test in ``tests/test_rollout_vllm.py`` is skipped where vLLM or CUDA is absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from r1reward.completion import Completion, batch_seed, split_row, tokenizer_of, visuals
from r1reward.completion import stop_token_ids as _stop_token_ids

__all__ = [
    "TARGET_VLLM",
    "available",
    "configure",
    "engine_for",
    "generate",
    "named_weights",
    "sync_weights",
    "reset",
]

#: The vLLM API this module is written against (not exercised in CI).
TARGET_VLLM = "0.22-0.31"

#: Keyword arguments of ``vllm.LLM``; change them with :func:`configure` before the first call.
#: ``gpu_memory_utilization`` is the share of the GPU vLLM takes for weights + KV cache, colocated
#: with the training state, so it is kept low.
ENGINE_OPTIONS: dict[str, Any] = {
    "gpu_memory_utilization": float(os.environ.get("R1REWARD_VLLM_GPU_MEMORY_UTILIZATION", 0.3)),
    "max_model_len": int(os.environ.get("R1REWARD_VLLM_MAX_MODEL_LEN", 8192)),
    "limit_mm_per_prompt": {"image": 4, "video": 1},
    "enable_prefix_caching": True,
    "generation_config": "vllm",  # ignore the checkpoint's sampling defaults
}

_ENGINES: dict[int, dict[str, Any]] = {}  # id(policy) -> {"llm", "version"}


def available() -> bool:
    """Whether the ``vllm`` package can be imported here."""
    return importlib.util.find_spec("vllm") is not None


def configure(**options: Any) -> dict[str, Any]:
    """Update the ``vllm.LLM`` arguments used for engines built from now on; returns them all."""
    ENGINE_OPTIONS.update(options)
    return dict(ENGINE_OPTIONS)


def reset() -> None:
    """Forget every cached engine (the next call builds a new ``vllm.LLM``)."""
    _ENGINES.clear()


# --------------------------------------------------------------------------------------------
# the policy as vLLM sees it
# --------------------------------------------------------------------------------------------


def _unwrap(model: Any) -> Any:
    """Strip DDP / DeepSpeed-engine / torch.compile wrappers (accelerate's
    ``extract_model_from_parallel``), keep peft and FSDP2 modules, so parameter names are the
    model's own (a DeepSpeed engine would prefix them with ``module.``)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_torch_compile=False)


def _is_peft(model: Any) -> bool:
    return hasattr(model, "merge_adapter") and hasattr(model, "peft_config")


def _is_sharded(model: Any) -> bool:
    """ZeRO-3 (parameters carry ``ds_id``) or FSDP2 (``DTensor`` parameters)."""
    p = next(iter(model.parameters()), None)
    if p is None:
        return False
    return hasattr(p, "ds_id") or "DTensor" in (type(p).__name__, type(p.data).__name__)


@contextlib.contextmanager
def _gathered(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Gather ZeRO-3 partitioned parameters for the block (a no-op otherwise)."""
    if params and hasattr(params[0], "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def named_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every weight vLLM needs, under the Hugging Face checkpoint names.

    For a peft model the adapter is merged into the base weights for the duration of the
    iteration (then unmerged), and the names are the base model's: ``base_model.model.`` and
    ``.base_layer`` removed, adapter tensors (``lora_A``/``lora_B``) skipped. ZeRO-3 parameters
    are gathered, FSDP2 shards materialised. Tensors are yielded detached, as stored (bf16 for a
    bf16 policy); consume each before asking for the next (they may be freed on gather exit).
    """
    model = _unwrap(model)
    if _is_peft(model):
        params = list(model.parameters())
        with _gathered(params):
            model.merge_adapter()
            try:
                for name, p in model.named_parameters():
                    if "lora_" in name or "original_module" in name:
                        continue
                    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
                    name = name.replace("modules_to_save.default.", "")
                    yield name, _full(p.detach())
            finally:
                model.unmerge_adapter()
        return
    for name, p in model.named_parameters():
        with _gathered([p]):
            yield name.replace("_checkpoint_wrapped_module.", ""), _full(p.detach())


def _weights_version(model: Any) -> tuple[int, ...] | None:
    """In-place version counters of the trainable parameters (bumped by every optimizer step);
    ``None`` when they cannot be trusted (sharded parameters), meaning "always sync"."""
    model = _unwrap(model)
    if _is_sharded(model):
        return None
    return tuple(p._version for p in model.parameters() if p.requires_grad)


def _worker_model(llm: Any) -> Any:
    """vLLM's model object inside a colocated (in-process) engine."""
    try:
        return llm.llm_engine.model_executor.driver_worker.model_runner.model
    except AttributeError as err:
        raise RuntimeError(
            "rollout_vllm: cannot reach vLLM's in-process model "
            "(llm.llm_engine.model_executor.driver_worker.model_runner.model); this module is "
            f"written against vLLM {TARGET_VLLM} with distributed_executor_backend="
            "'external_launcher'. Use engine='transformers' with this vLLM version."
        ) from err


def sync_weights(model: Any, llm: Any | None = None) -> int:
    """Push the policy's current weights (LoRA merged) into its vLLM engine; returns the count.

    ``llm`` defaults to the engine cached for ``model`` (built if needed). Every process of a
    ZeRO-3 run must call it (gathering is collective).
    """
    if llm is None:
        llm = engine_for(model)
    target = _worker_model(llm)
    n = 0
    for name, tensor in named_weights(model):
        target.load_weights([(name, tensor)])
        n += 1
    if hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
    state = _ENGINES.get(id(_unwrap(model)))
    if state is not None and state["llm"] is llm:
        state["version"] = _weights_version(model)
    return n


def _dtype_name(model: Any) -> str:
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32")


def _model_path(model: Any) -> str:
    base = model.get_base_model() if _is_peft(model) else model
    path = getattr(base, "name_or_path", None) or getattr(base.config, "_name_or_path", None)
    if not path:
        raise ValueError(
            "rollout_vllm: the policy has no name_or_path; vLLM builds its engine from the model "
            "folder or hub id the policy was loaded from (r1reward.models.load_model sets it)"
        )
    return str(path)


def _distributed_env() -> dict[str, str]:
    """The torch.distributed variables that vLLM's external launcher reads, defaulting to a
    single process when the trainer was not started by torchrun / accelerate launch."""
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for key, value in env.items():
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    return {k: os.environ[k] for k in (*env, "MASTER_PORT")}


def engine_for(model: Any) -> Any:
    """The colocated ``vllm.LLM`` serving ``model``: built on first use, then cached.

    Raises:
        ImportError: vLLM is not installed.
        NotImplementedError: a bitsandbytes 4/8-bit policy (QLoRA): vLLM would need the merged
            adapter in quantized form; use ``engine="transformers"`` for QLoRA recipes.
    """
    model = _unwrap(model)
    state = _ENGINES.get(id(model))
    if state is not None:
        return state["llm"]
    base = model.get_base_model() if _is_peft(model) else model
    if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
        raise NotImplementedError(
            "rollout engine 'vllm' with a bitsandbytes-quantized policy (QLoRA) is not supported: "
            "the merged LoRA weights cannot be pushed into vLLM's quantized layers. Use "
            "engine='transformers' (the QLoRA recipe does)."
        )
    import vllm

    env = _distributed_env()
    llm = vllm.LLM(
        model=_model_path(model),
        dtype=_dtype_name(model),
        tensor_parallel_size=1,
        distributed_executor_backend="external_launcher",
        seed=int(env["RANK"]),
        **ENGINE_OPTIONS,
    )
    _ENGINES[id(model)] = {"llm": llm, "version": "never-synced"}
    return llm


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------


def _request(processor: Any, conversation: list[dict], index: int) -> dict[str, Any]:
    """One vLLM prompt: the chat-templated text and the conversation's images."""
    images, videos = visuals(conversation, index)
    text = processor.apply_chat_template([conversation], tokenize=False, add_generation_prompt=True)
    text = text[0] if isinstance(text, list) else text
    request: dict[str, Any] = {"prompt": text}
    data: dict[str, Any] = {}
    if images:
        data["image"] = [img.convert("RGB") if hasattr(img, "convert") else img for img in images]
    if videos:
        data["video"] = list(videos)
    if data:
        request["multi_modal_data"] = data
    return request


def _completion_ids(out: Any, stops: list[int], stop_set: set[int]) -> tuple[list[int], str]:
    """Token ids of one vLLM output in :class:`Completion`'s convention (stop token kept)."""
    ids = list(out.token_ids)
    reason = getattr(out, "stop_reason", None)
    if (
        getattr(out, "finish_reason", None) == "stop"
        and (not ids or ids[-1] not in stop_set)
        and isinstance(reason, int)
        and reason in stop_set
    ):
        ids.append(reason)  # a vLLM version that leaves the stop token out of token_ids
    return split_row(ids, stop_set, None)


def generate(
    model: Any,
    processor: Any,
    conversations: Sequence[list[dict]],
    *,
    num_return_sequences: int = 1,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int | None = None,
    progress: bool = False,
) -> list[list[Completion]]:
    """:func:`r1reward.rollout.generate` on the policy's colocated vLLM engine.

    Arguments and return value as there (validated by the caller). ``batch_size`` is not used:
    vLLM schedules all requests of the call itself (continuous batching); seeds are per
    request, so results do not depend on that schedule.
    """
    import vllm

    policy = _unwrap(model)
    llm = engine_for(policy)
    state = _ENGINES[id(policy)]
    version = _weights_version(policy)
    if version is None or state["version"] != version:
        sync_weights(policy, llm)
    tok = tokenizer_of(processor)
    stops = _stop_token_ids(processor)
    stop_set = set(stops)
    k = num_return_sequences
    greedy = (not do_sample) or temperature == 0
    requests, params = [], []
    for i, conv in enumerate(conversations):
        requests.append(_request(processor, conv, i))
        params.append(
            vllm.SamplingParams(
                n=1 if greedy else k,
                temperature=0.0 if greedy else float(temperature),
                top_p=1.0 if greedy else float(top_p),
                top_k=-1,
                min_p=0.0,
                repetition_penalty=1.0,
                presence_penalty=0.0,
                frequency_penalty=0.0,
                max_tokens=int(max_new_tokens),
                stop_token_ids=list(stops),
                seed=None if seed is None else batch_seed(seed, i),
                skip_special_tokens=True,
            )
        )
    outputs = llm.generate(requests, params, use_tqdm=progress)
    results: list[list[Completion]] = []
    for i, request_out in enumerate(outputs):
        group = []
        for out in request_out.outputs:
            ids, finish = _completion_ids(out, stops, stop_set)
            text = tok.decode(ids, skip_special_tokens=True)
            group += [Completion(text, list(ids), i, finish) for _ in range(k if greedy else 1)]
        results.append(group[:k])
    if len(results) != len(conversations):
        raise RuntimeError(
            f"vLLM returned {len(results)} outputs for {len(conversations)} conversations"
        )
    return results
