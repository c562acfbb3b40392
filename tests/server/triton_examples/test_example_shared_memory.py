"""System shared memory as Triton's shm examples use it, through tritonclient HTTP and gRPC: both INT32 inputs of
`simple` read from one region at two offsets and both outputs written to another, BYTES tensors of
`simple_string` in regions of their serialized size, and the clean-up calls they open and close with."""

import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils

MODULES = {"http": httpclient, "grpc": grpcclient}


@pytest.fixture(params=sorted(MODULES))
def client(request, triton_named_server):
    url = triton_named_server.http_url if request.param == "http" else triton_named_server.grpc_url
    made = MODULES[request.param].InferenceServerClient(url)
    made.protocol = request.param
    yield made
    made.unregister_system_shared_memory()
    made.close()


@pytest.fixture
def region(client):
    """Creates a region and registers it with the server under the same name; destroyed afterwards."""
    handles = []

    def create(byte_size: int):
        name = f"mg-example-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, f"/{name}", byte_size)
        handles.append(handle)
        client.register_system_shared_memory(name, f"/{name}", byte_size)
        return name, handle

    yield create
    for handle in handles:
        shm.destroy_shared_memory_region(handle)


def _output_meta(result, protocol: str, name: str) -> tuple[str, list[int]]:
    output = result.get_output(name)
    if protocol == "http":
        return output["datatype"], output["shape"]
    return output.datatype, list(output.shape)


def test_cuda_unregister_of_nothing_succeeds_without_a_gpu(client):
    """The shm examples clear both kinds of regions first, CUDA included, on machines with no GPU too."""
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()
    status = client.get_cuda_shared_memory_status()
    assert (len(status) if client.protocol == "http" else len(status.regions)) == 0


def test_simple_reads_inputs_at_offsets_and_writes_outputs_at_offsets(client, region):
    module = MODULES[client.protocol]
    in0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    in1 = np.full((1, 16), 5, dtype=np.int32)
    size = in0.nbytes
    inputs_name, inputs_handle = region(2 * size)
    outputs_name, outputs_handle = region(2 * size)
    shm.set_shared_memory_region(inputs_handle, [in0])
    shm.set_shared_memory_region(inputs_handle, [in1], offset=size)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(inputs_name, size)
    inputs[1].set_shared_memory(inputs_name, size, offset=size)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory(outputs_name, size)
    outputs[1].set_shared_memory(outputs_name, size, offset=size)
    result = client.infer("simple", inputs, outputs=outputs)
    assert _output_meta(result, client.protocol, "OUTPUT1") == ("INT32", [1, 16])
    total = shm.get_contents_as_numpy(outputs_handle, np.int32, [1, 16])
    difference = shm.get_contents_as_numpy(outputs_handle, np.int32, [1, 16], offset=size)
    np.testing.assert_array_equal(total, in0 + in1)
    np.testing.assert_array_equal(difference, in0 - in1)


def _serialized(numbers) -> np.ndarray:
    return utils.serialize_byte_tensor(np.array([str(n).encode() for n in numbers], dtype=object))


def test_simple_string_reads_and_writes_serialized_bytes(client, region):
    module = MODULES[client.protocol]
    numbers0, numbers1 = list(range(16)), [-2] * 16
    expected_sum = [a + b for a, b in zip(numbers0, numbers1)]
    inputs = []
    for index, numbers in enumerate((numbers0, numbers1)):
        data = _serialized(numbers)
        name, handle = region(utils.serialized_byte_size(data))
        shm.set_shared_memory_region(handle, [data])
        inputs.append(module.InferInput(f"INPUT{index}", [1, 16], "BYTES"))
        inputs[-1].set_shared_memory(name, utils.serialized_byte_size(data))
    sum_size = utils.serialized_byte_size(_serialized(expected_sum))
    output_name, output_handle = region(sum_size)
    output = module.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory(output_name, sum_size)
    result = client.infer("simple_string", inputs, outputs=[output])
    datatype, shape = _output_meta(result, client.protocol, "OUTPUT0")
    assert (datatype, shape) == ("BYTES", [1, 16])
    written = shm.get_contents_as_numpy(output_handle, utils.triton_to_np_dtype(datatype), shape)
    assert [int(item) for item in written.flatten()] == expected_sum


def test_status_lists_the_registered_regions(client, region):
    name, _ = region(64)
    status = client.get_system_shared_memory_status()
    rows = {row["name"]: row for row in status} if client.protocol == "http" else dict(status.regions)
    row = rows[name]
    key, byte_size = (row["key"], int(row["byte_size"])) if client.protocol == "http" else (row.key, row.byte_size)
    assert (key, byte_size) == (f"/{name}", 64)
    client.unregister_system_shared_memory(name)
    after = client.get_system_shared_memory_status()
    assert name not in ({row["name"] for row in after} if client.protocol == "http" else set(after.regions))
