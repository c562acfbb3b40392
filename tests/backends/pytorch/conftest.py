"""One server with the PyTorch test models, and a caller for either protocol.

`torch_server.modules` holds each model's scripted module or exported program, so tests can
compare the server's answer with calling the module directly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelgate.core.tensors import datatypes
from tests.backends.pytorch import torch_models as tm
from tests.server_harness import RunningServer, copy_example_model, start_server

BATCH = torch.export.Dim("batch", max=64)
SMALL_BATCH = torch.export.Dim("small_batch", max=8)  # exported_indexed's config allows 16

CONFIGS = {
    "add_sub": """
        name: "add_sub"
        platform: "pytorch_libtorch"
        max_batch_size: 8
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3 ] },
                { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 3 ] } ]
        output [ { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 3 ] },
                 { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        """,
    "scale_total": """
        name: "scale_total"
        backend: "pytorch"
        input [ { name: "scale" data_type: TYPE_FP32 dims: [ 1 ] },
                { name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]
        output [ { name: "total" data_type: TYPE_FP32 dims: [ -1, 1 ] },
                 { name: "scaled" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]
        """,
    "mixed_types": """
        name: "mixed_types"
        backend: "pytorch"
        max_batch_size: 4
        input [ { name: "half" data_type: TYPE_FP16 dims: [ 2 ] },
                { name: "brain" data_type: TYPE_BF16 dims: [ 2 ] },
                { name: "count" data_type: TYPE_INT64 dims: [ 2 ] } ]
        output [ { name: "half" data_type: TYPE_FP16 dims: [ 2 ] },
                 { name: "brain" data_type: TYPE_BF16 dims: [ 2 ] },
                 { name: "count" data_type: TYPE_INT64 dims: [ 2 ] },
                 { name: "widened" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    "raiser": """
        name: "raiser"
        backend: "pytorch"
        max_batch_size: 8
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    "optional_b": """
        name: "optional_b"
        backend: "pytorch"
        input [ { name: "a" data_type: TYPE_FP32 dims: [ 2 ] },
                { name: "b" data_type: TYPE_FP32 dims: [ 2 ] optional: true } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] },
                 { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    "lossy_output": """
        name: "lossy_output"
        backend: "pytorch"
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    "gated": """
        name: "gated"
        backend: "pytorch"
        max_batch_size: 8
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] },
                 { name: "OUTPUT__1" data_type: TYPE_INT64 dims: [ 1 ] } ]
        instance_group [ { count: 1 kind: KIND_CPU } ]
        dynamic_batching { max_queue_delay_microseconds: 200000 }
        """,
    "paired": """
        name: "paired"
        backend: "pytorch"
        max_batch_size: 8
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        instance_group [ { count: 2 kind: KIND_CPU } ]
        """,
    # Exported programs: `token_weights` and `static_double` declare nothing and are auto-completed.
    "token_weights": 'name: "token_weights" backend: "pytorch"',
    "static_double": 'name: "static_double" platform: "torch_export"',
    "exported_indexed": """
        name: "exported_indexed"
        platform: "torch_export"
        max_batch_size: 16
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] },
                 { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 1 ] } ]
        """,
    # These must fail to load, each with its reason.
    "missing_argument": """
        name: "missing_argument"
        backend: "pytorch"
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        """,
    "bad_index": """
        name: "bad_index"
        backend: "pytorch"
        input [ { name: "INPUT__3" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
    "untyped": None,
}

TORCHSCRIPT_MODULES = {
    "add_sub": tm.AddSub,
    "scale_total": tm.ScaleAndTotal,
    "mixed_types": tm.MixedTypes,
    "raiser": tm.Raiser,
    "optional_b": tm.AddSub,
    "lossy_output": tm.FloatSixtyFour,
    "gated": tm.Gated,
    "paired": tm.Paired,
    "missing_argument": tm.AddSub,
    "bad_index": tm.Raiser,
    "untyped": tm.AddSub,
}
EXPORTED = {
    "token_weights": (
        tm.TokenWeights,
        (torch.ones(2, 5, dtype=torch.int64), torch.ones(2, 5)),
        {"tokens": {0: BATCH}, "weight": {0: BATCH}},
    ),
    "static_double": (tm.DoubleAndSum, (torch.ones(2, 3),), None),
    "exported_indexed": (tm.DoubleAndSum, (torch.ones(2, 3),), {"x": {0: SMALL_BATCH}}),
}
FAILING = {"missing_argument", "bad_index", "untyped"}


@dataclass
class TorchServer:
    running: RunningServer
    http: httpclient.InferenceServerClient
    grpc: grpcclient.InferenceServerClient
    modules: dict = field(default_factory=dict)  # model name -> scripted module or exported program


def start_torch_server(repository: Path) -> RunningServer:
    """start_server, without torch 2.9+'s DeprecationWarning for each torch.jit.load of the models."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=DeprecationWarning)
        return start_server([repository])


@pytest.fixture(scope="session")
def torch_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("pytorch_models")
    modules = {}
    for name, module_class in TORCHSCRIPT_MODULES.items():
        modules[name] = tm.write_torchscript(repository, name, module_class(), CONFIGS[name])
    for name, (module_class, example, dynamic) in EXPORTED.items():
        modules[name] = tm.write_exported(repository, name, module_class(), example, dynamic, CONFIGS[name])
    copy_example_model(repository, "simple_torchscript")
    running = start_torch_server(repository)
    http = httpclient.InferenceServerClient(running.http_url, concurrency=8, network_timeout=60)
    grpc = grpcclient.InferenceServerClient(running.grpc_url)
    yield TorchServer(running, http, grpc, modules)
    http.close()
    grpc.close()
    running.stop()


class Caller:
    """infer(model, {name: array}, outputs) -> {name: array} through one tritonclient protocol."""

    def __init__(self, protocol: str, server: TorchServer):
        self.protocol = protocol
        self.module = httpclient if protocol == "http" else grpcclient
        self.client = server.http if protocol == "http" else server.grpc

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict:
        tensors = []
        for name, array in inputs.items():
            tensor = self.module.InferInput(name, list(array.shape), datatypes.from_numpy_dtype(array.dtype).wire_name)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        requested = [self.module.InferRequestedOutput(n) for n in outputs] if outputs else None
        result = self.client.infer(model, tensors, outputs=requested)
        response = result.get_response()
        if self.protocol == "http":
            names = [o["name"] for o in response["outputs"]]
        else:
            names = [o.name for o in response.outputs]
        return {name: result.as_numpy(name) for name in names}

    def bad_request_status(self) -> str:
        return "400" if self.protocol == "http" else "StatusCode.INVALID_ARGUMENT"


@pytest.fixture(params=["http", "grpc"])
def caller(request, torch_server) -> Caller:
    return Caller(request.param, torch_server)
