"""PyTorch models through the running server (HTTP and gRPC) answer as the module called directly."""

import ml_dtypes
import numpy as np
import torch

from modelgate.backends.pytorch.tensor_dtypes import to_numpy, to_torch

BF16 = np.dtype(ml_dtypes.bfloat16)


def _direct(module, *arrays) -> object:
    with torch.inference_mode():
        return module(*(to_torch(a) for a in arrays))


def test_indexed_inputs_and_tuple_outputs(caller, torch_server):
    a = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    b = np.array([[0.5, 0.25, 8], [1, 1, 1]], np.float32)
    got = caller.infer("add_sub", {"INPUT__0": a, "INPUT__1": b})
    plus, minus = _direct(torch_server.modules["add_sub"], a, b)
    # OUTPUT__1 is declared first: outputs map by their index, not their position in the config.
    np.testing.assert_array_equal(got["OUTPUT__0"], plus.numpy())
    np.testing.assert_array_equal(got["OUTPUT__1"], minus.numpy())


def test_named_inputs_and_dict_outputs(caller, torch_server):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    scale = np.array([1.5], np.float32)
    got = caller.infer("scale_total", {"x": x, "scale": scale})
    expected = _direct(torch_server.modules["scale_total"], x, scale)
    assert set(got) == {"scaled", "total"}
    np.testing.assert_array_equal(got["scaled"], expected["scaled"].numpy())
    np.testing.assert_array_equal(got["total"], expected["total"].numpy())


def test_only_the_requested_outputs_come_back(caller):
    x = np.ones((2, 3), np.float32)
    got = caller.infer("scale_total", {"x": x, "scale": np.array([2.0], np.float32)}, outputs=["total"])
    assert list(got) == ["total"]
    np.testing.assert_array_equal(got["total"], [[3.0], [3.0]])  # x.sum(1), unscaled


def test_fp16_bf16_int64_and_a_lossless_widening(caller, torch_server):
    half = np.array([[1.5, -2.0], [65504.0 / 4, 0.1]], np.float16)
    brain = np.array([[1.5, -3.0e38 / 4], [0.1, 7.0]], BF16)
    count = np.array([[2**40, -1], [0, 7]], np.int64)
    got = caller.infer("mixed_types", {"half": half, "brain": brain, "count": count})
    expected = {k: to_numpy(v) for k, v in _direct(torch_server.modules["mixed_types"], half, brain, count).items()}
    assert got["half"].dtype == np.float16 and got["brain"].dtype == BF16 and got["count"].dtype == np.int64
    np.testing.assert_array_equal(got["half"], expected["half"])
    np.testing.assert_array_equal(got["brain"].view(np.uint16), expected["brain"].view(np.uint16))
    np.testing.assert_array_equal(got["count"], expected["count"])
    assert got["widened"].dtype == np.float32  # the module returns FP16; FP16 -> FP32 loses nothing
    np.testing.assert_array_equal(got["widened"], expected["widened"].astype(np.float32))


def test_exported_program_with_named_inputs_and_dict_outputs(caller, torch_server):
    tokens = np.array([[1, 0, 3, 0, 5], [0, 0, 0, 0, 9], [2, 2, 2, 2, 2]], np.int64)
    weight = np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5)
    got = caller.infer("token_weights", {"tokens": tokens, "weight": weight})
    expected = torch_server.modules["token_weights"].module()(torch.from_numpy(tokens), torch.from_numpy(weight))
    np.testing.assert_array_equal(got["weighted"], expected["weighted"].numpy())
    # `count` is [batch] in the program; its auto-completed config shows it as dims [1] (reshape []).
    np.testing.assert_array_equal(got["count"], expected["count"].numpy().reshape(3, 1))


def test_exported_program_with_indexed_names(caller, torch_server):
    x = np.array([[1, 2, 3], [-1, 0, 4]], np.float32)
    got = caller.infer("exported_indexed", {"INPUT__0": x})
    doubled, total = torch_server.modules["exported_indexed"].module()(torch.from_numpy(x))
    np.testing.assert_array_equal(got["OUTPUT__0"], doubled.numpy())
    np.testing.assert_array_equal(got["OUTPUT__1"], total.numpy())


def test_exported_program_without_batch_dimension(caller, torch_server):
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    got = caller.infer("static_double", {"x": x})
    doubled, total = torch_server.modules["static_double"].module()(torch.from_numpy(x))
    np.testing.assert_array_equal(got["OUTPUT__0"], doubled.numpy())
    np.testing.assert_array_equal(got["OUTPUT__1"], total.numpy())


def test_the_example_torchscript_model(caller):
    from modelgate.clients.examples.make_torchscript_example import make_module

    x = np.array([[1, -2, 3, 0.5], [0, 0, 0, 0], [-1, 4, 2, 2]], np.float32)
    got = caller.infer("simple_torchscript", {"INPUT__0": x})
    with torch.inference_mode():
        expected = make_module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got["OUTPUT__0"], expected, rtol=1e-6, atol=1e-7)
