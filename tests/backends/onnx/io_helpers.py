"""Inputs for tritonclient calls, onnxruntime's own answers, and the instances inside a test server."""

import onnxruntime
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.backends.onnx.onnx_models import model_bytes


def reference(graph: str, feeds: dict) -> list:
    session = onnxruntime.InferenceSession(model_bytes(graph), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def http_input(name, data, datatype, binary=True):
    tensor = httpclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def grpc_input(name, data, datatype):
    tensor = grpcclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def onnx_instances(running, name: str) -> list:
    """The serving version's instances (OnnxModelInstance), read from inside the in-process server."""
    return list(running.server.manager.resolve(name).scheduler.pool._instances)
