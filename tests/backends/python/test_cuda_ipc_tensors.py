"""GPU tensors across the stub boundary: the wire decisions, checked without a GPU.

A stand-in for a torch CUDA tensor (`FakeCudaTensor`) hands out fixed IPC fields, so what goes into the frame,
and what a receiver without CUDA says, can be checked on any machine. The real round trips are in
test_cuda_tensors_in_stubs.py (marked gpu).
"""

import numpy as np
import pytest
import torch
from tritonclient.grpc.model_config_pb2 import ModelConfig

import modelgate.backends.python.triton_python_backend_utils as pb_utils
from modelgate.backends.python import cuda_ipc_tensors
from modelgate.backends.python.cuda_ipc_tensors import CudaIpcTensor
from modelgate.backends.python.request_conversion import from_pb_request_for_bls, from_pb_response
from modelgate.backends.python.stub_messages import (
    BlsCall,
    WireTensor,
    decode_from_stub,
    encode,
    infer_request,
    infer_tensor,
    wire_request,
    wire_tensor,
)
from modelgate.core.errors import UnsupportedError
from modelgate.core.inference_types import InferRequest, InferTensor, RequestedOutput
from modelgate.core.tensors.device_tensors import as_host_array, inputs_to_host, is_device_tensor, takes_device_inputs

SHARED_FIELDS = (1, b"\x01" * 64, 4096, 512, b"/torch_1_2_3", 7, b"\x02" * 64, True)


class FakeStorage:
    def _share_cuda_(self):
        return SHARED_FIELDS


class FakeCudaTensor:
    """What the wire code asks of a torch CUDA tensor; the host copy is a real CPU tensor."""

    is_cuda = True

    def __init__(self, values: torch.Tensor):
        self.host = values
        self.dtype = values.dtype
        self.shape = values.shape
        self.device = _Device(1)

    def detach(self):
        return self

    def contiguous(self):
        return self

    def numel(self):
        return self.host.numel()

    def untyped_storage(self):
        return FakeStorage()

    def storage_offset(self):
        return 3

    def cpu(self):
        return self.host


class _Device:
    def __init__(self, index: int):
        self.index = index


def _fake(values=(1.0, 2.0)) -> FakeCudaTensor:
    return FakeCudaTensor(torch.tensor(values, dtype=torch.float32))


def test_host_tensors_travel_as_bytes_and_cuda_ones_as_an_ipc_handle():
    host = wire_tensor(InferTensor("X", "FP32", (2,), np.array([1, 2], dtype=np.float32)))
    assert host.cuda is None and bytes(host.data) == np.array([1, 2], dtype=np.float32).tobytes()
    device = wire_tensor(InferTensor("X", "FP32", (2,), _fake()))
    assert bytes(device.data) == b"" and device.shm_name == ""
    assert device.cuda == CudaIpcTensor(*SHARED_FIELDS, "float32", (2,), 3)


def test_a_cuda_tensor_is_never_written_to_shared_memory(tmp_path):
    big = FakeCudaTensor(torch.zeros(1, dtype=torch.float32))
    big.shape = (64 << 20,)  # would be shared memory's if it were a numpy array
    big.nbytes = 256 << 20
    wire = wire_tensor(InferTensor("X", "FP32", big.shape, big), folder=tmp_path)
    assert wire.cuda is not None and wire.shm_name == "" and not list(tmp_path.iterdir())


def test_the_ipc_fields_survive_the_frame_codec():
    request = InferRequest("m", "", "id", {}, {"X": InferTensor("X", "FP32", (2,), _fake())}, [RequestedOutput("Y")])
    request.can_take_device_outputs = True
    decoded = decode_from_stub(encode(BlsCall(4, wire_request(-1, request))))
    assert decoded.request.inputs[0].cuda == CudaIpcTensor(*SHARED_FIELDS, "float32", (2,), 3)
    assert decoded.request.can_take_device_outputs


def test_a_process_without_cuda_refuses_a_cuda_tensor_saying_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    wire = WireTensor("X", "FP32", (2,), memoryview(b""), cuda=CudaIpcTensor(*SHARED_FIELDS, "float32", (2,), 0))
    with pytest.raises(UnsupportedError, match=r"tensor 'X' is a GPU tensor \(cuda:1.*cannot use CUDA"):
        infer_tensor(wire)


def test_a_cuda_tensor_whose_shape_disagrees_with_the_frame_is_refused():
    wire = WireTensor("X", "FP32", (3,), memoryview(b""), cuda=CudaIpcTensor(*SHARED_FIELDS, "float32", (2,), 0))
    with pytest.raises(ValueError, match="shape"):
        infer_tensor(wire)


def test_a_zero_size_cuda_tensor_shares_no_memory():
    empty = FakeCudaTensor(torch.zeros(0, dtype=torch.float16))
    assert cuda_ipc_tensors.share(empty) == CudaIpcTensor(1, b"", 0, 0, b"", 0, b"", False, "float16", (0,), 0)


def test_a_bls_request_keeps_gpu_inputs_and_asks_for_gpu_outputs():
    x = _fake()
    pb_request = pb_utils.InferenceRequest(
        model_name="m", inputs=[pb_utils.Tensor._wrap("X", x)], requested_output_names=["Y"]
    )
    request = from_pb_request_for_bls(pb_request)
    assert request.inputs["X"].data is x and request.inputs["X"].datatype == "FP32"
    assert request.can_take_device_outputs
    wire = wire_request(0, request)
    assert wire.can_take_device_outputs and wire.inputs[0].cuda is not None
    # ... and so in the stub, for its model's responses
    assert infer_request(wire_request(0, InferRequest("m", can_take_device_outputs=True))).can_take_device_outputs


@pytest.mark.parametrize("can_take_device_outputs", [False, True])
def test_gpu_outputs_stay_on_the_gpu_only_for_a_caller_that_takes_them(can_take_device_outputs):
    y = _fake((5.0, 6.0))
    config = ModelConfig(name="m")
    config.output.add(name="Y", data_type=11)  # TYPE_FP32
    request = InferRequest("m", outputs=[RequestedOutput("Y")], can_take_device_outputs=can_take_device_outputs)
    response = from_pb_response(pb_utils.InferenceResponse([pb_utils.Tensor._wrap("Y", y)]), request, config, "1")
    assert response.error is None
    output = response.outputs[0]
    assert (output.datatype, output.shape) == ("FP32", (2,))
    if can_take_device_outputs:
        assert output.data is y
    else:  # a client's response: host memory, as the encoders want (and as thread isolation always did)
        assert isinstance(output.data, np.ndarray) and output.data.tolist() == [5.0, 6.0]


def test_models_get_host_inputs_unless_pytorch_or_a_python_model_asking_for_gpu_ones():
    config = ModelConfig(name="m", backend="python")
    assert not takes_device_inputs(config)  # Triton's default: FORCE_CPU_ONLY_INPUT_TENSORS "yes"
    config.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value = "no"
    assert takes_device_inputs(config)
    assert not takes_device_inputs(ModelConfig(name="o", backend="onnxruntime"))
    # PyTorch instances move every input to their device themselves: a CUDA input need not come to the host first.
    assert takes_device_inputs(ModelConfig(name="t", backend="pytorch"))
    assert takes_device_inputs(ModelConfig(name="t", platform="pytorch_libtorch"))
    request = InferRequest("m", inputs={"X": InferTensor("X", "FP32", (2,), _fake((1.0, 2.0)))})
    inputs_to_host(request)
    assert isinstance(request.inputs["X"].data, np.ndarray) and request.inputs["X"].data.tolist() == [1.0, 2.0]


def test_host_arrays_of_torch_tensors_keep_bfloat16_bits():
    values = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    host = as_host_array(values)
    assert host.dtype.name == "bfloat16" and host.astype(np.float32).tolist() == [1.5, -2.0]
    assert not is_device_tensor(values) and not is_device_tensor(np.zeros(1)) and is_device_tensor(_fake())
