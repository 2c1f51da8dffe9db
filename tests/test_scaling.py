"""The paper-side figures of the scaling chapter: exact sizes from configs, memory estimates."""

from __future__ import annotations

import pytest

from r1reward.scaling import (
    count_parameters,
    estimate_training_memory,
    kv_cache_bytes_per_token,
    qwen25_vl_config,
)


@pytest.fixture(scope="module")
def seven_b():
    config = qwen25_vl_config("7b")
    return config, count_parameters(config)


def test_parameter_counts_match_published_sizes(seven_b):
    config, counts = seven_b
    # Qwen2.5-VL-7B-Instruct is published as 8.29B parameters, 3B as 3.75B.
    assert 8.25e9 < counts.total < 8.35e9
    three = count_parameters(qwen25_vl_config("3b"))
    assert 3.7e9 < three.total < 3.8e9
    assert 0 < counts.vision < counts.total
    assert counts.decoder_linear + counts.embeddings + counts.vision < counts.total * 1.001


def test_memory_model_orders(seven_b):
    config, counts = seven_b
    lora = estimate_training_memory(counts, config, mode="lora")
    qlora = estimate_training_memory(counts, config, mode="qlora")
    full1 = estimate_training_memory(counts, config, mode="full", gpus=1)
    full8 = estimate_training_memory(counts, config, mode="full", gpus=8)
    assert qlora.weights < lora.weights == pytest.approx(full1.weights)
    assert full1.total > lora.total > qlora.total
    # 16 bytes per parameter unsharded: > 120 GiB for 8.3B params on one GPU.
    assert full1.weights + full1.grads_and_optimizer == pytest.approx(16 * counts.total / 2**30)
    assert full8.grads_and_optimizer == pytest.approx(full1.grads_and_optimizer / 8)
    assert qlora.total < 24  # the QLoRA recipe is meant for a 24 GB card
    no_ckpt = estimate_training_memory(counts, config, mode="lora", gradient_checkpointing=False)
    assert no_ckpt.activations > lora.activations


def test_kv_cache_per_token(seven_b):
    config, _ = seven_b
    # 28 layers x 4 kv heads x 128 head dim x (k and v) x 2 bytes
    assert kv_cache_bytes_per_token(config) == 28 * 4 * 128 * 2 * 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown size"):
        qwen25_vl_config("13b")
    config = qwen25_vl_config("3b")
    with pytest.raises(ValueError, match="mode must be"):
        estimate_training_memory(count_parameters(config), config, mode="zero9")
