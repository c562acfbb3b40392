"""Custom metrics of python models (`pb_utils.MetricFamily` / `Metric`) on /metrics, in both isolations."""

import json
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry

from modelgate.backends.python.custom_metrics import CustomMetricStore, MetricError
from tests.server_harness import write_model

METRICS_CONFIG = """
name: "{name}"
backend: "python"
input [ { name: "STEP" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "REPORT" data_type: TYPE_STRING dims: [ 1 ] } ]
parameters { key: "isolation" value { string_value: "{isolation}" } }
"""

METRICS_MODEL = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        name = args["model_name"]
        self.requests = pb_utils.MetricFamily(name + "_requests", "Requests seen", pb_utils.MetricFamily.COUNTER)
        self.depth = pb_utils.MetricFamily(name + "_depth", "A gauge", pb_utils.MetricFamily.GAUGE)
        self.sizes = pb_utils.MetricFamily(name + "_sizes", "A histogram", pb_utils.MetricFamily.HISTOGRAM)
        self.counter = self.requests.Metric(labels={"kind": "all"})
        self.gauge = self.depth.Metric(labels={"queue": "a"})
        self.histogram = self.sizes.Metric(labels={"unit": "items"}, buckets=[1.0, 2.5, 10.0])

    def execute(self, requests):
        responses = []
        for request in requests:
            step = pb_utils.get_input_tensor_by_name(request, "STEP").as_numpy()[0].decode()
            report = {}
            if step == "work":
                self.counter.increment(2)
                self.gauge.set(7.5)
                self.gauge.increment(-2.5)
                for size in (0.5, 2.0, 20.0):
                    self.histogram.observe(size)
                # Another Metric object with the same labels is the same metric.
                report["counter"] = self.requests.Metric(labels={"kind": "all"}).value()
                report["gauge"] = self.gauge.value()
            elif step == "misuse":
                for name, call in [("counter_down", lambda: self.counter.increment(-1)),
                                   ("counter_set", lambda: self.counter.set(3)),
                                   ("histogram_value", lambda: self.histogram.value()),
                                   ("gauge_observe", lambda: self.gauge.observe(1))]:
                    try:
                        call()
                        report[name] = "no error"
                    except pb_utils.TritonModelException as error:
                        report[name] = str(error)
            out = np.array([json.dumps(report).encode()], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("REPORT", out)]))
        return responses
"""


def _config(name: str, isolation: str) -> str:
    return METRICS_CONFIG.replace("{name}", name).replace("{isolation}", isolation)


def _step(client, name: str, step: str) -> dict:
    tensor = httpclient.InferInput("STEP", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([step.encode()], dtype=np.object_))
    return json.loads(client.infer(name, [tensor]).as_numpy("REPORT")[0])


def _metrics(running) -> str:
    return urllib.request.urlopen(running.metrics_url, timeout=30).read().decode()


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_models_metrics_are_on_the_servers_metrics_page(tmp_path, make_server, isolation):
    name = f"metered_{isolation}"
    write_model(tmp_path, name, _config(name, isolation), METRICS_MODEL)
    running = make_server([tmp_path])
    client = httpclient.InferenceServerClient(running.http_url)
    assert _step(client, name, "work") == {"counter": 2.0, "gauge": 5.0}
    assert _step(client, name, "work") == {"counter": 4.0, "gauge": 5.0}
    text = _metrics(running)
    assert f"# TYPE {name}_requests counter" in text and f"# HELP {name}_requests Requests seen" in text
    assert f'{name}_requests{{kind="all"}} 4.0' in text
    assert f'{name}_depth{{queue="a"}} 5.0' in text
    assert f'{name}_sizes_bucket{{le="1",unit="items"}} 2.0' in text  # 0.5 twice
    assert f'{name}_sizes_bucket{{le="2.5",unit="items"}} 4.0' in text
    assert f'{name}_sizes_bucket{{le="+Inf",unit="items"}} 6.0' in text
    assert f'{name}_sizes_count{{unit="items"}} 6.0' in text and f'{name}_sizes_sum{{unit="items"}} 45.0' in text
    client.close()


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_what_a_kind_does_not_allow_is_a_model_exception(tmp_path, make_server, isolation):
    name = f"misused_{isolation}"
    write_model(tmp_path, name, _config(name, isolation), METRICS_MODEL)
    running = make_server([tmp_path])
    client = httpclient.InferenceServerClient(running.http_url)
    report = _step(client, name, "misuse")
    assert "only goes up" in report["counter_down"]
    assert "does not support set()" in report["counter_set"]
    assert "only observe()" in report["histogram_value"]
    assert "does not support observe()" in report["gauge_observe"]
    client.close()


def test_the_store_keeps_triton_rules():
    store = CustomMetricStore(CollectorRegistry())
    store.declare("fam", "first", "counter")
    store.declare("fam", "second", "counter")  # same kind: the same family
    with pytest.raises(MetricError, match="already exists as a counter"):
        store.declare("fam", "x", "gauge")
    store.declare("hist", "h", "histogram")
    with pytest.raises(MetricError, match="needs its bucket bounds"):
        store.apply("hist", {}, "create")
    with pytest.raises(MetricError, match="increase strictly"):
        store.apply("hist", {}, "create", buckets=[2.5, 0.1])
    with pytest.raises(MetricError, match="increase strictly"):
        store.apply("hist", {"a": "b"}, "create", buckets=[1, 1, 2])
    assert store.apply("hist", {"x": "y"}, "create", buckets=[]) is None  # no bounds: only +Inf
    with pytest.raises(MetricError, match="was not declared"):
        store.apply("nope", {}, "value")
    (family,) = [m for m in store.collect() if m.name == "fam"]
    assert family.documentation == "first"
