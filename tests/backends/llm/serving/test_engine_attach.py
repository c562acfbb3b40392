"""Frontend workers attached to an engine the server owns (engine_clients.py, EngineAttachment): each client
gets its own requests' outputs and nothing else, the owner hears the stats of every step, a worker without the
key is refused, a worker that leaves has its requests aborted, and a dead engine closes every attachment."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

from modelgate.backends.llm.engine_client import EngineAttachment, EngineClient, EngineStartError
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import AddRequest, EncodedStep, StepOutputs
from modelgate.backends.llm.sampling_params import SamplingParams
from tests.backends.llm.serving.helpers import ENGINE_SETTINGS, LONG, WAIT_S

KEY = os.urandom(32)


class Outputs:
    """What one client received, by request id, and every step message in arrival order."""

    def __init__(self):
        self.steps: queue.Queue[StepOutputs] = queue.Queue()
        self.exited = queue.Queue()
        self.token_ids: dict[str, list[int]] = defaultdict(list)
        self.finished: dict[str, str] = {}

    def on_outputs(self, encoded: EncodedStep) -> None:
        step = encoded.decode()
        for output in step.outputs:
            self.token_ids[output.request_id] += output.new_token_ids
            if output.finished:
                self.finished[output.request_id] = output.finish_reason
        self.steps.put(step)

    def on_exit(self) -> None:
        self.exited.put(True)

    def wait_finished(self, request_ids) -> None:
        while not set(request_ids) <= set(self.finished):
            self.steps.get(timeout=WAIT_S)


@pytest.fixture
def socket_dir():
    path = Path(tempfile.mkdtemp(prefix="mg-"))  # short: Unix socket paths end near 100 characters
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def owned(checkpoint, socket_dir):
    outputs = Outputs()
    config = EngineConfig(device="cpu", show_progress=False, **ENGINE_SETTINGS)
    address = str(socket_dir / "engine.sock")
    client = EngineClient(checkpoint, config, outputs.on_outputs, outputs.on_exit, attach_address=address, authkey=KEY)
    yield client, outputs, address
    client.shutdown()


def _attach(address: str, key: bytes = KEY) -> tuple[EngineAttachment, Outputs]:
    outputs = Outputs()
    return EngineAttachment(address, key, outputs.on_outputs, outputs.on_exit), outputs


def _greedy(request_id: str, prompt_ids: list[int], max_tokens: int) -> AddRequest:
    return AddRequest(request_id, prompt_ids, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))


def test_each_client_gets_its_own_requests_outputs_and_the_greedy_tokens(owned, reference):
    owner, owner_outputs, address = owned
    worker, worker_outputs = _attach(address)
    prompts = {"owner-1": "quick brown", "worker-1": "the lazy dog", "worker-2": "apple a day"}
    expected = {i: reference.greedy(reference.prompt_ids(p), 6).token_ids for i, p in prompts.items()}
    owner.add(_greedy("owner-1", reference.prompt_ids(prompts["owner-1"]), 6))
    for request_id in ("worker-1", "worker-2"):
        worker.add(_greedy(request_id, reference.prompt_ids(prompts[request_id]), 6))
    owner_outputs.wait_finished(["owner-1"])
    worker_outputs.wait_finished(["worker-1", "worker-2"])
    assert set(owner_outputs.token_ids) == {"owner-1"}
    assert set(worker_outputs.token_ids) == {"worker-1", "worker-2"}
    assert {**owner_outputs.token_ids, **worker_outputs.token_ids} == expected
    assert worker.info.max_model_len == owner.info.max_model_len
    worker.shutdown()


def test_the_owner_hears_the_stats_of_steps_that_were_only_a_workers(owned, reference):
    owner, owner_outputs, address = owned
    worker, worker_outputs = _attach(address)
    worker.add(_greedy("w", reference.prompt_ids("quick brown"), 5))
    worker_outputs.wait_finished(["w"])
    # The owner's pipe is not the worker's: its copies of those steps may still be on their way. Wait for one
    # that shows the worker's request running (a timeout fails the test).
    while True:
        step = owner_outputs.steps.get(timeout=WAIT_S)
        assert step.outputs == []  # none of the owner's requests ran
        if step.stats.num_running == 1:
            break
    worker.shutdown()


def test_a_worker_without_the_key_is_refused_and_the_engine_serves_on(owned, reference):
    owner, owner_outputs, address = owned
    with pytest.raises(EngineStartError, match="cannot attach"):
        _attach(address, key=os.urandom(32))
    owner.add(_greedy("after", reference.prompt_ids("quick brown"), 3))
    owner_outputs.wait_finished(["after"])
    assert len(owner_outputs.token_ids["after"]) == 3


def test_a_worker_that_leaves_has_its_requests_aborted(owned, reference):
    owner, owner_outputs, address = owned
    worker, worker_outputs = _attach(address)
    worker.add(_greedy("left-behind", reference.prompt_ids("quick brown"), LONG))
    worker_outputs.steps.get(timeout=WAIT_S)  # running now
    worker.shutdown()
    assert worker_outputs.exited.get(timeout=WAIT_S)
    owner.add(_greedy("probe", reference.prompt_ids("the lazy dog"), 3))
    # Read the queue up to the step that finished the probe: `finished` is filled on the pipe's thread before
    # the step is queued, so it can show the probe done while its steps still wait in the queue.
    probe_steps, probe_done = [], False
    while not probe_done:
        step = owner_outputs.steps.get(timeout=WAIT_S)
        probe_outputs = [o for o in step.outputs if o.request_id == "probe"]
        probe_steps += [step] if probe_outputs else []
        probe_done = any(o.finished for o in probe_outputs)
    # The worker's request was aborted when it left: the probe runs alone.
    assert max(step.stats.num_running for step in probe_steps) == 1
    assert "left-behind" not in owner_outputs.token_ids


def test_an_engine_that_dies_closes_its_attachments(owned):
    owner, owner_outputs, address = owned
    worker, worker_outputs = _attach(address)
    os.kill(owner.process.pid, signal.SIGKILL)
    assert worker_outputs.exited.get(timeout=WAIT_S)
    assert owner_outputs.exited.get(timeout=WAIT_S)
    assert not worker.is_alive
