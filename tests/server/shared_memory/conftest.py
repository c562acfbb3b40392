"""Servers for the shared-memory tests: one that allows client shared memory, one that does not (the default)."""

import uuid

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from tests.server_harness import copy_example_model, start_server

PROTOCOLS = {"http": httpclient, "grpc": grpcclient}


@pytest.fixture(scope="session")
def shm_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("shm_models")
    for name in ("add_sub", "string_ops"):
        copy_example_model(repository, name)
    running = start_server([repository], allow_shared_memory=True)
    yield running
    running.stop()


@pytest.fixture(params=sorted(PROTOCOLS))
def protocol(request):
    return request.param


@pytest.fixture
def client(shm_server, protocol):
    """A tritonclient of `protocol`; every region it registered is unregistered afterwards."""
    module = PROTOCOLS[protocol]
    url = shm_server.http_url if protocol == "http" else shm_server.grpc_url
    client = module.InferenceServerClient(url)
    yield client
    client.unregister_system_shared_memory()
    client.close()


@pytest.fixture
def regions():
    """Creates system shared-memory regions (tritonclient.utils.shared_memory) and destroys them afterwards."""
    handles = []

    def create(byte_size: int):
        key = f"/modelgate-test-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(key[1:], key, byte_size)
        handles.append(handle)
        return key, handle

    yield create
    for handle in handles:
        shm.destroy_shared_memory_region(handle)
