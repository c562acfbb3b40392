"""BLS: a python model calls another model with pb_utils.InferenceRequest(...).exec()."""

import numpy as np
import pytest

from tests.server.lifecycle_models import (
    BLS_CALLER_MODEL,
    infer_x,
    parameter,
    server_error,
    write_scale_model,
    xy_config,
)
from tests.server_harness import start_server, write_model


def _write_caller(repository, name, target, target_version=None):
    extra = parameter("target", target)
    if target_version is not None:
        extra += "\n" + parameter("target_version", str(target_version))
    write_model(repository, name, xy_config(name, extra), BLS_CALLER_MODEL)


@pytest.fixture
def bls_repository(tmp_path):
    write_scale_model(
        tmp_path, "target", versions=(1, 2), extra="version_policy { all { } }\n" + parameter("factor", "3")
    )
    _write_caller(tmp_path, "caller", "target")
    _write_caller(tmp_path, "caller_of_v1", "target", target_version=1)
    _write_caller(tmp_path, "caller_of_nothing", "nope")
    return tmp_path


def test_a_model_gets_the_result_of_the_model_it_calls(bls_repository, serve):
    running, client = serve([bls_repository])
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(infer_x(client, "caller", x), x * 3 + 2 + 100)  # target's default: version 2
    np.testing.assert_array_equal(infer_x(client, "caller_of_v1", x), x * 3 + 1 + 100)
    stats = {s["version"]: s["inference_count"] for s in client.get_inference_statistics("target")["model_stats"]}
    assert stats == {"1": 1, "2": 1}  # the inner requests went through the server


def test_a_failing_inner_request_reaches_the_caller_as_an_error(bls_repository, serve):
    running, client = serve([bls_repository])
    error = server_error(infer_x, client, "caller_of_nothing", [1.0])
    assert error.status() == "400"
    assert "BLS failed" in error.message() and "'nope'" in error.message()
    np.testing.assert_array_equal(infer_x(client, "caller", [0.0]), [102.0])


def test_bls_still_reaches_this_server_after_another_one_stopped(bls_repository, serve, tmp_path_factory):
    running, client = serve([bls_repository])
    other = start_server([tmp_path_factory.mktemp("other_repository")])
    other.stop()
    np.testing.assert_array_equal(infer_x(client, "caller", [1.0]), [105.0])


def test_two_servers_in_one_process_each_call_their_own_models(bls_repository, serve, tmp_path_factory):
    other_repository = tmp_path_factory.mktemp("other_repository")
    write_scale_model(other_repository, "target", extra=parameter("factor", "10"))
    _write_caller(other_repository, "caller", "target")
    _, client = serve([bls_repository])
    _, other_client = serve([other_repository])
    np.testing.assert_array_equal(infer_x(other_client, "caller", [1.0]), [1.0 * 10 + 1 + 100])
    np.testing.assert_array_equal(infer_x(client, "caller", [1.0]), [1.0 * 3 + 2 + 100])


def test_exec_outside_a_model_call_says_where_it_works():
    import modelgate.backends.python.triton_python_backend_utils as pb_utils

    request = pb_utils.InferenceRequest(model_name="m", inputs=[], requested_output_names=[])
    with pytest.raises(pb_utils.TritonModelException, match="only be executed inside the server"):
        request.exec()


THREADED_CALLER_MODEL = """
import json, threading
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.target = json.loads(args["model_config"])["parameters"]["target"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            answer = {}

            def call():  # on a thread of the model's own: no context of the instance's call
                inner = pb_utils.InferenceRequest(
                    model_name=self.target, inputs=[pb_utils.Tensor("X", x)], requested_output_names=["Y"])
                answer["y"] = pb_utils.get_output_tensor_by_name(inner.exec(), "Y").as_numpy()

            worker = threading.Thread(target=call)
            worker.start()
            worker.join()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", answer["y"] + 100)]))
        return responses
"""


def test_a_thread_the_model_starts_may_call_other_models(bls_repository, serve):
    write_model(
        bls_repository,
        "threaded_caller",
        xy_config("threaded_caller", parameter("target", "target")),
        THREADED_CALLER_MODEL,
    )
    _, client = serve([bls_repository])
    np.testing.assert_array_equal(infer_x(client, "threaded_caller", [1.0]), [1.0 * 3 + 2 + 100])
