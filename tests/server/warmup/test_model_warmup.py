"""model_warmup: the samples run on every instance at load, count in the statistics, and a failure refuses the load."""

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelgate.core.errors import ConfigError
from modelgate.server.repository.config_completion import complete_model_config, read_model_config
from tests.server.lifecycle_models import server_error, state_of
from tests.server_harness import write_model

# Appends each row of X it sees to the file named by the `log` parameter; refuses a row of all 7s.
LOGGING_MODEL = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.log = json.loads(args["model_config"])["parameters"]["log"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            with open(self.log, "a") as log:
                for row in x.reshape(-1, 3).tolist():
                    log.write(json.dumps(row) + "\\n")
            if (x == 7).all():
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("sevens are not allowed")))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * 2).astype(np.float32))]))
        return responses
"""


def _config(name: str, log, samples: str, instances: int = 1, max_batch_size: int = 4) -> str:
    return f"""
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 3 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 3 ] }} ]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters {{ key: "log" value {{ string_value: "{log}" }} }}
{samples}
"""


def _sample(name: str, data: str, batch_size: int = 1, count: int = 0) -> str:
    x = f'key: "X" value {{ data_type: TYPE_FP32 dims: [ 3 ] {data} }}'
    return f'model_warmup {{ name: "{name}" batch_size: {batch_size} count: {count} inputs {{ {x} }} }}'


def _rows(log) -> list[list[float]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def warm_repository(tmp_path):
    repository, log = tmp_path / "models", tmp_path / "warm.log"
    samples = "\n".join(
        [
            _sample("zeros", "zero_data: true", batch_size=2, count=3),
            _sample("random", "random_data: true"),
            _sample("from_file", 'input_data_file: "x.bin"'),
        ]
    )
    model_dir = write_model(repository, "warm", _config("warm", log, samples, instances=2), LOGGING_MODEL)
    (model_dir / "1" / "warmup").mkdir()
    (model_dir / "1" / "warmup" / "x.bin").write_bytes(np.array([1.5, 2.5, 3.5], dtype=np.float32).tobytes())
    return repository, log


def test_samples_run_on_every_instance_before_the_model_serves(make_server, warm_repository):
    repository, log = warm_repository
    running = make_server([repository])
    rows = _rows(log)  # the model is READY now: every warm-up ran before, and no client request yet
    # 2 instances x (zeros: 3 runs x 2 rows, random: 1 row, from_file: 1 row)
    assert len(rows) == 2 * (6 + 1 + 1)
    assert rows.count([0.0, 0.0, 0.0]) == 12 and rows.count([1.5, 2.5, 3.5]) == 2
    random_rows = [row for row in rows if row not in ([0.0, 0.0, 0.0], [1.5, 2.5, 3.5])]
    assert len(random_rows) == 2 and all(0.0 <= v < 1.0 for row in random_rows for v in row)

    http = httpclient.InferenceServerClient(running.http_url)
    grpc = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        [stats] = http.get_inference_statistics("warm")["model_stats"]
        # Executions: per instance 3 (zeros) + 1 + 1; rows: per instance 6 + 1 + 1; one success per request.
        assert (stats["execution_count"], stats["inference_count"]) == (10, 16)
        assert stats["inference_stats"]["success"]["count"] == 16
        assert stats["inference_stats"]["queue"] == {"count": 16, "ns": 0}
        assert {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]} == {1: 4, 2: 6}
        [grpc_stats] = grpc.get_inference_statistics("warm").model_stats
        assert (grpc_stats.execution_count, grpc_stats.inference_count) == (10, 16)

        x = np.ones((1, 3), dtype=np.float32)
        inputs = [httpclient.InferInput("X", [1, 3], "FP32").set_data_from_numpy(x)]
        np.testing.assert_array_equal(http.infer("warm", inputs).as_numpy("Y"), x * 2)
        [after] = http.get_inference_statistics("warm")["model_stats"]
        assert (after["execution_count"], after["inference_count"]) == (11, 17)
    finally:
        http.close()
        grpc.close()


def test_a_failing_sample_refuses_the_load_and_names_it(make_server, tmp_path):
    log = tmp_path / "warm.log"
    (tmp_path / "sevens.bin").write_bytes(np.full(3, 7, dtype=np.float32).tobytes())
    samples = _sample("fine", "zero_data: true") + "\n" + _sample("sevens", 'input_data_file: "sevens.bin"')
    model_dir = write_model(tmp_path / "models", "sevens", _config("sevens", log, samples), LOGGING_MODEL)
    (model_dir / "warmup").mkdir()  # the model folder's warmup/, where Triton looks
    (tmp_path / "sevens.bin").rename(model_dir / "warmup" / "sevens.bin")
    running = make_server([tmp_path / "models"], strict_readiness=False)
    http = httpclient.InferenceServerClient(running.http_url)
    grpc = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        state, reason = state_of(http, "sevens")
        assert state == "UNAVAILABLE"
        assert "warm-up sample 'sevens' failed on instance 'sevens_0_0': sevens are not allowed" in reason
        assert not grpc.is_model_ready("sevens")
        inputs = [grpcclient.InferInput("X", [1, 3], "FP32").set_data_from_numpy(np.ones((1, 3), np.float32))]
        assert "warm-up sample 'sevens'" in server_error(grpc.infer, "sevens", inputs).message()
    finally:
        http.close()
        grpc.close()


def _complete_error(tmp_path, samples: str, max_batch_size: int = 4) -> ConfigError:
    model_dir = write_model(tmp_path, "m", _config("m", tmp_path / "log", samples, 1, max_batch_size), LOGGING_MODEL)
    config, source = read_model_config(model_dir, "m", None)
    with pytest.raises(ConfigError) as raised:
        complete_model_config(config, source, model_dir, "m")
    return raised.value


@pytest.mark.parametrize(
    ("samples", "max_batch_size", "field", "words"),
    [
        (
            _sample("s", "zero_data: true", batch_size=5),
            4,
            "model_warmup[0].batch_size",
            "allowed: 1 to max_batch_size 4",
        ),
        (_sample("s", "zero_data: true", batch_size=2), 0, "model_warmup[0].batch_size", "the model does not batch"),
        (_sample("s", "zero_data: true", batch_size=0), 4, "model_warmup[0].batch_size", "is 0"),
        (_sample("", "zero_data: true"), 4, "model_warmup[0].name", "is required"),
        (_sample("s", ""), 4, "model_warmup[0].inputs[X]", "zero_data, random_data or input_data_file"),
        (_sample("s", 'input_data_file: "../../escape.bin"'), 4, "input_data_file", "inside the warmup/ folder"),
        (_sample("s", 'input_data_file: "/etc/passwd"'), 4, "input_data_file", "inside the warmup/ folder"),
        ('model_warmup { name: "s" batch_size: 1 }', 4, "model_warmup[0].inputs", "required input(s) ['X']"),
        (
            'model_warmup { name: "s" batch_size: 1 inputs { key: "Z" value { data_type: TYPE_FP32 dims: [1] '
            "zero_data: true } } }",
            4,
            "model_warmup[0].inputs[Z]",
            "not an input of the model",
        ),
        (
            _sample("s", "zero_data: true").replace("TYPE_FP32", "TYPE_INT32"),
            4,
            "model_warmup[0].inputs[X].data_type",
            "the input is TYPE_FP32",
        ),
        (
            _sample("s", "zero_data: true").replace("dims: [ 3 ]", "dims: [ 4 ]"),
            4,
            "model_warmup[0].inputs[X].dims",
            "must match the input's dims [3]",
        ),
    ],
)
def test_bad_samples_are_config_errors(tmp_path, samples, max_batch_size, field, words):
    error = _complete_error(tmp_path, samples, max_batch_size)
    assert error.field.endswith(field) and words in error.message


def test_a_data_file_that_is_missing_short_or_a_link_out_fails_the_load(make_server, tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(np.zeros(3, np.float32).tobytes())
    repository = tmp_path / "models"
    for name, file_name in (("missing", "absent.bin"), ("short", "short.bin"), ("link", "link.bin")):
        samples = _sample("s", f'input_data_file: "{file_name}"')
        model_dir = write_model(repository, name, _config(name, tmp_path / "log", samples), LOGGING_MODEL)
        (model_dir / "1" / "warmup").mkdir()
    (repository / "short" / "1" / "warmup" / "short.bin").write_bytes(b"\0" * 11)
    (repository / "link" / "1" / "warmup" / "link.bin").symlink_to(outside)
    running = make_server([repository], strict_readiness=False)
    http = httpclient.InferenceServerClient(running.http_url)
    try:
        reasons = {name: state_of(http, name)[1] for name in ("missing", "short", "link")}
    finally:
        http.close()
    assert "model_warmup[0].inputs[X].input_data_file" in reasons["missing"] and "cannot read" in reasons["missing"]
    assert "has 11 bytes; dims [3] need 12" in reasons["short"]
    assert "leads out of the warmup folder" in reasons["link"]
    assert not _rows(tmp_path / "log")  # no instance ran anything


def test_an_ensemble_has_no_warmup(tmp_path):
    text = """
name: "e"
platform: "ensemble"
input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] } ]
ensemble_scheduling { step [ { model_name: "m" model_version: -1 input_map { key: "X" value: "X" }
  output_map { key: "Y" value: "Y" } } ] }
model_warmup { name: "s" batch_size: 1 }
"""
    model_dir = tmp_path / "e"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(text)
    config, source = read_model_config(model_dir, "e", None)
    with pytest.raises(ConfigError, match="field 'model_warmup': is not allowed for an ensemble"):
        complete_model_config(config, source, model_dir, "e")
