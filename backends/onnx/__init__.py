"""The ONNX Runtime backend (`backend: "onnxruntime"`, `platform: "onnxruntime_onnx"`).

backend.py          the Backend: model file, auto-complete, instance creation
graph_signature.py  a model's inputs and outputs as the ONNX graph declares them
graph_config.py     auto-complete of a ModelConfig from the graph signature, and its checks
onnx_types.py       ONNX Runtime type strings <-> ModelConfig data types, and array conversions
session_config.py   the model's `parameters` that steer the session (threads, GPU fallback)
session_factory.py  execution providers for an instance and the InferenceSession itself
ort_run.py          one session run: numpy (or BF16 OrtValues) in, numpy out
batch_tensors.py    requests' inputs concatenated along dim 0, outputs split back
model_instance.py   the instance: execute(requests) with dynamic batches
"""
