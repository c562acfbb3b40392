"""OUTPUT = INPUT + START for each [1, 1] request: the START control (0 or 1) is the only thing added, so a wrong
or missing control shows in the output. Padding rows (READY 0) answer 0; the batcher drops them anyway."""

import numpy as np
import triton_python_backend_utils as pb_utils


def _control(request, name: str) -> int:
    return int(pb_utils.get_input_tensor_by_name(request, name).as_numpy().item())


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()  # [1, 1]
            output = (value + _control(request, "START")) * _control(request, "READY")
            tensor = pb_utils.Tensor("OUTPUT", output.astype(np.int32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
