"""`modelgate size memory` arithmetic against hand-computed values for Llama-3-8B and 70B."""

import json
import subprocess
import sys
from dataclasses import fields

import pytest

from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.clients.size.checkpoint_shape import CheckpointShape, CheckpointShapeError
from modelgate.clients.size.memory import GIB, kv_bytes_per_token, parameter_counts, plan, weight_bytes

LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
}
LLAMA3_70B = dict(LLAMA3_8B, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64)


def _config(raw):
    return CheckpointShape.from_dict(raw)


def test_parameter_counts_match_the_published_checkpoints():
    # 8B: embed 128256*4096 twice (untied) + 32 * (q 4096^2 + k,v 2*4096*1024 + o 4096^2 + mlp 3*4096*14336
    # + 2 norms 4096) + final norm 4096.
    by_hand_8b = 2 * 128256 * 4096 + 32 * (2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096) + 4096
    assert by_hand_8b == 8_030_261_248
    assert parameter_counts(_config(LLAMA3_8B)).total == by_hand_8b
    assert parameter_counts(_config(LLAMA3_70B)).total == 70_553_706_496


def test_kv_bytes_per_token():
    # 2 (K and V) * layers * kv heads * head dim * bytes
    assert kv_bytes_per_token(_config(LLAMA3_8B), "bf16") == 2 * 32 * 8 * 128 * 2 == 131072
    # FP8: one byte an element plus a float32 scale per (token, KV head), for K and V, as the engine stores them
    assert kv_bytes_per_token(_config(LLAMA3_8B), "fp8") == 2 * 32 * 8 * (128 + 4) == 67584
    assert kv_bytes_per_token(_config(LLAMA3_70B), "bf16") == 2 * 80 * 8 * 128 * 2 == 327680


def test_weight_bytes_per_precision():
    config = _config(LLAMA3_8B)
    assert weight_bytes(config, "bf16") == 2 * 8_030_261_248
    counts = parameter_counts(config)
    # FP8: linear layers one byte + a float32 scale per output channel; the rest 16-bit.
    channels = 32 * ((4096 + 2 * 1024) + 4096 + 2 * 14336 + 4096)
    assert counts.linear_output_channels == channels
    assert weight_bytes(config, "fp8") == counts.linear + 4 * channels + 2 * counts.other
    assert counts.other == 2 * 128256 * 4096 + 32 * 2 * 4096 + 4096


def test_plan_on_an_80_gib_gpu():
    config = _config(LLAMA3_8B)
    result = plan(config, 80 * GIB, 0.9, "bf16", "bf16", isl=1000, osl=1000, block_size=16)
    budget = int(80 * GIB * 0.9) - 2 * 8_030_261_248
    assert result.kv_budget_bytes == budget
    blocks = budget // (131072 * 16)
    assert result.kv_tokens == blocks * 16
    assert result.concurrent_sequences == blocks // 125  # 2000 tokens = 125 blocks of 16
    seventy = plan(_config(LLAMA3_70B), 80 * GIB, 0.9, "bf16", "bf16", isl=1000, osl=1000)
    assert seventy.kv_tokens == 0 and seventy.concurrent_sequences == 0  # 141 GB of weights do not fit


def test_command_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA3_8B))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelgate",
            "size",
            "memory",
            "--config",
            str(tmp_path),
            "--weights-dtype",
            "fp8",
            "--kv-dtype",
            "fp8",
            "--isl",
            "128",
            "--osl",
            "128",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "8.03 B" in result.stdout and "66.0 KiB" in result.stdout
    assert "concurrent sequences at 256 tokens" in result.stdout


QWEN2_SMALL = {
    "architectures": ["Qwen2ForCausalLM"],
    "vocab_size": 1000,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 3,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
}


def test_the_sizing_reader_agrees_with_the_engines_reader():
    configs = [
        LLAMA3_8B,
        LLAMA3_70B,
        QWEN2_SMALL,
        dict(LLAMA3_8B, attention_bias=True, mlp_bias=True, head_dim=64),
        {**LLAMA3_8B, "architectures": [], "model_type": "mistral", "num_key_value_heads": None},
    ]
    for raw in configs:
        shape, engine = CheckpointShape.from_dict(raw), DecoderConfig.from_dict(raw)
        for field in fields(shape):
            assert getattr(shape, field.name) == getattr(engine, field.name), (raw, field.name)


def test_kv_bytes_agree_with_the_engines_cache():
    from types import SimpleNamespace

    import torch

    from modelgate.backends.llm.model_runner import ModelRunner

    for raw in (LLAMA3_8B, QWEN2_SMALL):
        engine_config = DecoderConfig.from_dict(raw)
        for dtype, name in ((torch.bfloat16, "bf16"), (torch.float8_e4m3fn, "fp8"), (torch.float32, "fp32")):
            runner = SimpleNamespace(model_config=engine_config, kv_cache_dtype=dtype, block_size=16)
            engine_bytes = ModelRunner.kv_bytes_per_block.fget(runner)
            assert engine_bytes == 16 * kv_bytes_per_token(_config(raw), name), (raw, name)


def test_a_config_without_a_needed_number_names_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in LLAMA3_8B.items() if k != "hidden_size"}))
    with pytest.raises(CheckpointShapeError, match="'hidden_size' is missing"):
        CheckpointShape.from_file(tmp_path)
