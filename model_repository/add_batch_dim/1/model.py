"""Y = X with a leading batch dimension of one ([n] -> [1, n]), a view of X's data."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()  # [n]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x[None, :])]))  # [1, n]
        return responses
