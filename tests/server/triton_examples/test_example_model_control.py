"""Triton's load and unload answers, as its model-control examples check them, through HTTP and gRPC: a bad
override fails in Triton's words and the model keeps serving, an override naming no backend finds it from
model.py, a load of an unknown name or of a file the filesystem refuses fails as Triton's does."""

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.server.triton_examples.conftest import CONFIGLESS, STAND_INS


@pytest.fixture(params=["http", "grpc"])
def control(request, serve):
    running, http_client = serve(
        [STAND_INS, CONFIGLESS], model_control_mode="explicit", load_model=["simple"], allow_model_file_uploads=True
    )
    if request.param == "http":
        yield http_client, request.param
        return
    grpc_client = grpcclient.InferenceServerClient(running.grpc_url)
    yield grpc_client, request.param
    grpc_client.close()


def _max_batch_size(client, protocol: str) -> int:
    config = client.get_model_config("simple")
    return config["max_batch_size"] if protocol == "http" else config.config.max_batch_size


def _failure(call, *args, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        call(*args, **kwargs)
    return raised.value


def _status(protocol: str, http: str, grpc: str) -> str:
    return http if protocol == "http" else f"StatusCode.{grpc}"


def test_an_override_that_is_not_json_fails_to_load_and_the_model_keeps_serving(control):
    client, protocol = control
    error = _failure(client.load_model, "simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert error.message().startswith("failed to load 'simple', failed to poll from model repository: ")
    assert "load request parameter 'config'" in error.message()
    assert error.status() == _status(protocol, "400", "INVALID_ARGUMENT")
    assert client.is_model_ready("simple") and _max_batch_size(client, protocol) == 8


def test_an_override_naming_no_backend_gets_python_from_model_py(control):
    client, protocol = control
    client.load_model("simple", config='{"max_batch_size": "16"}')
    assert client.is_model_ready("simple")
    assert _max_batch_size(client, protocol) == 16
    config = client.get_model_config("simple")
    backend = config["backend"] if protocol == "http" else config.config.backend
    inputs = config["input"] if protocol == "http" else config.config.input
    assert backend == "python" and len(inputs) == 2  # the tensors from the model's auto_complete_config


def test_a_model_no_repository_has_fails_to_load_as_in_triton(control):
    client, protocol = control
    error = _failure(client.load_model, "wrong_model_name")
    assert error.message().startswith("failed to load 'wrong_model_name', failed to poll from model repository")
    assert error.status() == _status(protocol, "500", "INTERNAL")
    names = {row["name"] if protocol == "http" else row.name for row in _index(client, protocol)}
    assert "wrong_model_name" not in names


def test_a_file_name_too_long_for_the_filesystem_is_internal_and_the_server_lives(control):
    client, protocol = control
    client.unload_model("simple")
    error = _failure(client.load_model, "simple", config="{}", files={"file:" + "A" * 256: b"a"})
    assert error.status() == _status(protocol, "500", "INTERNAL")
    assert "failed to poll from model repository" in error.message()
    assert "cannot be written: File name too long" in error.message()
    assert client.is_server_live() and not client.is_model_ready("simple")
    client.load_model("simple")  # nothing of the refused load is left in the way
    assert client.is_model_ready("simple")


def test_the_index_lists_every_model_of_the_repositories_loaded_or_not(control):
    """Triton's gRPC model-control example counts 8 models (model_repository/ and configless_repository/ hold
    that many between them; only `simple` is loaded here)."""
    client, protocol = control
    rows = {row["name"] if protocol == "http" else row.name: row for row in _index(client, protocol)}
    assert len(rows) == 8 and {"simple_sequence", "simple_dyna_sequence", "negate_no_config"} <= set(rows)
    state = rows["simple_sequence"].get("state", "") if protocol == "http" else rows["simple_sequence"].state
    assert state == ""  # known to the index though never loaded: no state, as Triton


def _index(client, protocol: str):
    index = client.get_model_repository_index()
    return index if protocol == "http" else index.models
