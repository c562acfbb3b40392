"""The PyTorch backend's pieces on their own: dtypes, batch planning, input and output binding."""

import ml_dtypes
import numpy as np
import pytest
import torch
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.pytorch.input_binding import bind_inputs
from modelgate.backends.pytorch.loaded_module import ModuleArgument
from modelgate.backends.pytorch.output_binding import OutputBinding
from modelgate.backends.pytorch.request_batch import plan_batches
from modelgate.backends.pytorch.tensor_dtypes import is_lossless, to_numpy, to_torch
from modelgate.core.errors import ConfigError, ModelExecutionError
from modelgate.core.inference_types import InferRequest, InferTensor


@pytest.mark.parametrize(
    "source, target, expected",
    [
        (torch.float16, torch.float32, True),
        (torch.bfloat16, torch.float32, True),
        (torch.float32, torch.float16, False),
        (torch.float16, torch.bfloat16, False),
        (torch.bfloat16, torch.float16, False),
        (torch.int32, torch.int64, True),
        (torch.int64, torch.int32, False),
        (torch.uint8, torch.int16, True),
        (torch.int8, torch.uint8, False),
        (torch.uint64, torch.int64, False),
        (torch.int16, torch.float32, True),
        (torch.int32, torch.float32, False),
        (torch.int32, torch.float64, True),
        (torch.bool, torch.float16, True),
        (torch.float32, torch.int64, False),
        (torch.int8, torch.bool, False),
    ],
)
def test_lossless_casts(source, target, expected):
    assert is_lossless(source, target) is expected


def test_bf16_crosses_between_numpy_and_torch_bit_for_bit():
    array = np.array([1.5, -3.0e38, np.inf, 0.1], ml_dtypes.bfloat16)
    tensor = to_torch(array)
    assert tensor.dtype == torch.bfloat16 and tensor[0].item() == 1.5
    back = to_numpy(tensor * 1)
    assert back.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(back.view(np.uint16), array.view(np.uint16))


def test_read_only_arrays_are_copied_not_aliased():
    array = np.arange(4, dtype=np.float32)
    array.flags.writeable = False
    to_torch(array).add_(1)
    np.testing.assert_array_equal(array, [0, 1, 2, 3])


def _request(**inputs) -> InferRequest:
    return InferRequest("m", inputs={n: InferTensor(n, "FP32", a.shape, a) for n, a in inputs.items()})


def test_requests_of_one_layout_run_as_one_call_and_split_back():
    requests = [_request(X=np.full((n, 2), n, np.float32)) for n in (1, 3, 2)]
    (batch,) = plan_batches(requests, is_batched=True)
    joined = np.concatenate(batch.input_parts()["X"])
    assert batch.row_counts == [1, 3, 2] and joined.shape == (6, 2)
    parts = batch.split(joined * 10)
    assert [p.tolist() for p in parts] == [[[10, 10]], [[30, 30]] * 3, [[20, 20]] * 2]


def test_ragged_requests_and_unbatched_models_run_one_by_one():
    ragged = [_request(X=np.ones((1, 2), np.float32)), _request(X=np.ones((1, 3), np.float32))]
    assert [len(b.requests) for b in plan_batches(ragged, is_batched=True)] == [1, 1]
    same = [_request(X=np.ones((2, 2), np.float32)) for _ in range(2)]
    assert [b.row_counts for b in plan_batches(same, is_batched=False)] == [[1], [1]]


def _config(inputs=(), outputs=()) -> ModelConfig:
    config = ModelConfig(name="m")
    for name in inputs:
        config.input.add(name=name)
    for name in outputs:
        config.output.add(name=name)
    return config


ARGUMENTS = [ModuleArgument("a", False), ModuleArgument("b", False), ModuleArgument("c", True)]


def test_inputs_bind_by_argument_name_else_by_index():
    assert bind_inputs(_config(["b", "a"]), ARGUMENTS, "s").argument_of == {"b": "b", "a": "a"}
    assert bind_inputs(_config(["IN__1", "IN__0"]), ARGUMENTS, "s").argument_of == {"IN__1": "b", "IN__0": "a"}
    with pytest.raises(ConfigError, match="'x' is neither a forward"):
        bind_inputs(_config(["a", "x"]), ARGUMENTS, "s")
    with pytest.raises(ConfigError, match="'a' is a forward\\(\\) argument, but other inputs are not"):
        bind_inputs(_config(["a", "IN__1"]), ARGUMENTS, "s")
    with pytest.raises(ConfigError, match="feeds argument 0 a second time"):
        bind_inputs(_config(["IN__0", "X__0"]), ARGUMENTS, "s")
    with pytest.raises(ConfigError, match="forward\\(\\) also needs b"):
        bind_inputs(_config(["a"]), ARGUMENTS, "s")


def test_outputs_take_tuple_elements_by_index_else_by_position_and_dicts_by_key():
    pair = (torch.zeros(1), torch.ones(1))
    indexed = OutputBinding(_config(outputs=["OUTPUT__1", "OUTPUT__0"]))
    assert indexed.select(pair, ["OUTPUT__1"])["OUTPUT__1"] is pair[1]
    positional = OutputBinding(_config(outputs=["second", "first"]))
    assert positional.select(pair, ["first"])["first"] is pair[1]
    assert positional.select({"first": pair[0]}, ["first"])["first"] is pair[0]
    with pytest.raises(ModelExecutionError, match="returned dict has keys \\['other'\\]"):
        positional.select({"other": pair[0]}, ["first"])
    with pytest.raises(ModelExecutionError, match="forward\\(\\) returned 1 value"):
        positional.select(pair[0], ["first"])
