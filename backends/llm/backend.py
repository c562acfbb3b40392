"""The `llm` backend: a decoupled model served by an engine in its own process.

`execute` only parses, validates and hands requests to the engine; responses flow back
from the engine client's reader thread onto each request's response stream. A client that
cancels aborts its request in the engine at once, which frees its KV blocks. An engine that dies is
started again (engine_supervisor.py); meanwhile the model is UNAVAILABLE.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup

from modelgate.backends.base import Backend, ExecuteResult, InstanceSpec, ModelInstance
from modelgate.backends.llm import llm_metrics
from modelgate.backends.llm.active_request import ActiveRequest
from modelgate.backends.llm.attached_engine import AttachedEngine
from modelgate.backends.llm.batched_histogram import observe_all
from modelgate.backends.llm.engine_client import EngineClient
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import EncodedStep, RequestOutput
from modelgate.backends.llm.engine_supervisor import EngineSupervisor
from modelgate.backends.llm.generation_request import parse_generation_request
from modelgate.backends.llm.llm_responses import OUTPUT_NAMES, build_response, logprobs_json
from modelgate.backends.llm.prompt_token_ids import INPUT_IDS
from modelgate.backends.llm.sampling_inputs import SAMPLING_INPUTS
from modelgate.backends.llm.tokenizer import TextTokenizer
from modelgate.backends.llm.trace_recorder import TRACE_PARAMETERS, trace_recorder
from modelgate.core.errors import ConfigError, ModelExecutionError, ModelgateError, UnavailableError, drop_traceback
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.process_sharing import process_sharing

logger = logging.getLogger(__name__)

# Parameters the server reads (its memory ledger), not the engine; `memory_budget_bytes` comes from the ledger.
SERVER_PARAMETERS = ("gpu_memory_bytes", "cpu_memory_bytes", "memory_budget_bytes")

# vLLM's Triton-backend inputs, the prompt as token ids (prompt_token_ids.py, the one of variable length), then
# the tensorrtllm backend's scalar sampling inputs (sampling_inputs.py).
_INPUTS = [
    ("text_input", DataType.TYPE_STRING),
    (INPUT_IDS, DataType.TYPE_INT32),
    ("chat_messages", DataType.TYPE_STRING),
    ("stream", DataType.TYPE_BOOL),
    ("sampling_parameters", DataType.TYPE_STRING),
    ("exclude_input_in_output", DataType.TYPE_BOOL),
    *((sampling_input.name, sampling_input.data_type) for sampling_input in SAMPLING_INPUTS),
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
        """Decoupled, unbatched (the engine batches), with the standard LLM inputs (all optional) and outputs."""
        config.model_transaction_policy.decoupled = True
        if not config.input:
            for name, data_type in _INPUTS:
                config.input.add(name=name, data_type=data_type, dims=[-1 if name == INPUT_IDS else 1], optional=True)
        if not config.output:
            for name, data_type in _OUTPUTS:
                config.output.add(name=name, data_type=data_type, dims=[-1])
        if not config.instance_group:
            kind = ModelInstanceGroup.KIND_GPU if _has_cuda() else ModelInstanceGroup.KIND_CPU
            config.instance_group.add(count=1, kind=kind)
        return config

    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
        return LLMModelInstance(spec)

    def attach_instance(self, spec: InstanceSpec, address: str) -> ModelInstance:
        return LLMModelInstance(spec, attach_to=address)


class LLMModelInstance(ModelInstance):
    """One engine's requests. Normally the instance owns its engine process (and, when the server shares its
    processes with frontend workers, publishes where the engine takes them: `shared_address`); in a frontend
    worker it is built with `attach_to`, that address, and sends its requests to the server's engine."""

    def __init__(self, spec: InstanceSpec, attach_to: str | None = None):
        self.spec = spec
        self.labels = (spec.model_name, str(spec.model_version))
        self._version = self.labels[1]
        self.engine_config = _engine_config(spec)
        parameters = {key: value.string_value for key, value in spec.config.parameters.items()}
        self.trace = trace_recorder(spec.model_name, str(spec.model_version), parameters)  # None: tracing off
        self._trace_writer = ThreadPoolExecutor(1, thread_name_prefix=f"llm-trace-{spec.model_name}")
        self.tokenizer = TextTokenizer(spec.version_dir)
        self._active: dict[str, ActiveRequest] = {}
        self._unloaded = False
        self._lock = threading.Lock()
        self._ids = itertools.count()
        llm_metrics.publish_zeros(self.labels)
        self.series = llm_metrics.VersionSeries(self.labels)
        # The engine's gauges and counters are the owner's to record: a worker recording them too would count
        # them twice once the server adds the workers' metrics to its own.
        self._records_engine_stats = attach_to is None
        sharing = process_sharing()
        self.engine_address = sharing.new_address() if sharing is not None and attach_to is None else None
        self._engine_authkey = sharing.authkey if self.engine_address is not None else None  # kept for restarts
        if attach_to is None:
            self.engines = EngineSupervisor(
                spec.model_name, self._start_engine, self._on_engine_down, self._on_engine_up
            )
        elif sharing is None:
            raise UnavailableError("this process was given no key to attach to an LLM engine with")
        else:
            self.engines = AttachedEngine(
                spec.model_name, attach_to, sharing.authkey, self._on_step, self._on_engine_down, self._on_reattached
            )
        self.max_model_len = self.engines.client.info.max_model_len

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
        """Idempotent: a second call finds nothing left to do."""
        self.engines.shutdown()
        with self._lock:
            active, self._active = self._active, {}
            if self._unloaded:
                return
            self._unloaded = True
        for state in active.values():
            state.stream.fail(self._error_response(state, "the model was unloaded"))
        llm_metrics.forget(self.labels)
        self._trace_writer.shutdown(wait=True)  # the records of finished requests are written before the file closes
        if self.trace is not None:
            self.trace.close()

    @property
    def shared_address(self) -> str | None:
        return self.engine_address if self.engines.client is not None else None

    @property
    def is_serving(self) -> bool:
        return self.engines.client is not None

    def _submit(self, request: InferRequest) -> None:
        if request.response_stream is None:
            raise ModelExecutionError("LLM models are decoupled: call them through a streaming API")
        engine = self.engines.client
        if engine is None or not engine.is_alive:
            raise UnavailableError(
                self.engines.down_reason or f"the LLM engine of model '{self.spec.model_name}' is down"
            )
        engine_id = f"{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        generation = parse_generation_request(request, engine_id, self.tokenizer, self.max_model_len)
        wanted = request.requested_output_names or list(OUTPUT_NAMES)
        wants_all = wanted == list(OUTPUT_NAMES)
        is_plain_stream = generation.stream and request.can_take_output_values and wants_all
        state = ActiveRequest(request.response_stream, request, generation, wanted, wants_all, is_plain_stream)
        with self._lock:
            self._active[engine_id] = state
        try:
            engine.add(generation.engine_request)
        except OSError:  # the engine died just now: its reader reports it and a restart begins
            with self._lock:
                self._active.pop(engine_id, None)
            raise UnavailableError(f"the LLM engine of model '{self.spec.model_name}' stopped; restarting it") from None
        # After `add`: a stream cancelled already (client gone while queued) aborts at once,
        # and the abort must reach the engine after the request it aborts.
        request.response_stream.on_cancel(lambda: engine.abort(engine_id))

    def _on_step(self, step: EncodedStep) -> None:
        """On the engine client's reader thread: a step's outputs go to the event loop in one hand-off, where
        the streams are read (one wake-up per step, rather than one per token of every stream), or are handled
        here where no loop was lent (tests without a server)."""
        loop = self.spec.event_loop
        if loop is None or loop.is_closed():
            self._on_outputs(step)
        else:
            loop.call_soon_threadsafe(self._on_outputs, step)

    def _on_outputs(self, encoded: EncodedStep) -> None:
        """Runs on the event loop (or the reader thread, see _on_step)."""
        step = encoded.decode()
        if self._records_engine_stats:
            self.series.record_engine_stats(step.stats)
        now = time.monotonic()
        with self._lock:  # once per step: execute adds requests from the instance thread
            states = [self._active.get(output.request_id) for output in step.outputs]
            for state, output in zip(states, step.outputs):
                if state is not None and output.finished:
                    del self._active[output.request_id]
        new_tokens = 0
        latencies: list[float] = []  # the step's inter-token latencies, observed together (batched_histogram.py)
        deliver, deliver_token = self._deliver, self._deliver_token
        for state, output in zip(states, step.outputs):
            if state is None:
                continue
            # Nearly every output of a streamed request (every token of every stream) takes _deliver_token; tested
            # here rather than in _deliver, a Python call less per token.
            if state.is_plain_stream and output.new_text and state.last_token_time is not None:
                if not output.finished and output.queue_time_s is None and not state.token_ids:
                    new_tokens += deliver_token(state, output, now, latencies)
                    continue
            new_tokens += deliver(state, output, now, latencies)
        if latencies:
            observe_all(self.series.inter_token_latency, latencies)
        if new_tokens:
            self.series.generation_tokens.inc(new_tokens)

    def _start_engine(self, on_exit) -> EngineClient:
        return EngineClient(
            self.spec.version_dir,
            self.engine_config,
            self._on_step,
            on_exit,
            attach_address=self.engine_address,
            authkey=self._engine_authkey,
        )

    def _on_engine_down(self, reason: str) -> None:
        """The engine died (on its reader thread): the model is UNAVAILABLE until it is back, and its requests
        fail. In that order: both reach the event loop through its queue, so a client that hears its request
        failed finds the model unready."""
        self._report_health(reason)
        self._fail_all(reason)
        if self._records_engine_stats:
            self.series.record_engine_down()

    def _on_engine_up(self) -> None:
        llm_metrics.ENGINE_RESTARTS.labels(*self.labels).inc()
        self._report_health(None)

    def _on_reattached(self) -> None:
        """A frontend worker's instance attached to its restarted engine: serving again (the restart itself is
        counted once, by the engine's owner)."""
        self._report_health(None)

    def _report_health(self, reason: str | None) -> None:
        if self.spec.report_health is not None:
            self.spec.report_health(reason)

    def _deliver(self, state: ActiveRequest, output: RequestOutput, now: float, latencies: list[float]) -> int:
        """Hand one output to its request's stream; returns its new tokens. The outputs _deliver_token takes
        (_on_outputs picks them) go there."""
        new_tokens = self._observe(state, output, now, latencies)
        finished = output.finished
        send = state.stream.send
        if finished and self.trace is not None:
            send = self._traced_send(state, output, now)
        if state.generation.stream:
            if state.stream.is_cancelled():
                return new_tokens
            if not output.new_text and not finished:  # text held back (an incomplete character, a stop string)
                state.token_ids.extend(output.new_token_ids)
                state.logprobs.extend(output.logprobs)
                return new_tokens
            token_ids, logprobs = output.new_token_ids, output.logprobs
            if state.token_ids:  # the held-back tokens go out with the text they completed
                token_ids, logprobs = state.token_ids + token_ids, state.logprobs + logprobs
                state.token_ids, state.logprobs = [], []
            self._send(state, send, self._values(output, output.new_text, token_ids, logprobs), finished)
            return new_tokens
        state.text += output.new_text
        state.token_ids.extend(output.new_token_ids)
        state.logprobs.extend(output.logprobs)
        if finished and not state.stream.is_cancelled():
            text = state.text if state.generation.exclude_input_in_output else state.generation.prompt_text + state.text
            self._send(state, send, self._values(output, text, state.token_ids, state.logprobs), True)
        return new_tokens

    def _deliver_token(self, state: ActiveRequest, output: RequestOutput, now: float, latencies: list[float]) -> int:
        """_deliver of nearly every output of a streamed request, every token of every stream, in fewer steps:
        not its first nor its last, with nothing held back, its text complete; what _observe records of it is
        its inter-token latency. The values go to the frontend's values writer at once where it takes them."""
        new_tokens = len(output.new_token_ids)
        if new_tokens:
            latencies.append((now - state.last_token_time) / new_tokens)
            state.last_token_time = now
        values = {
            "text_output": output.new_text,
            "finish_reason": output.finish_reason or "",
            "num_input_tokens": output.num_prompt_tokens,
            "num_output_tokens": output.num_output_tokens,
            "logprobs": logprobs_json(self.tokenizer, output.new_token_ids, output.logprobs)
            if output.logprobs
            else "[]",
        }
        stream = state.stream
        if not stream.try_write_values(values):  # it drops the response if cancelled, as _deliver would
            stream.send(InferResponse(self.spec.model_name, self._version, id=state.request.id, values=values), False)
        return new_tokens

    def _traced_send(self, state: ActiveRequest, output: RequestOutput, now: float):
        """Write the finished request's trace record on the writer thread (file writes never block the event
        loop), and a `send` that hands over the final response once the record is in the file: a client that
        has its last response finds its request in the trace."""
        times = (state.arrival, state.first_token_time, now, state.engine_ttft_s)
        written = self._trace_writer.submit(self.trace.record, *times, output)

        def send(response: InferResponse, is_final: bool) -> None:
            written.add_done_callback(lambda _: state.stream.send(response, is_final=is_final))

        return send

    def _values(self, output: RequestOutput, text: str, token_ids, logprobs) -> dict:
        return {
            "text_output": text,
            "finish_reason": output.finish_reason or "",
            "num_input_tokens": output.num_prompt_tokens,
            "num_output_tokens": output.num_output_tokens,
            "logprobs": logprobs_json(self.tokenizer, token_ids, logprobs) if logprobs else "[]",
        }

    def _send(self, state: ActiveRequest, send, values: dict, is_final: bool) -> None:
        """Send the response holding `values`: a token of a stream first to the frontend's values writer, which
        writes it at once (ResponseStream.try_write_values), else as a response."""
        request = state.request
        if not request.can_take_output_values:
            send(build_response(self.spec.model_name, self._version, request.id, state.wanted, values), is_final)
            return
        if not state.wants_all:  # no tensors to build here nor to read in the frontend
            values = {name: values[name] for name in state.wanted if name in values}
        if is_final or not state.stream.try_write_values(values):
            send(InferResponse(self.spec.model_name, self._version, id=request.id, values=values), is_final)

    def _observe(self, state: ActiveRequest, output: RequestOutput, now: float, latencies: list[float]) -> int:
        """Record the output's latencies (its inter-token latency into `latencies`, which the caller observes once
        per step); returns its new tokens (counted once per step by the caller too)."""
        series = self.series
        new_tokens = len(output.new_token_ids)
        if output.queue_time_s is not None:
            series.queue_time.observe(output.queue_time_s)
        if new_tokens:
            if state.last_token_time is None:
                state.first_token_time = now
                state.engine_ttft_s = output.engine_ttft_s
                series.time_to_first_token.observe(now - state.arrival)
            else:
                latencies.append((now - state.last_token_time) / new_tokens)
            state.last_token_time = now
        if output.finished:
            series.end_to_end_latency.observe(now - state.arrival)
            series.prompt_tokens.inc(output.num_prompt_tokens)
        return new_tokens

    def _fail_all(self, message: str) -> None:
        with self._lock:
            active, self._active = self._active, {}
        for state in active.values():
            state.stream.fail(self._error_response(state, message))

    def _error_response(self, state: ActiveRequest, message: str) -> InferResponse:
        error = UnavailableError(message)
        return InferResponse(self.spec.model_name, str(self.spec.model_version), id=state.request.id, error=error)


def _engine_config(spec: InstanceSpec) -> EngineConfig:
    """EngineConfig from the config's parameters; device from the instance group."""
    settings = {
        key: value.string_value
        for key, value in spec.config.parameters.items()
        if key not in TRACE_PARAMETERS and key not in SERVER_PARAMETERS
    }
    if spec.memory_budget_bytes is not None:
        settings["memory_budget_bytes"] = spec.memory_budget_bytes
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
