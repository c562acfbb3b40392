"""The stub's scheduling policy: SCHED_BATCH unless the model asks for the normal one, for threads it starts too."""

import os

import numpy as np
import tritonclient.http as httpclient

from tests.server_harness import write_model

CONFIG = """
name: "{name}"
backend: "python"
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "POLICIES" data_type: TYPE_INT64 dims: [ 2 ] }} ]
"""

# Answers with the policy of the thread running execute and of a thread it starts.
POLICY_MODEL = """
import os
import threading
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        seen = []
        started = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(threading.get_native_id())))
        started.start()
        started.join()
        policies = np.array([os.sched_getscheduler(threading.get_native_id()), seen[0]], dtype=np.int64)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("POLICIES", policies)]) for _ in requests]
"""


def _parameter(value: str) -> str:
    return f'parameters {{ key: "stub_scheduling" value {{ string_value: "{value}" }} }}\n'


def test_stubs_run_as_batch_work_unless_the_model_asks_otherwise(tmp_path, make_server):
    write_model(tmp_path, "default", CONFIG.format(name="default"), POLICY_MODEL)
    write_model(tmp_path, "normal", CONFIG.format(name="normal") + _parameter("normal"), POLICY_MODEL)
    write_model(tmp_path, "odd", CONFIG.format(name="odd") + _parameter("realtime"), POLICY_MODEL)
    write_model(
        tmp_path,
        "in_thread",
        CONFIG.format(name="in_thread")
        + 'parameters { key: "isolation" value { string_value: "thread" } }\n'
        + _parameter("batch"),
        POLICY_MODEL,
    )
    running = make_server([tmp_path])
    http = httpclient.InferenceServerClient(running.http_url)
    tensor = httpclient.InferInput("X", [1], "FP32")
    tensor.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    assert http.infer("default", [tensor]).as_numpy("POLICIES").tolist() == [os.SCHED_BATCH] * 2
    assert http.infer("normal", [tensor]).as_numpy("POLICIES").tolist() == [os.SCHED_OTHER] * 2
    reasons = {row["name"]: row.get("reason", "") for row in http.get_model_repository_index()}
    assert "parameters.stub_scheduling" in reasons["odd"] and "allowed: batch, normal" in reasons["odd"]
    assert "parameters.stub_scheduling" in reasons["in_thread"] and "needs isolation 'process'" in reasons["in_thread"]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the server's own policy is untouched
    http.close()
