"""An ONNX model instance: one InferenceSession, run once per dynamic batch.

`execute(requests)`: each request's inputs are converted on their own (a request whose
strings are not UTF-8 fails alone); when the model batches (max_batch_size > 0) the rest
are joined along dim 0 and run once, and each output is split back by batch size. The
session computes only the outputs some request of the batch asked for; each response
carries its own request's outputs. A failed run fails the requests of that run with a
ModelExecutionError; nothing escapes `execute`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tritonclient.grpc.model_config_pb2 import DataType

from modelgate.backends.base import ComputeTimings, ExecuteResult, InstanceSpec, ModelInstance
from modelgate.backends.onnx.batch_tensors import Feeds, can_join, join_feeds, split_outputs
from modelgate.backends.onnx.graph_signature import signature_of_session
from modelgate.backends.onnx.onnx_types import from_onnx_strings, to_onnx_strings
from modelgate.backends.onnx.ort_run import run_session
from modelgate.backends.onnx.session_config import SessionConfig
from modelgate.backends.onnx.session_factory import create_session
from modelgate.core.errors import ModelExecutionError, ModelgateError
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor
from modelgate.core.tensors import datatypes

logger = logging.getLogger(__name__)


class OnnxModelInstance(ModelInstance):
    def __init__(self, spec: InstanceSpec, model_path: Path, session_config: SessionConfig):
        self.spec = spec
        self.session = create_session(model_path, spec, session_config)
        self.providers: list[str] = self.session.get_providers()  # what the session really got, CUDA first if any
        signature = signature_of_session(self.session)
        self._string_inputs = {t.name for t in signature.inputs if t.ort_type == "tensor(string)"}
        self._bf16_outputs = {t.name for t in signature.outputs if t.ort_type == "tensor(bfloat16)"}
        config = spec.config
        self._is_batching = config.max_batch_size > 0
        self._output_types = {o.name: datatypes.from_config_name(DataType.Name(o.data_type)) for o in config.output}
        self._version = str(spec.model_version)
        logger.info("model '%s' instance '%s' runs on %s", spec.model_name, spec.instance_name, self.providers)

    def execute(self, requests: list[InferRequest]) -> ExecuteResult:
        timings = ComputeTimings()
        started = time.perf_counter_ns()
        responses: list[InferResponse | None] = [None] * len(requests)
        feeds: dict[int, Feeds] = {}
        for index, request in enumerate(requests):
            try:
                feeds[index] = self._feeds(request)
            except ModelgateError as exc:
                responses[index] = self._failed(request, exc)
        timings.input_ns += time.perf_counter_ns() - started
        for group in self._run_groups(feeds):
            self._run_group(group, requests, feeds, responses, timings)
        return ExecuteResult(responses, timings)  # every slot is filled: a failed group fills its slots too

    def unload(self) -> None:
        self.session = None  # ONNX Runtime frees the session (and its device memory) with the object

    # -- one run ----------------------------------------------------------------------------

    def _run_group(self, group: list[int], requests, feeds, responses, timings: ComputeTimings) -> None:
        started = time.perf_counter_ns()
        try:
            joined, batch_sizes = join_feeds([feeds[i] for i in group])
            wanted = self._wanted_union([requests[i] for i in group])
            ran = time.perf_counter_ns()
            outputs = run_session(self.session, joined, wanted, self._bf16_outputs)
            returned = time.perf_counter_ns()
            parts = split_outputs(outputs, batch_sizes)
            for index, part in zip(group, parts):
                responses[index] = self._response(requests[index], part)
        except Exception as exc:  # ONNX Runtime's own errors too: they fail this run's requests, not the server
            error = exc if isinstance(exc, ModelgateError) else self._execution_error(exc)
            for index in group:
                responses[index] = self._failed(requests[index], error)
            timings.infer_ns += time.perf_counter_ns() - started
            return
        timings.input_ns += ran - started
        timings.infer_ns += returned - ran
        timings.output_ns += time.perf_counter_ns() - returned

    def _run_groups(self, feeds: dict[int, Feeds]) -> list[list[int]]:
        """One run for the whole batch when the model batches and the shapes allow it, else one per request."""
        indices = sorted(feeds)
        if self._is_batching and len(indices) > 1 and can_join([feeds[i] for i in indices]):
            return [indices]
        return [[i] for i in indices]

    def _wanted_union(self, requests: list[InferRequest]) -> list[str]:
        names = set()
        for request in requests:
            names.update(request.requested_output_names or self._output_types)
        return [name for name in self._output_types if name in names]

    # -- conversions ------------------------------------------------------------------------

    def _feeds(self, request: InferRequest) -> Feeds:
        feeds = {}
        for name, tensor in request.inputs.items():
            data = tensor.data
            if name in self._string_inputs:
                data = to_onnx_strings(data, f"input '{name}' of model '{self.spec.model_name}'")
            feeds[name] = data
        return feeds

    def _response(self, request: InferRequest, outputs: dict[str, np.ndarray]) -> InferResponse:
        wanted = request.requested_output_names or list(self._output_types)
        tensors = [self._output_tensor(name, outputs[name]) for name in wanted]
        return InferResponse(request.model_name, self._version, id=request.id, outputs=tensors)

    def _output_tensor(self, name: str, data: np.ndarray) -> InferTensor:
        datatype = self._output_types[name]
        if datatype.is_bytes:
            data = from_onnx_strings(data)
        elif data.dtype != datatype.numpy_dtype:
            raise ModelExecutionError(
                f"model '{self.spec.model_name}' returned output '{name}' as {data.dtype}, "
                f"but its configuration declares {datatype.wire_name}"
            )
        return InferTensor(name, datatype.wire_name, tuple(int(d) for d in data.shape), data)

    def _failed(self, request: InferRequest, error: ModelgateError) -> InferResponse:
        return InferResponse(request.model_name, self._version, id=request.id, error=error)

    def _execution_error(self, exc: Exception) -> ModelExecutionError:
        logger.warning("model '%s' run failed: %s", self.spec.model_name, exc)
        return ModelExecutionError(f"model '{self.spec.model_name}' (ONNX Runtime) failed: {type(exc).__name__}: {exc}")
