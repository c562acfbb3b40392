"""One server for the gRPC frontend tests, and both tritonclient gRPC clients (sync and aio)."""

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from tests.server.frontends.grpc.grpc_helpers import AwaitableClient
from tests.server.frontends.grpc.stream_models import write_stream_models
from tests.server.frontends.http.probe_models import (
    BROKEN_CONFIG,
    BROKEN_MODEL,
    DATATYPES,
    IDENTITY_CONFIG,
    IDENTITY_MODEL,
    identity_name,
)
from tests.server_harness import copy_example_model, start_server, write_model


@pytest.fixture(scope="session")
def grpc_server(tmp_path_factory):
    """Identity models (one per datatype), the stream models, add_sub, string_ops, repeat_int32,
    batched_scale and broken (which fails to load)."""
    repository = tmp_path_factory.mktemp("grpc_models")
    for datatype, config_type in DATATYPES.items():
        name = identity_name(datatype)
        write_model(repository, name, IDENTITY_CONFIG.format(name=name, type=config_type), IDENTITY_MODEL)
    write_model(repository, "broken", BROKEN_CONFIG, BROKEN_MODEL)
    write_stream_models(repository)
    copy_example_model(repository, "batched_scale")
    running = start_server([repository])
    yield running
    running.stop()


@pytest.fixture(scope="session")
def grpc_client(grpc_server):
    """A tritonclient.grpc (sync) client of grpc_server."""
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    yield client
    client.close()


@pytest.fixture
async def aio_client(grpc_server):
    """A tritonclient.grpc.aio client of grpc_server, on the test's event loop."""
    client = aioclient.InferenceServerClient(grpc_server.grpc_url)
    yield client
    await client.close()


@pytest.fixture(params=["sync", "aio"])
async def either_client(request, grpc_server):
    """tritonclient.grpc and tritonclient.grpc.aio in turn, behind one awaitable interface."""
    if request.param == "sync":
        client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
        yield AwaitableClient(client)
        client.close()
    else:
        client = aioclient.InferenceServerClient(grpc_server.grpc_url)
        yield AwaitableClient(client)
        await client.close()
