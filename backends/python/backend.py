"""The python backend: runs `TritonPythonModel` classes written for Triton's python backend.

Each instance imports the model file afresh and runs on the thread the scheduler gives it;
`execute` may be a coroutine function, run on a private event loop of the instance.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

import modelgate.backends.python.triton_python_backend_utils as pb_utils
from modelgate.backends.base import Backend, ComputeTimings, ExecuteResult, InstanceSpec, ModelCaller, ModelInstance
from modelgate.backends.python.execution_env import ENV_PARAMETERS
from modelgate.backends.python.model_module import import_model_file
from modelgate.backends.python.request_conversion import (
    from_pb_request_for_bls,
    from_pb_response,
    to_pb_request,
    to_pb_response_for_bls,
)
from modelgate.backends.python.stub_scheduling import PARAMETER as STUB_SCHEDULING
from modelgate.core.config_files import parse_config_mapping
from modelgate.core.config_json import config_to_dict
from modelgate.core.errors import ConfigError, ModelExecutionError, ModelgateError
from modelgate.core.inference_types import InferRequest, InferResponse

logger = logging.getLogger(__name__)

DEFAULT_MODEL_FILENAME = "model.py"


class PythonBackend(Backend):
    name = "python"

    def default_model_filename(self) -> str:
        return DEFAULT_MODEL_FILENAME

    def auto_complete_config(self, config: ModelConfig, model_dir: Path, version_dir: Path | None) -> ModelConfig:
        """Run the model class's static `auto_complete_config`, if it has one: in a stub process of its own
        unless the model runs on threads (importing a model file may crash, as its execute may)."""
        if version_dir is None:
            return config
        if isolation_of(config, f"{model_dir}/config") == "process":
            from modelgate.backends.python.stub_auto_complete import auto_complete_in_stub

            return auto_complete_in_stub(config, model_dir, version_dir)
        return complete_from_model_class(config, model_dir, version_dir)

    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
        if isolation(spec) == "process":
            from modelgate.backends.python.process_instance import ProcessModelInstance

            return ProcessModelInstance(spec)
        try:
            return PythonModelInstance(spec)
        except Exception:
            raise
        except BaseException as exc:  # SystemExit from a model must not stop the server
            raise RuntimeError(f"{type(exc).__name__} while loading: {exc}") from None


class PythonModelInstance(ModelInstance):
    def __init__(self, spec: InstanceSpec):
        self.spec = spec
        module = import_model_file(spec.version_dir / _model_filename(spec.config), spec.model_name)
        self.model = module.TritonPythonModel()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bls_runner = None if spec.call_model is None else bls_runner(spec.call_model)
        self.is_decoupled = spec.config.model_transaction_policy.decoupled
        if hasattr(self.model, "initialize"):
            self._call_model(self.model.initialize, _initialize_args(spec))

    def execute(self, requests: list[InferRequest]) -> ExecuteResult:
        version = str(self.spec.model_version)
        started = time.perf_counter_ns()
        pb_requests = [to_pb_request(r, self.spec.config, version) for r in requests]
        converted = time.perf_counter_ns()
        try:
            pb_responses = self._call_model(self.model.execute, pb_requests)
            returned = time.perf_counter_ns()
            # A decoupled model answers through each request's response sender, not by returning.
            responses = [] if self.is_decoupled else self._responses(pb_responses, requests, version)
        except BaseException as exc:  # the model's own code failed (even sys.exit): fail this batch, keep serving
            logger.exception("model '%s' execute raised", self.spec.model_name)
            returned = time.perf_counter_ns()
            error = ModelExecutionError(f"model '{self.spec.model_name}' raised {type(exc).__name__}: {exc}")
            responses = [InferResponse(r.model_name, version, id=r.id, error=error) for r in requests]
        finished = time.perf_counter_ns()
        return ExecuteResult(responses, ComputeTimings(converted - started, returned - converted, finished - returned))

    def unload(self) -> None:
        try:
            if hasattr(self.model, "finalize"):
                self._call_model(self.model.finalize)
        finally:
            if self._loop is not None:
                self._loop.close()

    def _responses(self, pb_responses, requests: list[InferRequest], version: str) -> list[InferResponse]:
        if not isinstance(pb_responses, (list, tuple)) or len(pb_responses) != len(requests):
            got = len(pb_responses) if isinstance(pb_responses, (list, tuple)) else type(pb_responses).__name__
            raise ModelExecutionError(
                f"execute must return one response per request: {len(requests)} requests, got {got}"
            )
        return [from_pb_response(p, r, self.spec.config, version) for p, r in zip(pb_responses, requests)]

    def _call_model(self, method, *args):
        """Call into the model's code with this instance's BLS runner bound; await what it returns on the
        instance's private loop if it is a coroutine (its tasks inherit the binding)."""
        token = pb_utils.BLS_RUNNER.set(self._bls_runner)
        try:
            result = method(*args)
            if not inspect.isawaitable(result):
                return result
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(result)
        finally:
            pb_utils.BLS_RUNNER.reset(token)


def complete_from_model_class(config: ModelConfig, model_dir: Path, version_dir: Path) -> ModelConfig:
    """Import the model file here and run its class's `auto_complete_config`, if it has one."""
    module = import_model_file(version_dir / _model_filename(config), config.name)
    model_class = module.TritonPythonModel
    if not hasattr(model_class, "auto_complete_config"):
        return config
    wrapped = pb_utils.ModelConfig(json.dumps(config_to_dict(config)))
    completed = model_class.auto_complete_config(wrapped)
    if not isinstance(completed, pb_utils.ModelConfig):
        raise TypeError("auto_complete_config must return the ModelConfig object it was given")
    return parse_config_mapping(completed.as_dict(), f"{model_dir}/auto_complete_config")


def _model_filename(config: ModelConfig) -> str:
    return config.default_model_filename or DEFAULT_MODEL_FILENAME


def _initialize_args(spec: InstanceSpec) -> dict[str, str]:
    """The `args` dict Triton passes to `initialize`: every value is a string."""
    return {
        "model_config": json.dumps(config_to_dict(spec.config)),
        "model_instance_kind": spec.kind,
        "model_instance_name": spec.instance_name,
        "model_instance_device_id": str(spec.device_id),
        "model_repository": str(spec.model_dir),
        "model_version": str(spec.model_version),
        "model_name": spec.model_name,
    }


def bls_runner(call_model: ModelCaller) -> Callable[[pb_utils.InferenceRequest], pb_utils.InferenceResponse]:
    """`InferenceRequest.exec()` for one instance: the server's caller, in pb_utils' types both ways."""

    def run(pb_request: pb_utils.InferenceRequest) -> pb_utils.InferenceResponse:
        try:
            response = call_model(from_pb_request_for_bls(pb_request))
        except ModelgateError as exc:
            response = InferResponse(pb_request.model_name(), "", error=exc)
        return to_pb_response_for_bls(response)

    return run


ISOLATIONS = ("process", "thread")


def isolation(spec: InstanceSpec) -> str:
    return isolation_of(spec.config, f"{spec.model_dir}/config")


def isolation_of(config: ModelConfig, source: str) -> str:
    """The `isolation` model parameter: `process` (default: the model runs in a stub process of its own) or
    `thread` (on the instance's thread in the server process, for models a user trusts)."""
    parameter = config.parameters.get("isolation")
    value = "process" if parameter is None else parameter.string_value
    if value not in ISOLATIONS:
        raise ConfigError(source, "parameters.isolation", f"'{value}' is not allowed; allowed: process, thread")
    if value == "thread" and "execute_timeout_seconds" in config.parameters:
        raise ConfigError(
            source, "parameters.execute_timeout_seconds", "needs isolation 'process': a thread cannot be stopped"
        )
    if value == "thread" and STUB_SCHEDULING in config.parameters:
        raise ConfigError(
            source, f"parameters.{STUB_SCHEDULING}", "needs isolation 'process': it sets how a stub process is run"
        )
    named_env = [name for name in ENV_PARAMETERS if name in config.parameters]
    if value == "thread" and named_env:
        raise ConfigError(
            source, f"parameters.{named_env[0]}", "needs isolation 'process': a thread runs in the server's interpreter"
        )
    return value
