"""OUTPUT0 = INPUT0 + INPUT1 and OUTPUT1 = INPUT0 - INPUT1 over INT32 [batch, 16] tensors.

`auto_complete_config` supplies the tensors when a load request's config override leaves them out (Triton's
`simple_*_model_control` examples load `{"max_batch_size": 16}` alone).
"""

import triton_python_backend_utils as pb_utils

_TENSORS = {"input": ("INPUT0", "INPUT1"), "output": ("OUTPUT0", "OUTPUT1")}


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        config = auto_complete_model_config.as_dict()
        for kind, names in _TENSORS.items():
            present = {tensor["name"] for tensor in config.get(kind, [])}
            for name in names:
                if name not in present:
                    tensor = {"name": name, "data_type": "TYPE_INT32", "dims": [16]}
                    getattr(auto_complete_model_config, f"add_{kind}")(tensor)
        return auto_complete_model_config

    def execute(self, requests):
        responses = []
        for request in requests:
            in0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            outputs = [pb_utils.Tensor("OUTPUT0", in0 + in1), pb_utils.Tensor("OUTPUT1", in0 - in1)]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
