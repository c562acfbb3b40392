"""The `llm` backend: a decoupled model served by an engine in its own process.

`execute` only parses, validates and hands requests to the engine; responses flow back
from the engine client's reader thread onto each request's response stream. A client that
cancels aborts its request in the engine at once, which frees its KV blocks.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from pydantic import ValidationError
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup

from modelgate.backends.base import Backend, ExecuteResult, InstanceSpec, ModelInstance
from modelgate.backends.llm import llm_metrics
from modelgate.backends.llm.engine_client import EngineClient
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import RequestOutput, StepOutputs
from modelgate.backends.llm.generation_request import GenerationRequest, parse_generation_request
from modelgate.backends.llm.llm_responses import OUTPUT_NAMES, build_response, logprobs_json
from modelgate.backends.llm.tokenizer import TextTokenizer
from modelgate.backends.llm.trace_recorder import TRACE_PARAMETERS, trace_recorder
from modelgate.core.errors import ConfigError, ModelExecutionError, ModelgateError, drop_traceback
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream

logger = logging.getLogger(__name__)

_INPUTS = [
    ("text_input", DataType.TYPE_STRING),
    ("chat_messages", DataType.TYPE_STRING),
    ("stream", DataType.TYPE_BOOL),
    ("sampling_parameters", DataType.TYPE_STRING),
    ("exclude_input_in_output", DataType.TYPE_BOOL),
]
_OUTPUTS = [
    ("text_output", DataType.TYPE_STRING),
    ("finish_reason", DataType.TYPE_STRING),
    ("num_input_tokens", DataType.TYPE_INT32),
    ("num_output_tokens", DataType.TYPE_INT32),
    ("logprobs", DataType.TYPE_STRING),
]


class LLMBackend(Backend):
    name = "llm"

    def auto_complete_config(self, config: ModelConfig, model_dir, version_dir) -> ModelConfig:
        """Decoupled, unbatched (the engine batches), with the standard LLM inputs and outputs."""
        config.model_transaction_policy.decoupled = True
        if not config.input:
            for name, data_type in _INPUTS:
                config.input.add(name=name, data_type=data_type, dims=[1], optional=True)
        if not config.output:
            for name, data_type in _OUTPUTS:
                config.output.add(name=name, data_type=data_type, dims=[-1])
        if not config.instance_group:
            kind = ModelInstanceGroup.KIND_GPU if _has_cuda() else ModelInstanceGroup.KIND_CPU
            config.instance_group.add(count=1, kind=kind)
        return config

    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
        return LLMModelInstance(spec)


@dataclass
class _ActiveRequest:
    stream: ResponseStream
    request: InferRequest
    generation: GenerationRequest
    wanted: list[str]
    arrival: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    last_token_time: float | None = None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
    unsent: int = 0  # tokens not yet in a streamed response (their text may be held back)


class LLMModelInstance(ModelInstance):
    def __init__(self, spec: InstanceSpec):
        self.spec = spec
        self.labels = (spec.model_name, str(spec.model_version))
        self.engine_config = _engine_config(spec)
        parameters = {key: value.string_value for key, value in spec.config.parameters.items()}
        self.trace = trace_recorder(spec.model_name, str(spec.model_version), parameters)  # None: tracing off
        self.tokenizer = TextTokenizer(spec.version_dir)
        self._active: dict[str, _ActiveRequest] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self.engine = EngineClient(spec.version_dir, self.engine_config, self._on_outputs, self._on_engine_exit)
        self.max_model_len = self.engine.info.max_model_len
        llm_metrics.publish_zeros(self.labels)

    def execute(self, requests: list[InferRequest]) -> ExecuteResult:
        """One response per request: an error for a request refused up front, else an empty one."""
        version = str(self.spec.model_version)
        responses = []
        for request in requests:
            response = InferResponse(request.model_name, version, id=request.id)
            try:
                self._submit(request)
            except ModelgateError as exc:
                response.error = drop_traceback(exc)  # a value now: this frame holds `response`, a cycle
            responses.append(response)
        return ExecuteResult(responses)

    def unload(self) -> None:
        self.engine.shutdown()
        with self._lock:
            active, self._active = self._active, {}
        for state in active.values():
            state.stream.fail(self._error_response(state, "the model was unloaded"))
        llm_metrics.forget(self.labels)
        if self.trace is not None:
            self.trace.close()

    def _submit(self, request: InferRequest) -> None:
        if request.response_stream is None:
            raise ModelExecutionError("LLM models are decoupled: call them through a streaming API")
        if not self.engine.is_alive:
            raise ModelExecutionError(f"the engine of model '{self.spec.model_name}' is not running")
        engine_id = f"{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        generation = parse_generation_request(request, engine_id, self.tokenizer, self.max_model_len)
        wanted = request.requested_output_names or list(OUTPUT_NAMES)
        with self._lock:
            self._active[engine_id] = _ActiveRequest(request.response_stream, request, generation, wanted)
        self.engine.add(generation.engine_request)
        # After `add`: a stream cancelled already (client gone while queued) aborts at once,
        # and the abort must reach the engine after the request it aborts.
        request.response_stream.on_cancel(lambda: self.engine.abort(engine_id))

    def _on_outputs(self, step: StepOutputs) -> None:
        """Runs on the engine client's reader thread."""
        llm_metrics.record_engine_stats(self.labels, step.stats)
        now = time.monotonic()
        for output in step.outputs:
            with self._lock:
                state = self._active.get(output.request_id)
                if state is not None and output.finished:
                    del self._active[output.request_id]
            if state is not None:
                self._deliver(state, output, now)

    def _on_engine_exit(self) -> None:
        """Runs on the engine client's reader thread once the engine's pipe closed."""
        self._fail_all("the LLM engine process exited")

    def _deliver(self, state: _ActiveRequest, output: RequestOutput, now: float) -> None:
        self._observe(state, output, now)
        state.text += output.new_text
        state.token_ids.extend(output.new_token_ids)
        state.logprobs.extend(output.logprobs)
        finished = output.finished
        if state.stream.is_cancelled():
            return
        state.unsent += len(output.new_token_ids)
        if state.generation.stream:
            if output.new_text or finished:
                first = len(state.token_ids) - state.unsent
                response = self._response(
                    state, output, output.new_text, state.token_ids[first:], state.logprobs[first:]
                )
                state.unsent = 0
                state.stream.send(response, is_final=finished)
        elif finished:
            text = state.text if state.generation.exclude_input_in_output else state.generation.prompt_text + state.text
            state.stream.send(self._response(state, output, text, state.token_ids, state.logprobs), is_final=True)

    def _response(self, state: _ActiveRequest, output: RequestOutput, text: str, token_ids, logprobs) -> InferResponse:
        values = {
            "text_output": text,
            "finish_reason": output.finish_reason or "",
            "num_input_tokens": output.num_prompt_tokens,
            "num_output_tokens": output.num_output_tokens,
            "logprobs": logprobs_json(self.tokenizer, token_ids, logprobs) if logprobs else "[]",
        }
        return build_response(
            self.spec.model_name, str(self.spec.model_version), state.request.id, state.wanted, values
        )

    def _observe(self, state: _ActiveRequest, output: RequestOutput, now: float) -> None:
        labels = self.labels
        new_tokens = len(output.new_token_ids)
        if output.queue_time_s is not None:
            llm_metrics.QUEUE_TIME.labels(*labels).observe(output.queue_time_s)
        if new_tokens:
            if state.last_token_time is None:
                state.first_token_time = now
                llm_metrics.TIME_TO_FIRST_TOKEN.labels(*labels).observe(now - state.arrival)
            else:
                llm_metrics.INTER_TOKEN_LATENCY.labels(*labels).observe((now - state.last_token_time) / new_tokens)
            state.last_token_time = now
            llm_metrics.GENERATION_TOKENS.labels(*labels).inc(new_tokens)
        if output.finished:
            llm_metrics.END_TO_END_LATENCY.labels(*labels).observe(now - state.arrival)
            llm_metrics.PROMPT_TOKENS.labels(*labels).inc(output.num_prompt_tokens)
            if self.trace is not None:  # on the reader thread: file writes never block the event loop
                self.trace.record(state.arrival, state.first_token_time, now, output)

    def _fail_all(self, message: str) -> None:
        with self._lock:
            active, self._active = self._active, {}
        for state in active.values():
            state.stream.fail(self._error_response(state, message))

    def _error_response(self, state: _ActiveRequest, message: str) -> InferResponse:
        error = ModelExecutionError(message)
        return InferResponse(self.spec.model_name, str(self.spec.model_version), id=state.request.id, error=error)


def _engine_config(spec: InstanceSpec) -> EngineConfig:
    """EngineConfig from the config's parameters; device from the instance group."""
    settings = {key: value.string_value for key, value in spec.config.parameters.items() if key not in TRACE_PARAMETERS}
    if "device" not in settings:
        settings["device"] = f"cuda:{spec.device_id}" if spec.kind == "GPU" else "cpu"
    try:
        return EngineConfig.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"model '{spec.model_name}' config", "parameters", problems) from None


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
