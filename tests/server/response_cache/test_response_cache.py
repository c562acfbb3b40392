"""The response cache: hits answer without executing, misses execute and are stored, statistics and metrics."""

import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelgate.core.errors import ConfigError
from modelgate.core.inference_types import InferTensor
from modelgate.server.repository.config_completion import complete_model_config, read_model_config
from modelgate.server.response_cache.cache_settings import parse_cache_config
from modelgate.server.response_cache.lru_cache import ResponseCache
from tests.server.lifecycle_models import state_of
from tests.server_harness import write_model

# Y = X + the number of executions so far: a response that came from the cache repeats an older count.
COUNTING_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.executions = 0

    def execute(self, requests):
        self.executions += 1
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            y = (x + self.executions).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return responses
"""


def _config(name: str, extra: str = "response_cache { enable: true }") -> str:
    return f"""
name: "{name}"
backend: "python"
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }} ]
{extra}
"""


def _tensor(name: str, size: int) -> InferTensor:
    data = np.zeros(size, dtype=np.uint8)
    return InferTensor(name, "UINT8", (size,), data)


def test_the_cache_evicts_the_least_recently_used_by_bytes():
    cache = ResponseCache(max_bytes=3 * (100 + 4))
    for key in (b"aaaa", b"bbbb", b"cccc"):
        assert cache.insert(key, [_tensor("Y", 100)], {})
    assert cache.lookup(b"aaaa") is not None  # now the most recently used: "bbbb" goes first
    assert cache.insert(b"dddd", [_tensor("Y", 100)], {})
    assert cache.lookup(b"bbbb") is None and cache.num_evictions == 1
    assert all(cache.lookup(key) is not None for key in (b"aaaa", b"cccc", b"dddd"))
    assert not cache.insert(b"eeee", [_tensor("Y", 400)], {})  # larger than the whole cache: not stored
    assert len(cache) == 3 and cache.num_bytes <= cache.max_bytes


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (["redis,size=10"], "cache 'redis' is not supported; allowed: local"),
        (["local,bytes=10"], "'bytes=10' is not a setting"),
        (["local"], "needs its size"),
        (["local,size=-1"], "whole number of bytes"),
    ],
)
def test_bad_cache_config_values_say_what_is_allowed(values, words):
    with pytest.raises(ValueError, match=words):
        parse_cache_config(values)
    assert parse_cache_config(["local,size=1048576"]).max_bytes == 1048576


@pytest.fixture
def cached_server(make_server, tmp_path):
    write_model(tmp_path, "counted", _config("counted"), COUNTING_MODEL)
    write_model(tmp_path, "uncached", _config("uncached", ""), COUNTING_MODEL)
    return make_server([tmp_path], cache_config=["local,size=1048576"])


def _http_y(client, name: str, x) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    inputs = [httpclient.InferInput("X", list(array.shape), "FP32").set_data_from_numpy(array)]
    return client.infer(name, inputs).as_numpy("Y")


def _grpc_y(client, name: str, x) -> np.ndarray:
    array = np.asarray(x, dtype=np.float32)
    inputs = [grpcclient.InferInput("X", list(array.shape), "FP32").set_data_from_numpy(array)]
    return client.infer(name, inputs).as_numpy("Y")


def test_a_hit_returns_the_same_outputs_without_executing(cached_server):
    http = httpclient.InferenceServerClient(cached_server.http_url)
    grpc = grpcclient.InferenceServerClient(cached_server.grpc_url)
    try:
        first = _http_y(http, "counted", [1, 2, 3])
        np.testing.assert_array_equal(first, [2, 3, 4])  # the first execution
        np.testing.assert_array_equal(_grpc_y(grpc, "counted", [1, 2, 3]), first)  # a hit, over the other protocol
        np.testing.assert_array_equal(_http_y(http, "counted", [1, 2, 3]), first)
        np.testing.assert_array_equal(_http_y(http, "counted", [1, 2]), [3, 4])  # other shape: a miss, run 2
        np.testing.assert_array_equal(_http_y(http, "uncached", [1, 2, 3]), [2, 3, 4])
        np.testing.assert_array_equal(_http_y(http, "uncached", [1, 2, 3]), [3, 4, 5])  # no cache: runs again

        [stats] = http.get_inference_statistics("counted")["model_stats"]
        assert (stats["execution_count"], stats["inference_count"]) == (2, 2)  # hits never execute
        inference = stats["inference_stats"]
        assert (inference["cache_hit"]["count"], inference["cache_miss"]["count"]) == (2, 2)
        assert inference["success"]["count"] == 4 and inference["queue"]["count"] == 4
        [grpc_stats] = grpc.get_inference_statistics("counted").model_stats
        assert (grpc_stats.inference_stats.cache_hit.count, grpc_stats.inference_stats.cache_miss.count) == (2, 2)
        assert grpc_stats.execution_count == 2

        metrics = urllib.request.urlopen(cached_server.metrics_url, timeout=30).read().decode()
        assert 'nv_cache_num_hits_per_model{model="counted",version="1"} 2' in metrics
        assert 'nv_cache_num_misses_per_model{model="counted",version="1"} 2' in metrics
        assert 'nv_cache_num_hits_per_model{model="uncached"' not in metrics
    finally:
        http.close()
        grpc.close()


def test_enabling_the_cache_on_a_server_without_one_fails_the_load(make_server, tmp_path):
    write_model(tmp_path, "counted", _config("counted"), COUNTING_MODEL)
    running = make_server([tmp_path], strict_readiness=False)
    http = httpclient.InferenceServerClient(running.http_url)
    try:
        state, reason = state_of(http, "counted", version="")  # a model-level failure: no version row
    finally:
        http.close()
    assert state == "UNAVAILABLE"
    assert "field 'response_cache.enable': is true but the server has no response cache" in reason
    assert "--cache-config local,size=<bytes>" in reason


def test_a_decoupled_model_cannot_enable_the_cache(tmp_path):
    extra = "response_cache { enable: true }\nmodel_transaction_policy { decoupled: true }"
    model_dir = write_model(tmp_path, "m", _config("m", extra), COUNTING_MODEL)
    config, source = read_model_config(model_dir, "m", None)
    with pytest.raises(ConfigError, match="field 'response_cache.enable': is not allowed for a decoupled model"):
        complete_model_config(config, source, model_dir, "m")
