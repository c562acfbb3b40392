"""Streams over tritonclient.grpc (callback) and tritonclient.grpc.aio (async iterator), with bounded waits."""

from __future__ import annotations

import asyncio
import inspect
import json
import queue
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

# Server-side deadline of every test stream, so that nothing waits forever.
STREAM_TIMEOUT_S = 30
WAIT_S = 10


class AwaitableClient:
    """A sync or aio tritonclient with every method awaitable, to run one test body with both."""

    def __init__(self, client):
        self.client = client
        self.is_aio = not isinstance(client, grpcclient.InferenceServerClient)

    def __getattr__(self, name):
        method = getattr(self.client, name)

        async def call(*args, **kwargs):
            result = method(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return call


@dataclass
class StreamResult:
    """One message of a stream: a result (with its id and final flag) or an error."""

    result: grpcclient.InferResult | None
    error: InferenceServerException | None

    @property
    def id(self) -> str:
        return self.result.get_response().id

    @property
    def is_final(self) -> bool:
        parameter = self.result.get_response().parameters["triton_final_response"]
        assert parameter.WhichOneof("parameter_choice") == "bool_param"
        return parameter.bool_param

    @property
    def is_empty(self) -> bool:
        return len(self.result.get_response().outputs) == 0

    def out(self) -> int:
        return int(self.result.as_numpy("OUT")[0])


A = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
B = np.array([0.5, -1.0, 10.0, 0.0], dtype=np.float32)


def add_sub_inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    inputs = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def repeat_inputs(values, delay_ms: int = 0) -> list[grpcclient.InferInput]:
    """repeat_int32's IN (and DELAY_MS, a pause before each response)."""
    inputs = [int32_input("IN", values)]
    if delay_ms:
        delay = grpcclient.InferInput("DELAY_MS", [1], "UINT32")
        delay.set_data_from_numpy(np.array([delay_ms], dtype=np.uint32))
        inputs.append(delay)
    return inputs


def int32_input(name: str, values) -> grpcclient.InferInput:
    data = np.array(values, dtype=np.int32).reshape(-1)
    tensor = grpcclient.InferInput(name, list(data.shape), "INT32")
    tensor.set_data_from_numpy(data)
    return tensor


def count_input(count: int) -> list[grpcclient.InferInput]:
    """The one input of the stream models (COUNT, shape [1])."""
    return [int32_input("COUNT", [count])]


class SyncStream:
    """A tritonclient.grpc client with its stream started; results are queued by the callback."""

    def __init__(self, url: str):
        self.client = grpcclient.InferenceServerClient(url)
        self.queue: queue.Queue[StreamResult] = queue.Queue()
        self.client.start_stream(callback=self._on_result, stream_timeout=STREAM_TIMEOUT_S)

    def _on_result(self, result, error) -> None:
        self.queue.put(StreamResult(result, error))

    def send(self, model_name: str, inputs, **options) -> None:
        self.client.async_stream_infer(model_name, inputs, **options)

    def take(self, count: int) -> list[StreamResult]:
        """The next `count` results, waiting at most WAIT_S for each."""
        return [self.queue.get(timeout=WAIT_S) for _ in range(count)]

    def close(self, cancel_requests: bool = False) -> list[StreamResult]:
        """Stop the stream (the server finishes what is running unless cancelled); what else came."""
        self.client.stop_stream(cancel_requests=cancel_requests)
        self.client.close()
        rest = []
        while not self.queue.empty():
            rest.append(self.queue.get_nowait())
        return rest


class AioStream:
    """A tritonclient.grpc.aio stream_infer call whose requests are fed while it runs."""

    def __init__(self, client):
        self._requests: asyncio.Queue = asyncio.Queue()
        self.responses = client.stream_infer(self._feed(), stream_timeout=STREAM_TIMEOUT_S)

    async def _feed(self):
        while (request := await self._requests.get()) is not None:
            yield request

    def send(self, model_name: str, inputs, **options) -> None:
        self._requests.put_nowait({"model_name": model_name, "inputs": inputs, **options})

    def close(self) -> None:
        """No more requests: the server ends the stream once those sent are complete."""
        self._requests.put_nowait(None)

    def cancel(self) -> None:
        self.responses.cancel()

    async def take(self, count: int) -> list[StreamResult]:
        taken = []
        for _ in range(count):
            result, error = await asyncio.wait_for(self.responses.__anext__(), WAIT_S)
            taken.append(StreamResult(result, error))
        return taken

    async def rest(self) -> list[StreamResult]:
        """Everything until the server ends the stream (call `close` first)."""

        async def drain():
            return [StreamResult(result, error) async for result, error in self.responses]

        return await asyncio.wait_for(drain(), WAIT_S)


def by_request_id(results: list[StreamResult]) -> dict[str, list[StreamResult]]:
    """Results grouped by request id, in arrival order; fails on error messages."""
    grouped: dict[str, list[StreamResult]] = {}
    for item in results:
        assert item.error is None, f"unexpected stream error: {item.error}"
        grouped.setdefault(item.id, []).append(item)
    return grouped


def assert_counted(results: list[StreamResult], count: int) -> None:
    """`count` data responses OUT = 0..count-1 in order, none final (the flag comes on its own)."""
    assert [r.out() for r in results] == list(range(count))
    assert not any(r.is_final for r in results)


def assert_repeated(results: list[StreamResult], values) -> None:
    """repeat_int32's answer to IN=values: OUT and IDX per element, in order, none final."""
    assert [r.out() for r in results] == list(values)
    assert [int(r.result.as_numpy("IDX")[0]) for r in results] == list(range(len(values)))
    assert not any(r.is_final for r in results)


def wait_for_file(path: Path, timeout_s: float = WAIT_S) -> dict:
    """The JSON a model wrote to `path`, polling until it appears."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return json.loads(path.read_text())
        time.sleep(0.02)
    raise AssertionError(f"the model did not write {path} within {timeout_s} s")


def metric_value(metrics_url: str, name: str, model: str, version: str = "1") -> float:
    text = urllib.request.urlopen(metrics_url, timeout=WAIT_S).read().decode()
    prefix = f'{name}{{model="{model}",version="{version}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"{prefix!r} not found in the metrics")
