"""Triton's simple_sequence, as a python model: each sequence's running sum, kept by correlation ID until END."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()  # [1, 1]
            is_start = pb_utils.get_input_tensor_by_name(request, "START").as_numpy().item() == 1
            is_end = pb_utils.get_input_tensor_by_name(request, "END").as_numpy().item() == 1
            is_ready = pb_utils.get_input_tensor_by_name(request, "READY").as_numpy().item() == 1
            corrid = int(pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy().item())
            if is_ready:
                self.sums[corrid] = (0 if is_start else self.sums.get(corrid, 0)) + int(value.item())
            total = self.sums.get(corrid, 0) if is_ready else 0
            if is_ready and is_end:
                del self.sums[corrid]  # the sequence is over: its correlation ID may be reused
            # INT32 wraps around as it would in C++ (perf_analyzer sends random 32-bit values).
            output = pb_utils.Tensor("OUTPUT", np.full(value.shape, total, dtype=np.int64).astype(np.int32))
            responses.append(pb_utils.InferenceResponse([output]))
        return responses
