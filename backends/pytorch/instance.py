"""One instance of a PyTorch model: a module on one device, running batches of requests.

`execute` turns each batch into as few forward() calls as it can (see request_batch.py), runs
them under `torch.inference_mode` on the instance's device and stream, and hands each request
its own rows of the requested outputs. A failure of one forward() call becomes the error of
the requests in that call alone; nothing escapes `execute`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from modelgate.backends.base import ComputeTimings, ExecuteResult, InstanceSpec, ModelInstance
from modelgate.backends.pytorch.batch_staging import BatchStaging
from modelgate.backends.pytorch.input_binding import bind_inputs
from modelgate.backends.pytorch.instance_device import instance_device
from modelgate.backends.pytorch.loaded_module import ModuleArgument, load_module
from modelgate.backends.pytorch.model_file import find_model_file
from modelgate.backends.pytorch.output_binding import OutputBinding
from modelgate.backends.pytorch.output_tensors import host_array, output_specs, request_arrays
from modelgate.backends.pytorch.request_batch import RequestBatch, plan_batches
from modelgate.backends.pytorch.tensor_dtypes import is_lossless, to_torch, torch_dtype
from modelgate.core.errors import ConfigError, ModelExecutionError, ModelgateError
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor

logger = logging.getLogger(__name__)


class PyTorchInstance(ModelInstance):
    def __init__(self, spec: InstanceSpec):
        self.spec = spec
        self.version = str(spec.model_version)
        source = f"model '{spec.model_name}' version {spec.model_version}"
        _reject_strings(spec.config, source)
        self.device = instance_device(spec)
        with self.device.activate():
            self.module = load_module(find_model_file(spec.config, spec.version_dir), self.device.device)
        self.input_binding = bind_inputs(spec.config, self.module.arguments, source)
        self.input_casts = _input_casts(spec.config, self.module.arguments, self.input_binding.argument_of, source)
        self.outputs = output_specs(spec.config)
        self.output_binding = OutputBinding(spec.config)
        self.is_batched = spec.config.max_batch_size > 0
        self.staging = BatchStaging(pinned=self.device.is_cuda)

    def execute(self, requests: list[InferRequest]) -> ExecuteResult:
        timings = ComputeTimings()
        responses = []
        for batch in plan_batches(requests, self.is_batched):
            responses.extend(self._execute_batch(batch, timings))
        return ExecuteResult(responses, timings)

    def unload(self) -> None:
        self.device.synchronize()
        del self.module
        if self.device.is_cuda:
            torch.cuda.empty_cache()

    def _execute_batch(self, batch: RequestBatch, timings: ComputeTimings) -> list[InferResponse]:
        try:
            with self.device.activate(), torch.inference_mode():
                arrays = self._run(batch, timings)
        except Exception as exc:  # the module (or what it returned) failed: fail these requests, keep serving
            error = self._error(exc)
            logger.warning("%s (%d request(s) failed)", error.message, len(batch.requests))
            return [InferResponse(r.model_name, self.version, id=r.id, error=error) for r in batch.requests]
        return [self._response(request, arrays, k) for k, request in enumerate(batch.requests)]

    def _run(self, batch: RequestBatch, timings: ComputeTimings) -> dict[str, list[np.ndarray]]:
        """{output name: each request's array} for the outputs any request of `batch` asked for."""
        started = time.perf_counter_ns()
        arguments = self._device_arguments(batch)
        self.device.synchronize()
        copied_in = time.perf_counter_ns()
        result = self.module.run(arguments)
        self.device.synchronize()
        inferred = time.perf_counter_ns()
        tensors = self.output_binding.select(result, self._wanted_outputs(batch.requests))
        tensors = self.staging.unshare_outputs(tensors)
        arrays = {
            name: request_arrays(host_array(tensor, self.outputs[name], batch), self.outputs[name], batch)
            for name, tensor in tensors.items()
        }
        finished = time.perf_counter_ns()
        timings.input_ns += copied_in - started
        timings.infer_ns += inferred - copied_in
        timings.output_ns += finished - inferred
        return arrays

    def _device_arguments(self, batch: RequestBatch) -> dict[str, torch.Tensor]:
        arguments = {}
        for name, parts in batch.input_parts().items():
            if isinstance(parts[0], torch.Tensor):  # read from CUDA shared memory: joined on its GPU
                self.device.wait_for_default_stream(parts[0].device)
                tensor = parts[0] if len(parts) == 1 else torch.cat(parts)
            # Parts to join, or one read-only array (which torch would copy): written into the staging buffer.
            elif batch.is_batched and (len(parts) > 1 or not parts[0].flags.writeable):
                tensor = self.staging.stage(name, parts)
            else:
                tensor = to_torch(parts[0])
            if name in self.input_casts:
                tensor = tensor.to(self.input_casts[name])
            arguments[self.input_binding.argument_of[name]] = tensor.to(self.device.device, non_blocking=True)
        return arguments

    def _wanted_outputs(self, requests: list[InferRequest]) -> list[str]:
        asked = {name for r in requests for name in (r.requested_output_names or self.outputs)}
        return [name for name in self.outputs if name in asked]

    def _response(self, request: InferRequest, arrays: dict[str, list[np.ndarray]], k: int) -> InferResponse:
        names = request.requested_output_names or list(self.outputs)
        outputs = [
            InferTensor(name, self.outputs[name].wire_name, tuple(arrays[name][k].shape), arrays[name][k])
            for name in names
        ]
        return InferResponse(request.model_name, self.version, id=request.id, outputs=outputs)

    def _error(self, exc: Exception) -> ModelgateError:
        where = f"model '{self.spec.model_name}'"
        if isinstance(exc, ModelgateError):
            return type(exc)(f"{where}: {exc.message}")
        return ModelExecutionError(f"{where} raised {type(exc).__name__}: {exc}")


def _reject_strings(config: ModelConfig, source: str) -> None:
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for index, tensor in enumerate(tensors):
            if tensor.data_type == DataType.TYPE_STRING:
                raise ConfigError(
                    source, f"{kind}[{index}].data_type", "TYPE_STRING is not supported by the pytorch backend"
                )


def _input_casts(
    config: ModelConfig, arguments: list[ModuleArgument], argument_of: dict[str, str], source: str
) -> dict[str, torch.dtype]:
    """Inputs whose configured type differs from what a torch.export program takes: cast when lossless."""
    takes = {a.name: a.dtype for a in arguments if a.dtype is not None}
    casts = {}
    for index, tensor in enumerate(config.input):
        wanted = takes.get(argument_of[tensor.name])
        given = torch_dtype(DataType.Name(tensor.data_type))
        if wanted is None or wanted == given:
            continue
        if not is_lossless(given, wanted):
            raise ConfigError(
                source,
                f"input[{index}].data_type",
                f"is {DataType.Name(tensor.data_type)} but the exported program takes {wanted} for argument "
                f"'{argument_of[tensor.name]}'; declare the matching type",
            )
        casts[tensor.name] = wanted
    return casts
