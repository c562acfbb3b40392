"""System shared memory through tritonclient, HTTP and gRPC: inputs read from regions, outputs written to them."""

import concurrent.futures

import numpy as np
import pytest
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from tests.server.shared_memory.conftest import PROTOCOLS

A = np.array([1, 2, 3, 4], dtype=np.float32)
B = np.array([10, 20, 30, 40], dtype=np.float32)


def add_sub_in_regions(client, protocol, regions, *, wire_input1=False, wire_output1=False):
    """add_sub with INPUT0 (and INPUT1 unless `wire_input1`) in one region at offsets 0 and 16, and OUTPUT0
    (and OUTPUT1 unless `wire_output1`) in another; returns (result, output region handle)."""
    module = PROTOCOLS[protocol]
    in_key, in_handle = regions(32)
    out_key, out_handle = regions(32)
    shm.set_shared_memory_region(in_handle, [A, B])
    client.register_system_shared_memory("in", in_key, 32)
    client.register_system_shared_memory("out", out_key, 32)
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_shared_memory("in", 16)
    if wire_input1:
        inputs[1].set_data_from_numpy(B)
    else:
        inputs[1].set_shared_memory("in", 16, offset=16)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("out", 16)
    if not wire_output1:
        outputs[1].set_shared_memory("out", 16, offset=16)
    return client.infer("add_sub", inputs, outputs=outputs), out_handle


def test_inputs_and_outputs_in_regions(client, protocol, regions):
    result, out_handle = add_sub_in_regions(client, protocol, regions)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [4]), A + B)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [4], offset=16), A - B)
    output = result.get_output("OUTPUT0")
    datatype, shape = (output["datatype"], output["shape"]) if protocol == "http" else (output.datatype, output.shape)
    assert (datatype, list(shape)) == ("FP32", [4])


def test_regions_mixed_with_tensors_on_the_wire(client, protocol, regions):
    """gRPC's raw contents belong to the inputs and outputs not in regions: positions must line up."""
    result, out_handle = add_sub_in_regions(client, protocol, regions, wire_input1=True, wire_output1=True)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [4]), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_bytes_tensors_in_regions(client, protocol, regions):
    module = PROTOCOLS[protocol]
    text = np.array([b"shared", b"memory!"], dtype=np.object_)
    serialized = serialize_byte_tensor(text)  # a one-element object array holding the bytes
    size = len(serialized.item())
    in_key, in_handle = regions(size)
    out_key, out_handle = regions(64)
    shm.set_shared_memory_region(in_handle, [serialized])
    client.register_system_shared_memory("text", in_key, size)
    client.register_system_shared_memory("upper", out_key, 64)
    tensor = module.InferInput("TEXT", [2], "BYTES")
    tensor.set_shared_memory("text", size)
    upper = module.InferRequestedOutput("UPPER")
    upper.set_shared_memory("upper", 64)
    result = client.infer("string_ops", [tensor], outputs=[upper, module.InferRequestedOutput("LENGTH")])
    assert list(shm.get_contents_as_numpy(out_handle, np.object_, [2])) == [b"SHARED", b"MEMORY!"]
    np.testing.assert_array_equal(result.as_numpy("LENGTH"), [6, 7])


def test_status_and_unregister(client, protocol, regions):
    key, _ = regions(128)
    client.register_system_shared_memory("status-me", key, 64, offset=32)
    status = client.get_system_shared_memory_status("status-me")
    if protocol == "http":
        assert status == [{"name": "status-me", "key": key, "offset": 32, "byte_size": 64}]
    else:
        region = status.regions["status-me"]
        assert (region.key, region.offset, region.byte_size) == (key, 32, 64)
    client.unregister_system_shared_memory("status-me")
    with pytest.raises(InferenceServerException, match="status-me"):
        client.get_system_shared_memory_status("status-me")


def test_register_twice_is_refused(client, regions):
    key, _ = regions(16)
    client.register_system_shared_memory("twice", key, 16)
    with pytest.raises(InferenceServerException, match="already"):
        client.register_system_shared_memory("twice", key, 16)


@pytest.mark.parametrize(
    ("key", "offset", "byte_size", "message"),
    [
        ("/modelgate-no-such-region", 0, 16, "No such file"),
        ("/../etc/passwd", 0, 16, "not a POSIX shared-memory name"),
        ("/a/b", 0, 16, "not a POSIX shared-memory name"),
        (None, 8, 16, "runs past the end"),
        (None, 0, 17, "runs past the end"),
    ],
)
def test_bad_registrations_are_refused(client, regions, key, offset, byte_size, message):
    real_key, _ = regions(16)
    with pytest.raises(InferenceServerException, match=message):
        client.register_system_shared_memory("bad", key or real_key, byte_size, offset=offset)
    assert client.is_server_live()


def test_a_link_in_the_shm_folder_is_refused(client, tmp_path):
    """The key is a name in /dev/shm, never a way to another file."""
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 64)
    link = "/dev/shm/modelgate-test-link"
    import os

    os.symlink(target, link)
    try:
        with pytest.raises(InferenceServerException, match="Too many levels of symbolic links|not a shared"):
            client.register_system_shared_memory("link", "/modelgate-test-link", 16)
    finally:
        os.unlink(link)


@pytest.mark.parametrize(
    ("offset", "byte_size", "message"),
    [(20, 16, "past the end"), (0, 12, "needs 16"), (0, 36, "past the end")],
)
def test_bad_input_spans_are_refused(client, protocol, regions, offset, byte_size, message):
    module = PROTOCOLS[protocol]
    key, _ = regions(32)
    client.register_system_shared_memory("span", key, 32)
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_shared_memory("span", byte_size, offset=offset)
    inputs[1].set_data_from_numpy(B)
    with pytest.raises(InferenceServerException, match=message) as raised:
        client.infer("add_sub", inputs)
    assert raised.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    assert client.is_server_ready()


def test_an_output_region_too_small_is_refused(client, protocol, regions):
    module = PROTOCOLS[protocol]
    key, _ = regions(8)
    client.register_system_shared_memory("small", key, 8)
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(A)
    inputs[1].set_data_from_numpy(B)
    output = module.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory("small", 8)
    with pytest.raises(InferenceServerException, match="at least 16 bytes"):
        client.infer("add_sub", inputs, outputs=[output])


def test_an_unknown_region_is_an_error(client, protocol):
    module = PROTOCOLS[protocol]
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_shared_memory("never-registered", 16)
    inputs[1].set_data_from_numpy(B)
    with pytest.raises(InferenceServerException, match="unable to find shared memory region: 'never-registered'"):
        client.infer("add_sub", inputs)


def test_a_truncated_object_fails_the_request_not_the_server(client, protocol, regions):
    """A client that shrinks its object after registering it gets an error; the server never reads past the end."""
    module = PROTOCOLS[protocol]
    key, _ = regions(32)
    client.register_system_shared_memory("shrinks", key, 32)
    with open(f"/dev/shm{key}", "r+b") as handle:
        handle.truncate(4)
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_shared_memory("shrinks", 16, offset=16)
    inputs[1].set_data_from_numpy(B)
    with pytest.raises(InferenceServerException, match="truncated"):
        client.infer("add_sub", inputs)
    assert client.is_server_live()


def test_unregister_while_requests_use_the_region(client, shm_server, protocol, regions):
    """Requests in flight when their region goes either finish or fail with a clear error; the server serves on."""
    module = PROTOCOLS[protocol]
    url = shm_server.http_url if protocol == "http" else shm_server.grpc_url
    key, handle = regions(32)
    shm.set_shared_memory_region(handle, [A, B])
    client.register_system_shared_memory("busy", key, 32)

    def infer(requests: int) -> list:
        """On a client of its own: tritonclient's HTTP client must not be shared between threads."""
        own = module.InferenceServerClient(url)
        try:
            return [_infer_from_busy(own, module) for _ in range(requests)]
        finally:
            own.close()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(infer, 10) for _ in range(4)]
        client.unregister_system_shared_memory("busy")
        answers = [answer for future in futures for answer in future.result()]
    for answer in answers:
        if answer is not None:
            np.testing.assert_array_equal(answer, A + B)
    assert _infer_from_busy(client, module) is None  # gone for good


def _infer_from_busy(client, module):
    """add_sub's OUTPUT0 with both inputs in region 'busy', or None when the region is not registered."""
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_shared_memory("busy", 16)
    inputs[1].set_shared_memory("busy", 16, offset=16)
    try:
        return client.infer("add_sub", inputs).as_numpy("OUTPUT0")
    except InferenceServerException as exc:
        assert "unable to find shared memory region: 'busy'" in exc.message()
        return None
