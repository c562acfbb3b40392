"""The memory probe: zeros of the largest batch for tensor models, nothing for the others."""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.server.memory.memory_probe import probe_request


def _config(text: str) -> ModelConfig:
    return text_format.Parse(text, ModelConfig())


def test_a_batching_model_is_probed_at_its_largest_batch_with_variable_dims_at_one():
    config = _config(
        'name: "r" backend: "pytorch" max_batch_size: 64 '
        'input { name: "IMAGE" data_type: TYPE_FP32 dims: [3, -1, 224] } '
        'input { name: "IDS" data_type: TYPE_INT64 dims: [4] }'
    )
    request = probe_request(config)
    assert request.inputs["IMAGE"].shape == (64, 3, 1, 224) and request.inputs["IMAGE"].data.dtype.name == "float32"
    assert request.inputs["IDS"].data.shape == (64, 4) and not request.inputs["IDS"].data.any()


def test_a_model_without_batching_is_probed_at_its_shape():
    request = probe_request(
        _config('name: "o" backend: "onnxruntime" input { name: "X" data_type: TYPE_FP16 dims: [2, 8] }')
    )
    assert request.inputs["X"].shape == (2, 8)


def test_models_whose_inputs_cannot_be_made_up_or_whose_code_may_do_anything_are_not_probed():
    strings = 'name: "s" backend: "pytorch" input { name: "T" data_type: TYPE_STRING dims: [1] }'
    python = 'name: "p" backend: "python" input { name: "X" data_type: TYPE_FP32 dims: [1] }'
    decoupled = (
        'name: "d" backend: "pytorch" model_transaction_policy { decoupled: true } '
        'input { name: "X" data_type: TYPE_FP32 dims: [1] }'
    )
    assert [probe_request(_config(text)) for text in (strings, python, decoupled)] == [None, None, None]
