"""Upper-cases UTF-8 strings (other bytes pass through unchanged) and returns their byte lengths."""

import numpy as np
import triton_python_backend_utils as pb_utils


def _upper(element: bytes) -> bytes:
    try:
        return element.decode("utf-8").upper().encode("utf-8")
    except UnicodeDecodeError:
        return element


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            upper = np.array([_upper(e) for e in text.reshape(-1)], dtype=np.object_).reshape(text.shape)
            length = np.array([len(e) for e in text.reshape(-1)], dtype=np.int32).reshape(text.shape)
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("UPPER", upper), pb_utils.Tensor("LENGTH", length)])
            )
        return responses
