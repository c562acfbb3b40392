"""The stub: the process in which one python-model instance's code runs, apart from the server.

The server starts it with one end of two socket pairs (`python -c ... WORK_FD CONTROL_FD`, stub_handle.py) and
speaks stub_messages on them. Inside, the model runs exactly as it would in the server (`PythonModelInstance`):
requests arrive as frames, responses leave as frames, decoupled responses stream back as they are sent, BLS
requests go to the server and wait for its answer. The main thread reads the work socket and runs the model
(initialize, each execute, finalize, one at a time): a request costs no hand-off between threads. A reader thread
takes the control socket's frames, so a cancellation or a BLS answer arrives while the model is busy. When the
server goes away (the sockets close) the stub exits at once, whatever the model is doing.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

import modelgate.backends.python.triton_python_backend_utils as pb_utils
from modelgate.backends.base import InstanceSpec
from modelgate.backends.python import shm_tensors
from modelgate.backends.python.backend import PythonModelInstance, bls_runner, complete_from_model_class
from modelgate.backends.python.pb_metrics import install_metric_transport
from modelgate.backends.python.stub_frames import FrameReader, recv_frame, send_frame
from modelgate.backends.python.stub_messages import (
    AutoComplete,
    AutoCompleted,
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
    decode_to_stub,
    encode,
    infer_request,
    infer_response,
    wire_request,
    wire_response,
)
from modelgate.backends.python.stub_scheduling import apply_to_this_thread
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.sink_state import SinkState

logger = logging.getLogger("modelgate.python_model")


def main(work_fd: int, control_fd: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[stub %(process)d]: %(message)s")
    Stub(socket.socket(fileno=work_fd), socket.socket(fileno=control_fd)).run()
    # Threads the model started must not keep an instance that was finalized (or failed to start) alive.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class Stub:
    def __init__(self, work: socket.socket, control: socket.socket):
        self._work = work
        self._work_frames = FrameReader(work)  # batches sent together are read together
        self._control = control
        self._send_lock = threading.Lock()
        self._sinks: dict[int, StubSink] = {}
        # A Cancel travels on the control socket and may overtake the Execute of its request: kept until it comes.
        self._sinks_lock = threading.Lock()
        self._early_cancels: set[int] = set()
        self._calls: dict[int, Future] = {}  # BLS and metric calls waiting for the server's answer
        self._call_ids = itertools.count()
        self.shm_folder: Path | None = None  # large tensors, both ways (shm_tensors.py)

    def run(self) -> None:
        init = decode_to_stub(self._work_frames.next_frame())
        if isinstance(init, AutoComplete):
            self._auto_complete(init)
            return
        assert isinstance(init, StubInit), init
        apply_to_this_thread(init.scheduling)  # before any other thread starts: they inherit it
        self.shm_folder = Path(init.shm_folder) if init.shm_folder else None
        threading.Thread(target=self._read_forever, name="stub-reader", daemon=True).start()
        install_metric_transport(self.metric_call)
        pb_utils.PROCESS_BLS_RUNNER = bls_runner(self.call_model)  # for threads the model starts itself
        try:
            instance = PythonModelInstance(self._spec(init))
        except BaseException as exc:  # the model's initialize failed (even sys.exit): say why, then stop
            logger.exception("python model '%s' failed to initialize", init.model_name)
            self.send(StubFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.send(StubReady())
        while True:
            try:
                message = decode_to_stub(self._work_frames.next_frame())
            except (EOFError, OSError):
                self._server_gone()
            if isinstance(message, Finalize):
                try:
                    instance.unload()
                finally:
                    self.send(Finalized())
                return
            if isinstance(message, Execute):
                self.send(self._execute(instance, message))

    def send(self, message) -> None:
        frame = encode(message)
        with self._send_lock:
            send_frame(self._work, frame)

    def call_model(self, request: InferRequest) -> InferResponse:
        """BLS: the server runs `request` and this thread waits for the answer."""
        call = next(self._call_ids)
        future: Future = Future()
        self._calls[call] = future
        self.send(BlsCall(call, wire_request(-1, request, self.shm_folder)))
        return infer_response(future.result(), self.shm_folder)

    def _auto_complete(self, message: AutoComplete) -> None:
        try:
            config = complete_from_model_class(
                ModelConfig.FromString(message.config), Path(message.model_dir), Path(message.version_dir)
            )
        except BaseException as exc:  # the model's import or its auto_complete_config failed
            self.send(StubFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.send(AutoCompleted(config.SerializeToString()))

    def metric_call(self, family, description, kind, labels, operation, value, buckets) -> float | None:
        """A custom-metric operation, applied by the server; its MetricError comes back as a ValueError."""
        call = next(self._call_ids)
        future: Future = Future()
        self._calls[call] = future
        self.send(MetricCall(call, family, description, kind, labels, operation, value, buckets))
        answer: MetricReturn = future.result()
        if answer.error is not None:
            raise ValueError(answer.error)
        return answer.value

    def _spec(self, init: StubInit) -> InstanceSpec:
        return InstanceSpec(
            model_name=init.model_name,
            model_version=init.model_version,
            instance_name=init.instance_name,
            kind=init.kind,
            device_id=init.device_id,
            model_dir=Path(init.model_dir),
            version_dir=Path(init.version_dir),
            config=ModelConfig.FromString(init.config),
            call_model=self.call_model,
        )

    def _execute(self, instance: PythonModelInstance, message: Execute) -> ExecuteDone:
        self._forget_late_cancels(message)
        try:
            requests = [self._request(wire) for wire in message.requests]  # e.g. a CUDA tensor without CUDA here
            result = instance.execute(requests)
        except BaseException as exc:  # execute's own failures are caught inside; this is the rest
            return ExecuteDone(message.batch, [], (0, 0, 0), error=f"{type(exc).__name__}: {exc}")
        finally:
            self._forget_unstreamed(message, instance.is_decoupled)
        timings = result.timings
        try:
            responses = [wire_response(r, self.shm_folder) for r in result.responses]
        except Exception as exc:  # a response this side cannot send (e.g. a tensor it cannot share)
            return ExecuteDone(message.batch, [], (0, 0, 0), error=f"{type(exc).__name__}: {exc}")
        return ExecuteDone(message.batch, responses, (timings.input_ns, timings.infer_ns, timings.output_ns))

    def _request(self, wire) -> InferRequest:
        # Models may change their inputs in place, as in Triton (copy-on-write for those in shared memory).
        request = infer_request(wire, self.shm_folder, writable=True)
        if wire.is_streamed:
            sink = StubSink(self, wire.key)
            with self._sinks_lock:
                self._sinks[wire.key] = sink
                if wire.key in self._early_cancels:
                    self._early_cancels.discard(wire.key)
                    sink.cancel()
            request.response_stream = sink
        return request

    def _forget_unstreamed(self, message: Execute, is_decoupled: bool) -> None:
        """A request that streams no responses needs no sink once execute returned."""
        if not is_decoupled:
            for wire in message.requests:
                self._sinks.pop(wire.key, None)

    def _forget_late_cancels(self, message: Execute) -> None:
        """Cancels of keys below this batch's came after their requests had finished: nothing will claim them.

        The server numbers requests in the order it sends them, so every key below the first of this batch
        belongs to an Execute already read."""
        if self._early_cancels and message.requests:
            first = message.requests[0].key
            with self._sinks_lock:
                self._early_cancels = {key for key in self._early_cancels if key >= first}

    def _read_forever(self) -> None:
        try:
            while True:
                self._dispatch(decode_to_stub(recv_frame(self._control)))
        except (EOFError, OSError):
            pass
        self._server_gone()

    def _server_gone(self) -> None:
        # The server is gone (or closed the stub's sockets): nothing this process does matters any more. A server
        # that was killed cannot remove the stub's shared-memory folder: the stub does.
        shm_tensors.remove_folder(self.shm_folder)
        sys.stderr.flush()
        os._exit(0)

    def _dispatch(self, message) -> None:
        if isinstance(message, Cancel):
            with self._sinks_lock:
                sink = self._sinks.get(message.key)
                if sink is None:
                    self._early_cancels.add(message.key)
            if sink is not None:
                sink.cancel()
        elif isinstance(message, BlsReturn):
            self._calls.pop(message.call).set_result(message.response)
        elif isinstance(message, MetricReturn):
            self._calls.pop(message.call).set_result(message)


class StubSink(SinkState):
    """A request's response stream inside the stub: what the model sends goes to the server as StreamItems.

    Implements `ResponseSink`. After a cancellation the model's responses are dropped, but the final flag
    still goes to the server, which then forgets the request.
    """

    def __init__(self, stub: Stub, key: int):
        super().__init__()
        self._stub = stub
        self._key = key

    def _deliver(self, response: InferResponse | None, is_final: bool) -> None:
        if self._is_cancelled and not is_final:
            return
        wire = None if response is None or self._is_cancelled else wire_response(response, self._stub.shm_folder)
        if is_final:
            self._stub._sinks.pop(self._key, None)
        self._stub.send(StreamItem(self._key, wire, is_final))
