"""Sends IN[i] as OUT (with IDX = i) after DELAY[i] ms, for each i; then waits WAIT ms and sends the final flag."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _input(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            values, delays, wait = _input(request, "IN"), _input(request, "DELAY"), _input(request, "WAIT")
            if len(delays) != len(values):
                error = pb_utils.TritonError(f"DELAY has {len(delays)} elements, IN has {len(values)}: one per element")
                sender.send(
                    pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                )
                continue
            for index, (value, delay_ms) in enumerate(zip(values, delays)):
                if sender.is_cancelled():
                    break
                time.sleep(float(delay_ms) / 1000)
                out = pb_utils.Tensor("OUT", np.array([value], dtype=np.int32))
                idx = pb_utils.Tensor("IDX", np.array([index], dtype=np.uint32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out, idx]))
            time.sleep(float(wait[0]) / 1000)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
