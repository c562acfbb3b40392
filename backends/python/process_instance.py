"""A python-model instance whose code runs in a stub process: a crash, a hang or a leak costs that model only.

`execute` sends the batch to the stub and waits for its answer on the instance's thread (the scheduler's
contract is unchanged); `submit` sends a small one from the event loop. Where the server lends its event loop,
the stub's frames are read there: a request's answer reaches the task awaiting it with no thread between them.
Decoupled responses come back as the model sends them and go onto each request's
response stream; a cancelled stream is forwarded so the model sees `is_cancelled()`; BLS requests from the
model run through the server's `call_model` on a small pool of threads.

When the stub dies (exit, signal, out of memory, or killed because `execute` overran
`execute_timeout_seconds`), the requests in flight fail with an error that names the model, and a new stub is
started with back-off: up to MAX_START_ATTEMPTS tries in a row, each counted in
`modelgate_python_stub_restarts_total`. Requests that arrive meanwhile get UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from prometheus_client import Counter

from modelgate.backends.base import ComputeTimings, ExecuteResult, InstanceLoadError, InstanceSpec, ModelInstance
from modelgate.backends.python import shm_tensors
from modelgate.backends.python.custom_metrics import MetricError, custom_metric_store
from modelgate.backends.python.execution_env import stub_interpreter
from modelgate.backends.python.stub_batches import (
    LOOP_IN_FLIGHT_MAX_BYTES,
    LOOP_SUBMIT_MAX_BYTES,
    PIPELINE_DEPTH,
    PendingBatch,
    payload_bytes,
)
from modelgate.backends.python.stub_handle import StubHandle, StubStartError, stopped_while_loading
from modelgate.backends.python.stub_messages import (
    BlsCall,
    BlsReturn,
    Cancel,
    Execute,
    ExecuteDone,
    Finalize,
    Finalized,
    MetricCall,
    MetricReturn,
    StreamItem,
    StubFailed,
    StubInit,
    StubReady,
    encode,
    infer_request,
    infer_response,
    wire_request,
    wire_response,
)
from modelgate.backends.python.stub_scheduling import stub_scheduling
from modelgate.core.backend_metrics import BACKEND_METRICS
from modelgate.core.errors import ConfigError, ModelExecutionError, ModelgateError, UnavailableError
from modelgate.core.inference_types import InferRequest, InferResponse

logger = logging.getLogger(__name__)

MAX_START_ATTEMPTS = 5
START_TIMEOUT_S = 300.0  # imports and initialize of a large model can be slow
FINALIZE_TIMEOUT_S = 30.0
BLS_THREADS = 8

STUB_RESTARTS = Counter(
    "modelgate_python_stub_restarts",
    "Python-model stub processes started again after one stopped",
    ("model", "version"),
    registry=BACKEND_METRICS,
)


class ProcessModelInstance(ModelInstance):
    def __init__(self, spec: InstanceSpec):
        self.spec = spec
        self.is_decoupled = spec.config.model_transaction_policy.decoupled
        self._timeout_s = execute_timeout_s(spec)
        self._scheduling = stub_scheduling(spec.config, f"{spec.model_dir}/config")
        self._interpreter = stub_interpreter(spec.config, spec.model_dir)  # checked, unpacked once; restarts reuse it
        self._labels = (spec.model_name, str(spec.model_version))
        self._lock = threading.Lock()
        self._batch_ids = itertools.count()
        self._keys = itertools.count()
        self._batches: dict[int, PendingBatch] = {}
        self._in_flight_bytes = 0  # frames of the batches in _batches
        self._streams: dict = {}
        self._finalized = threading.Event()
        self._is_closing = False
        self._unavailable = ""
        self._bls_pool = ThreadPoolExecutor(BLS_THREADS, thread_name_prefix=f"bls-{spec.instance_name}")
        STUB_RESTARTS.labels(*self._labels)
        self._handle: StubHandle | None = None
        try:
            self._handle = self._start()
        except StubStartError as exc:
            self._bls_pool.shutdown(wait=False)
            raise InstanceLoadError(str(exc)) from None

    # --- ModelInstance --------------------------------------------------------------------------------

    @property
    def pipeline_depth(self) -> int:
        return PIPELINE_DEPTH if self._timeout_s is None else 1  # a timeout measures one batch alone

    def execute(self, requests: list[InferRequest]) -> ExecuteResult:
        handle, batch, result = self._submit(requests)
        try:
            return result.result(timeout=self._timeout_s)
        except FutureTimeout:
            self._take_batch(batch)
            handle.kill()  # the reader sees the end and starts a new stub
            error = ModelExecutionError(
                f"python model '{self.spec.model_name}': execute ran past execute_timeout_seconds="
                f"{self._timeout_s:g}; its process was stopped and is restarting"
            )
            return ExecuteResult(self._failed(requests, error))

    def submit(self, requests: list[InferRequest]) -> Future | None:
        """The batch sent from the event loop, answered by the reader thread: no instance thread in between.

        Only for small batches (encoding must not hold the loop, and the frame must fit the socket's buffer so
        the send never blocks) of models without an execute timeout (the instance thread enforces it).
        """
        if self._timeout_s is not None or payload_bytes(requests) > LOOP_SUBMIT_MAX_BYTES:
            return None
        submitted = self._submit(requests, on_loop=self.spec.event_loop is not None)
        return None if submitted is None else submitted[2]

    def unload(self) -> None:
        with self._lock:
            self._is_closing = True
            handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.send(Finalize())
                self._finalized.wait(FINALIZE_TIMEOUT_S)
            except OSError:
                pass
            handle.stop(5.0)
            # Here, not only when the stub's end is read: the loop reading it may stop first (server shutdown).
            shm_tensors.remove_folder(handle.shm_folder)
        self._bls_pool.shutdown(wait=False)

    # --- the stub's life -------------------------------------------------------------------------------

    def _start(self) -> StubHandle:
        spec = self.spec
        init = StubInit(
            spec.model_name,
            spec.model_version,
            spec.instance_name,
            spec.kind,
            spec.device_id,
            str(spec.model_dir),
            str(spec.version_dir),
            spec.config.SerializeToString(),
        )
        handle = StubHandle(self._interpreter)
        handle.shm_folder = shm_tensors.make_folder()
        init.shm_folder = "" if handle.shm_folder is None else str(handle.shm_folder)
        init.scheduling = self._scheduling
        started: Future = Future()  # StubReady, or why the stub did not come up
        self._finalized.clear()
        handle.start_reading(
            lambda m: self._on_message(handle, m, started),
            lambda how: self._on_exit(handle, how, started),
            spec.event_loop,
        )
        try:
            handle.send(init)
            started.result(timeout=START_TIMEOUT_S)
        except FutureTimeout:
            handle.kill()
            raise StubStartError(
                f"the model's process did not answer within {START_TIMEOUT_S:g} s of starting"
            ) from None
        except OSError:
            started.result(timeout=START_TIMEOUT_S)  # the reader saw the end: its reason
        return handle

    def _on_exit(self, handle: StubHandle, how: str, started: Future) -> None:
        shm_tensors.remove_folder(handle.shm_folder)  # with the tensors a dead stub left behind
        if not started.done():
            started.set_exception(StubStartError(stopped_while_loading(how)))
            return
        with self._lock:
            if handle is not self._handle or self._is_closing:
                return
            self._handle = None
            batches, self._batches = self._batches, {}
            self._in_flight_bytes = 0
            streams, self._streams = self._streams, {}
        message = f"python model '{self.spec.model_name}' ({self.spec.instance_name}) stopped: {how}; restarting it"
        logger.error("%s", message)
        self._report_health(message)
        for batch in batches.values():
            batch.settle(ExecuteResult(self._failed(batch.requests, UnavailableError(message))))
        for stream in streams.values():
            stream.fail(
                InferResponse(self.spec.model_name, str(self.spec.model_version), error=UnavailableError(message))
            )
        threading.Thread(target=self._restart, name=f"restart-{self.spec.instance_name}", daemon=True).start()

    def _restart(self) -> None:
        for attempt in range(MAX_START_ATTEMPTS):
            time.sleep(min(0.2 * 2**attempt, 5.0))
            if self._is_closing:
                return
            try:
                handle = self._start()
            except StubStartError as exc:
                logger.error("python model '%s': restart %d failed: %s", self.spec.model_name, attempt + 1, exc)
                continue
            STUB_RESTARTS.labels(*self._labels).inc()
            with self._lock:
                if not self._is_closing:
                    self._handle = handle
                    self._report_health(None)
                    return
            handle.kill()
            return
        self._unavailable = (
            f"python model '{self.spec.model_name}' stopped and did not start again after {MAX_START_ATTEMPTS} tries"
        )
        self._report_health(self._unavailable)

    def _report_health(self, reason: str | None) -> None:
        if self.spec.report_health is not None:
            self.spec.report_health(reason)

    # --- frames ---------------------------------------------------------------------------------------

    def _submit(
        self, requests: list[InferRequest], on_loop: bool = False
    ) -> tuple[StubHandle | None, int, Future] | None:
        """Send the batch; (the stub, the batch number, a future of its ExecuteResult set by the stub's reader).

        `on_loop`: called on the event loop that reads the stub, whose future it then is; None when the batch's
        frame does not fit beside those in flight (LOOP_IN_FLIGHT_MAX_BYTES): then nothing was sent.
        """
        batch = next(self._batch_ids)
        result = asyncio.get_running_loop().create_future() if on_loop else Future()
        keys = [next(self._keys) for _ in requests]
        handle = self._handle
        frame = b""
        if handle is not None:
            frame = encode(Execute(batch, [wire_request(k, r, handle.shm_folder) for k, r in zip(keys, requests)]))
        with self._lock:  # against _on_exit: either it sees this batch and fails it, or we see it happened
            if handle is None or handle is not self._handle:
                reason = self._unavailable or f"python model '{self.spec.model_name}' is restarting"
                result.set_result(ExecuteResult(self._failed(requests, UnavailableError(reason))))
                return None, batch, result
            if on_loop and self._in_flight_bytes + len(frame) > LOOP_IN_FLIGHT_MAX_BYTES:
                return None
            self._batches[batch] = PendingBatch(result, requests, keys, len(frame))
            self._in_flight_bytes += len(frame)
            for key, request in zip(keys, requests):
                if request.response_stream is not None:
                    self._streams[key] = request.response_stream
        try:
            handle.send_work_frame(frame, on_loop=on_loop)
        except OSError:
            pass  # the stub's reader fails the batch when it sees the stub's end
        for key, request in zip(keys, requests):
            if request.response_stream is not None:
                request.response_stream.on_cancel(lambda key=key: self._send_cancel(handle, key))
        return handle, batch, result

    def _take_batch(self, batch: int) -> PendingBatch | None:
        with self._lock:
            taken = self._batches.pop(batch, None)
            if taken is not None:
                self._in_flight_bytes -= taken.frame_bytes
        return taken

    def _send_cancel(self, handle: StubHandle, key: int) -> None:
        try:
            handle.send(Cancel(key))
        except OSError:
            pass

    def _settled(self, done: ExecuteDone, batch: PendingBatch, folder: Path | None) -> ExecuteResult:
        """The batch's result; whatever goes wrong reading it fails its requests (a waiter must never hang)."""
        try:
            return self._result(done, batch.requests, batch.keys, folder)
        except Exception as exc:
            logger.exception("python model '%s': unreadable responses", self.spec.model_name)
            error = ModelExecutionError(f"model '{self.spec.model_name}' returned unreadable responses: {exc}")
            return ExecuteResult(self._failed(batch.requests, error))

    def _result(self, done: ExecuteDone, requests: list[InferRequest], keys: list[int], folder) -> ExecuteResult:
        timings = ComputeTimings(*done.timings_ns)
        if done.error is not None:
            self._forget(keys)
            error = ModelExecutionError(f"model '{self.spec.model_name}' failed: {done.error}")
            return ExecuteResult(self._failed(requests, error), timings)
        responses = [infer_response(w, folder) for w in done.responses]
        if not self.is_decoupled or responses:  # nothing more will stream for these requests
            self._forget(keys)
        return ExecuteResult(responses, timings)

    def _forget(self, keys: list[int]) -> None:
        for key in keys:
            self._streams.pop(key, None)

    def _on_message(self, handle: StubHandle, message, started: Future) -> None:
        if isinstance(message, ExecuteDone):  # the common frame first
            batch = self._take_batch(message.batch)
            if batch is not None:
                batch.settle(self._settled(message, batch, handle.shm_folder))
        elif isinstance(message, StubReady):
            started.set_result(message)
        elif isinstance(message, StubFailed):
            started.set_exception(StubStartError(message.message))
        elif isinstance(message, StreamItem):
            self._deliver(message, handle.shm_folder)
        elif isinstance(message, BlsCall):
            self._bls_pool.submit(self._answer_bls, handle, message)
        elif isinstance(message, MetricCall):
            self._answer_metric(handle, message)
        elif isinstance(message, Finalized):
            self._finalized.set()

    def _deliver(self, item: StreamItem, folder: Path | None) -> None:
        stream = self._streams.pop(item.key, None) if item.is_final else self._streams.get(item.key)
        if stream is None:
            return
        try:
            stream.send(None if item.response is None else infer_response(item.response, folder), item.is_final)
        except RuntimeError:  # the stream was already closed (e.g. failed by the scheduler)
            pass

    def _answer_bls(self, handle: StubHandle, call: BlsCall) -> None:
        request = infer_request(call.request, handle.shm_folder)
        try:
            if self.spec.call_model is None:
                raise UnavailableError("BLS requests need a server: this instance has none")
            response = self.spec.call_model(request)
        except ModelgateError as exc:
            response = InferResponse(request.model_name, request.model_version, error=exc)
        try:
            handle.send(BlsReturn(call.call, wire_response(response, handle.shm_folder)))
        except OSError:
            pass

    def _answer_metric(self, handle: StubHandle, call: MetricCall) -> None:
        """Quick (a dict update under a lock): answered on the reader thread."""
        try:
            value = custom_metric_store().handle(
                call.family, call.description, call.kind, call.labels, call.operation, call.value, call.buckets
            )
            answer = MetricReturn(call.call, value)
        except MetricError as exc:
            answer = MetricReturn(call.call, None, str(exc))
        try:
            handle.send(answer)
        except OSError:
            pass

    def _failed(self, requests: list[InferRequest], error: ModelgateError) -> list[InferResponse]:
        version = str(self.spec.model_version)
        return [InferResponse(r.model_name, version, id=r.id, error=error) for r in requests]


def execute_timeout_s(spec: InstanceSpec) -> float | None:
    """The `execute_timeout_seconds` model parameter: how long one execute may run before its stub is killed."""
    parameter = spec.config.parameters.get("execute_timeout_seconds")
    if parameter is None:
        return None
    source = f"{spec.model_dir}/config"
    try:
        seconds = float(parameter.string_value)
    except ValueError:
        raise ConfigError(source, "parameters.execute_timeout_seconds", "must be a number of seconds") from None
    if not seconds > 0:
        raise ConfigError(source, "parameters.execute_timeout_seconds", "must be greater than 0")
    return seconds
