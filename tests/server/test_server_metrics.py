"""The server's own health on /metrics: event-loop lag (a stall shows) and request sizes by protocol."""

import json
import socket
import time
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from tests.server_harness import EXAMPLE_REPOSITORY

A = np.arange(4, dtype=np.float32)


def _families(url: str) -> dict:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sample(families: dict, family: str, sample: str, **labels) -> float:
    (value,) = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
    return value


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def _refused_declaring(http_url: str, size: int) -> int:
    """The status of a POST that declares `size` bytes and sends none of them."""
    host, port = http_url.split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(f"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        return int(client.recv(4096).split(b" ", 2)[1])


def test_request_sizes_are_counted_per_protocol(make_server):
    running = make_server([EXAMPLE_REPOSITORY])
    before = _families(running.metrics_url)
    body = json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": A.tolist()},
                {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": A.tolist()},
            ]
        }
    ).encode()
    for _ in range(3):
        assert _post(f"http://{running.http_url}/v2/models/add_sub/infer", body) == 200
    too_large = 80 << 20  # over the default --http-max-input-size: refused before it is read, yet counted
    assert _refused_declaring(running.http_url, too_large) == 413
    client = grpcclient.InferenceServerClient(running.grpc_url)
    inputs = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(A)
    client.infer("add_sub", inputs)
    client.close()
    after = _families(running.metrics_url)
    assert after["modelgate_request_bytes"].type == "histogram"  # one family, both protocols' series in it

    def grew(sample: str, protocol: str) -> float:
        name = "modelgate_request_bytes"
        return _sample(after, name, sample, protocol=protocol) - _sample(before, name, sample, protocol=protocol)

    assert grew("modelgate_request_bytes_count", "http") == 4
    assert grew("modelgate_request_bytes_sum", "http") == 3 * len(body) + too_large
    assert grew("modelgate_request_bytes_count", "grpc") == 1
    assert 32 < grew("modelgate_request_bytes_sum", "grpc") < len(body)  # two raw 16-byte tensors and names


def test_a_stalled_event_loop_shows_in_the_lag_metrics(make_server):
    running = make_server([EXAMPLE_REPOSITORY])
    lag = "modelgate_event_loop_lag_seconds"
    before = _families(running.metrics_url)
    probes_before = _sample(before, lag, f"{lag}_count")
    running.loop.call_soon_threadsafe(time.sleep, 0.5)  # what a request that blocks the loop does to everyone
    deadline = time.monotonic() + 30
    while _sample(_families(running.metrics_url), lag, f"{lag}_count") < probes_before + 3:
        assert time.monotonic() < deadline, "the probe stopped running"
        time.sleep(0.05)
    after = _families(running.metrics_url)
    assert _sample(after, "modelgate_event_loop_lag_max_seconds", "modelgate_event_loop_lag_max_seconds") >= 0.4
    stalled = _sample(after, lag, f"{lag}_bucket", le="+Inf") - _sample(after, lag, f"{lag}_bucket", le="0.25")
    assert stalled >= 1  # the probe due during the sleep ran at least 0.25 s late


def test_metrics_bind_their_own_address(tmp_path, make_server):
    (tmp_path / "empty").mkdir()
    running = make_server([tmp_path / "empty"], http_address="0.0.0.0", metrics_address="127.0.0.1")
    metrics_socket = next(
        site
        for runner in running.server._runners
        for site in runner.sites
        if site.name.endswith(f":{running.server.metrics_port}")
    )
    assert metrics_socket.name.startswith("http://127.0.0.1:")
    assert "modelgate_event_loop_lag_seconds" in _families(running.metrics_url)
