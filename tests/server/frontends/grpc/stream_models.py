"""Decoupled python-backend models for the streaming, cancellation and generate tests.

Each streams COUNT responses (`OUT` = 0, 1, ..., COUNT-1) for one request; request
parameters steer them: `delay_ms` (a pause after each response) and `record_path` (a file
where `counter` writes whether it saw `sender.is_cancelled()` become true).
"""

from tests.server_harness import copy_example_model, write_model

STREAM_CONFIG = """
    name: "{name}"
    backend: "python"
    max_batch_size: 0
    model_transaction_policy {{ decoupled: true }}
    input [ {{ name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
    output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }}{extra_output} ]
    instance_group [ {{ count: 4 kind: KIND_CPU }} ]
"""

# Stops early once the request is cancelled, and records what it saw in `record_path`.
COUNTER_MODEL = """
    import json
    import time

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                self._stream(request)
            return None

        def _stream(self, request):
            sender = request.get_response_sender()
            parameters = json.loads(request.parameters())
            count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy()[0])
            delay_s = parameters.get("delay_ms", 0) / 1000
            sent = 0
            while sent < count and not sender.is_cancelled():
                out = pb_utils.Tensor("OUT", np.array([sent], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse([out]))
                sent += 1
                time.sleep(delay_s)
            if "record_path" in parameters:
                with open(parameters["record_path"], "w") as record:
                    json.dump({"cancelled": sender.is_cancelled(), "sent": sent}, record)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""

# Sends COUNT responses, then execute raises before the final flag.
RAISE_AFTER_MODEL = """
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy()[0])
                for index in range(count):
                    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([index], dtype=np.int32))]))
            raise ValueError("raise_after gives up")
"""

# Answers from a thread of its own that starts sending only once execute has returned;
# AFTER_EXECUTE says so in every response.
THREAD_SENDER_MODEL = """
    import threading

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            returned = threading.Event()
            for request in requests:
                sender = request.get_response_sender()
                count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy()[0])
                threading.Thread(target=self._send, args=(sender, count, returned), daemon=True).start()
            returned.set()
            return None

        def _send(self, sender, count, returned):
            returned.wait(10)
            for index in range(count):
                tensors = [
                    pb_utils.Tensor("OUT", np.array([index], dtype=np.int32)),
                    pb_utils.Tensor("AFTER_EXECUTE", np.array([returned.is_set()])),
                ]
                sender.send(pb_utils.InferenceResponse(tensors))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""

# A response that carries an error in the middle of the stream, then more data and the final flag.
ERROR_RESPONSE_MODEL = """
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                out = lambda v: pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([v], dtype=np.int32))])
                sender.send(out(0))
                sender.send(pb_utils.InferenceResponse([], error=pb_utils.TritonError("error_response says no")))
                sender.send(out(1), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
"""

# A response parameter that has no gRPC InferParameter form (a JSON object), then a good final response.
ODD_PARAMETER_MODEL = """
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                out = [pb_utils.Tensor("OUT", np.array([0], dtype=np.int32))]
                sender.send(pb_utils.InferenceResponse(out, parameters={"nested": {"a": 1}}))
                final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                sender.send(pb_utils.InferenceResponse(out, parameters={"flat": 1}), flags=final)
            return None
"""

AFTER_EXECUTE_OUTPUT = ', { name: "AFTER_EXECUTE" data_type: TYPE_BOOL dims: [ 1 ] }'

STREAM_MODELS = {
    "counter": (COUNTER_MODEL, ""),
    "raise_after": (RAISE_AFTER_MODEL, ""),
    "thread_sender": (THREAD_SENDER_MODEL, AFTER_EXECUTE_OUTPUT),
    "error_response": (ERROR_RESPONSE_MODEL, ""),
    "odd_parameter": (ODD_PARAMETER_MODEL, ""),
}


def write_stream_models(repository) -> None:
    """The models above plus copies of the examples add_sub, string_ops and repeat_int32."""
    for name, (model_py, extra_output) in STREAM_MODELS.items():
        write_model(repository, name, STREAM_CONFIG.format(name=name, extra_output=extra_output), model_py)
    for example in ("add_sub", "string_ops", "repeat_int32"):
        copy_example_model(repository, example)
