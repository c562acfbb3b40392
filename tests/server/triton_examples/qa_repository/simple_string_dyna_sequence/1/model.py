"""Each sequence's running sum of INPUT, kept by its string correlation ID from START to END; the END request's
OUTPUT adds int(CORRID). An ID that is not a decimal integer fails that request, as Triton's model does."""

import numpy as np
import triton_python_backend_utils as pb_utils


def _scalar(request, name: str):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy().item()


class TritonPythonModel:
    def initialize(self, args):
        self.sums: dict[bytes, int] = {}

    def execute(self, requests):
        return [self._step(request) for request in requests]

    def _step(self, request):
        corrid = _scalar(request, "CORRID")  # bytes
        try:
            number = int(corrid)
        except ValueError:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"sequence id {corrid!r} is not a decimal integer")
            )
        value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()  # [1, 1]
        start_from = 0 if _scalar(request, "START") else self.sums.get(corrid, 0)
        total = start_from + int(value.item())
        self.sums[corrid] = total
        if _scalar(request, "END"):
            del self.sums[corrid]  # the id may start a new sequence
            total += number
        output = np.full(value.shape, total, dtype=np.int64).astype(np.int32)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", output)])
