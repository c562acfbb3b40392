"""OUTPUT = INPUT + START + (CORRID if END else 0) for each [1, 1] request, in INT32 (wrapping as C++ would)."""

import numpy as np
import triton_python_backend_utils as pb_utils


def _scalar(request, name: str) -> int:
    return int(pb_utils.get_input_tensor_by_name(request, name).as_numpy().item())


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()  # [1, 1]
            extra = _scalar(request, "START") + _scalar(request, "END") * _scalar(request, "CORRID")
            output = (value.astype(np.int64) + extra).astype(np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", output)]))
        return responses
