"""Several batches handed to one stub at once: run in order, answered on the event loop, never a waiting send."""

import asyncio
import socket
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import InstanceSpec
from modelgate.backends.python import stub_handle
from modelgate.backends.python.process_instance import ProcessModelInstance
from modelgate.backends.python.stub_batches import LOOP_IN_FLIGHT_MAX_BYTES
from modelgate.backends.python.stub_frames import send_frames
from modelgate.backends.python.stub_messages import Cancel, Execute, WireRequest
from modelgate.backends.python.stub_process import Stub
from modelgate.core.inference_types import InferRequest, InferTensor
from tests.server_harness import write_model

CONFIG = """
name: "ordered"
backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "ORDER" data_type: TYPE_INT64 dims: [ 1 ] } ]
"""

# Answers each request with how many requests it executed before it, after a pause: batches pile up meanwhile.
ORDERED_MODEL = """
import time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.seen = 0

    def execute(self, requests):
        time.sleep(0.05)
        responses = []
        for request in requests:
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("ORDER", np.array([self.seen]))]))
            self.seen += 1
        return responses
"""


def _spec(tmp_path: Path, loop) -> InstanceSpec:
    model_dir = write_model(tmp_path, "ordered", CONFIG, ORDERED_MODEL)
    config = text_format.Parse(CONFIG, ModelConfig())
    return InstanceSpec("ordered", 1, "ordered_0", "CPU", 0, model_dir, model_dir / "1", config, event_loop=loop)


def _request(values: int) -> InferRequest:
    data = np.zeros(values, dtype=np.float32)
    return InferRequest("ordered", "1", inputs={"X": InferTensor("X", "FP32", data.shape, data)})


async def test_batches_sent_together_run_in_order_and_are_answered_on_the_loop(tmp_path):
    instance = await asyncio.to_thread(ProcessModelInstance, _spec(tmp_path, asyncio.get_running_loop()))
    try:
        assert instance.pipeline_depth > 1
        futures = [instance.submit([_request(4)]) for _ in range(instance.pipeline_depth)]
        assert all(isinstance(f, asyncio.Future) for f in futures)  # the loop's own: no thread hands them over
        results = await asyncio.gather(*futures)
        assert [int(r.responses[0].outputs[0].data[0]) for r in results] == list(range(len(futures)))
    finally:
        await asyncio.to_thread(instance.unload)


async def test_batches_submitted_in_one_turn_of_the_loop_go_to_the_stub_in_one_send(tmp_path, monkeypatch):
    sends = []

    def recording_send_frames(sock, frames):
        sends.append(len(frames))
        send_frames(sock, frames)

    monkeypatch.setattr(stub_handle, "send_frames", recording_send_frames)
    instance = await asyncio.to_thread(ProcessModelInstance, _spec(tmp_path, asyncio.get_running_loop()))
    try:
        futures = [instance.submit([_request(4)]) for _ in range(3)]
        assert sends == []  # queued: the loop sends them once the callbacks ready now have run
        results = await asyncio.gather(*futures)
        assert sends == [3]
        assert [int(r.responses[0].outputs[0].data[0]) for r in results] == [0, 1, 2]
        late = await asyncio.to_thread(instance.execute, [_request(4)])  # from a thread: sent at once
        assert int(late.responses[0].outputs[0].data[0]) == 3 and sends == [3]
    finally:
        await asyncio.to_thread(instance.unload)


async def test_the_loop_sends_only_what_fits_beside_the_unanswered_frames(tmp_path):
    instance = await asyncio.to_thread(ProcessModelInstance, _spec(tmp_path, asyncio.get_running_loop()))
    try:
        per_batch = 15_000  # float32 values: 60 KiB, under the per-batch limit
        sent = []
        while (future := instance.submit([_request(per_batch)])) is not None:
            sent.append(future)
            assert len(sent) * per_batch * 4 <= LOOP_IN_FLIGHT_MAX_BYTES
        assert len(sent) == LOOP_IN_FLIGHT_MAX_BYTES // (per_batch * 4 + 512)  # frames are a little larger
        # Refused from the loop, the batch runs from the instance's thread (which may wait), after the others.
        late = await asyncio.to_thread(instance.execute, [_request(per_batch)])
        answered = await asyncio.gather(*sent)
        assert [int(r.responses[0].outputs[0].data[0]) for r in answered] == list(range(len(sent)))
        assert int(late.responses[0].outputs[0].data[0]) == len(sent)
        assert instance.submit([_request(per_batch)]) is not None  # all answered: room again
    finally:
        await asyncio.to_thread(instance.unload)


def _wire(key: int) -> WireRequest:
    return WireRequest(key, "m", "1", "", {}, [], [], True)


def test_a_cancel_that_overtakes_its_request_still_cancels_it():
    work, control = socket.socketpair()
    stub = Stub(work, control)
    stub._dispatch(Cancel(7))  # read on the control socket before the Execute on the work socket
    request = stub._request(_wire(7))
    assert request.response_stream.is_cancelled()
    assert not stub._request(_wire(8)).response_stream.is_cancelled()
    work.close()
    control.close()


def test_cancels_that_came_after_their_request_finished_are_forgotten():
    work, control = socket.socketpair()
    stub = Stub(work, control)
    stub._dispatch(Cancel(3))  # its request ran already: no sink any more
    stub._dispatch(Cancel(12))  # not read yet
    stub._forget_late_cancels(Execute(1, [_wire(10), _wire(11)]))
    assert stub._early_cancels == {12}
    work.close()
    control.close()
