"""Each element of INPUT0 and INPUT1 is a decimal integer as UTF-8; OUTPUT0 / OUTPUT1 hold their sum and
difference written the same way."""

import numpy as np
import triton_python_backend_utils as pb_utils


def _as_ints(tensor) -> np.ndarray:
    values = tensor.as_numpy()
    return np.array([int(element) for element in values.reshape(-1)], dtype=np.int64).reshape(values.shape)


def _as_strings(values: np.ndarray) -> np.ndarray:
    return np.array([str(v).encode() for v in values.reshape(-1)], dtype=np.object_).reshape(values.shape)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            in0 = _as_ints(pb_utils.get_input_tensor_by_name(request, "INPUT0"))
            in1 = _as_ints(pb_utils.get_input_tensor_by_name(request, "INPUT1"))
            outputs = [
                pb_utils.Tensor("OUTPUT0", _as_strings(in0 + in1)),
                pb_utils.Tensor("OUTPUT1", _as_strings(in0 - in1)),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
