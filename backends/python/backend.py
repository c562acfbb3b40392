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
from pathlib import Path
from typing import Awaitable, Callable

from tritonclient.grpc.model_config_pb2 import ModelConfig

import backends.python.triton_python_backend_utils as pb_utils
from backends.base import Backend, ComputeTimings, ExecuteResult, InstanceSpec, ModelInstance
from backends.python.model_module import import_model_file
from backends.python.request_conversion import (
    from_pb_request_for_bls,
    from_pb_response,
    to_pb_request,
    to_pb_response_for_bls,
)
from server.errors import ModelExecutionError, ModelgateError
from server.inference_types import InferRequest, InferResponse
from server.repository.config_files import parse_config_mapping
from server.repository.config_json import config_to_dict

logger = logging.getLogger(__name__)

DEFAULT_MODEL_FILENAME = "model.py"


class PythonBackend(Backend):
    name = "python"

    def default_model_filename(self) -> str:
        return DEFAULT_MODEL_FILENAME

    def auto_complete_config(self, config: ModelConfig, model_dir: Path, version_dir: Path | None) -> ModelConfig:
        """Run the model class's static `auto_complete_config`, if it has one."""
        if version_dir is None:
            return config
        module = import_model_file(version_dir / _model_filename(config), config.name)
        model_class = module.TritonPythonModel
        if not hasattr(model_class, "auto_complete_config"):
            return config
        wrapped = pb_utils.ModelConfig(json.dumps(config_to_dict(config)))
        completed = model_class.auto_complete_config(wrapped)
        if not isinstance(completed, pb_utils.ModelConfig):
            raise TypeError("auto_complete_config must return the ModelConfig object it was given")
        return parse_config_mapping(completed.as_dict(), f"{model_dir}/auto_complete_config")

    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
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
        self.is_decoupled = spec.config.model_transaction_policy.decoupled
        if hasattr(self.model, "initialize"):
            self._run(self.model.initialize(_initialize_args(spec)))

    def execute(self, requests: list[InferRequest]) -> ExecuteResult:
        version = str(self.spec.model_version)
        started = time.perf_counter_ns()
        pb_requests = [to_pb_request(r, self.spec.config, version) for r in requests]
        converted = time.perf_counter_ns()
        try:
            pb_responses = self._run(self.model.execute(pb_requests))
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
                self._run(self.model.finalize())
        finally:
            if self._loop is not None:
                self._loop.close()

    def _responses(self, pb_responses, requests: list[InferRequest], version: str) -> list[InferResponse]:
        if not isinstance(pb_responses, (list, tuple)) or len(pb_responses) != len(requests):
            got = len(pb_responses) if isinstance(pb_responses, (list, tuple)) else type(pb_responses).__name__
            raise ModelExecutionError(f"execute must return one response per request: {len(requests)} requests, got {got}")
        return [from_pb_response(p, r, self.spec.config, version) for p, r in zip(pb_responses, requests)]

    def _run(self, result):
        """Await `result` on the instance's private loop if the model returned a coroutine."""
        if not inspect.isawaitable(result):
            return result
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(result)


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


BlsRunner = Callable[[pb_utils.InferenceRequest], pb_utils.InferenceResponse]

# Servers of this process that models' `exec()` may reach, newest last (tests run several).
_installed_bls_runners: list[BlsRunner] = []


def install_bls_runner(
    infer: Callable[[InferRequest], Awaitable[InferResponse]], loop: asyncio.AbstractEventLoop
) -> BlsRunner:
    """Let models call other models with `InferenceRequest.exec()` through the server's dataplane.

    `exec()` runs on an instance thread and blocks it until the server loop has the answer.
    Returns the runner, for `uninstall_bls_runner` once that server has stopped.
    """

    def run(pb_request: pb_utils.InferenceRequest) -> pb_utils.InferenceResponse:
        try:
            request = from_pb_request_for_bls(pb_request)
            response = asyncio.run_coroutine_threadsafe(infer(request), loop).result()
        except ModelgateError as exc:
            response = InferResponse(pb_request.model_name(), "", error=exc)
        return to_pb_response_for_bls(response)

    _installed_bls_runners.append(run)
    pb_utils._bls_runner = run
    return run


def uninstall_bls_runner(runner: BlsRunner) -> None:
    """A stopped server's loop answers nothing: hand `exec()` back to the newest running server.

    Without this, a model's `exec()` would wait forever on the loop of a server that stopped.
    """
    if runner in _installed_bls_runners:
        _installed_bls_runners.remove(runner)
    pb_utils._bls_runner = _installed_bls_runners[-1] if _installed_bls_runners else None
