"""A load request names no file: through tritonclient HTTP and gRPC against an explicit-mode server.

- A `config` override setting any parameter of modelgate.core.path_parameters.PATH_PARAMETERS (the LLM's
  trace_file, the python backend's EXECUTION_ENV_PATH and python_interpreter, ...) is refused: 400 /
  INVALID_ARGUMENT naming the parameter, and nothing is written where it pointed.
- Model file names (default_model_filename) are plain names inside the version folder.
- Model files sent with the request (`file:` parameters) are refused (403 / PERMISSION_DENIED) unless the server was
  started with --allow-model-file-uploads, and accepted with it.
- The repository's own config file may still set trace_file: the operator's file is written.
After every refusal the server keeps serving add_sub.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelgate.core.config_files import read_config_file
from modelgate.core.config_json import config_to_dict
from modelgate.core.path_parameters import EXECUTION_ENV_PATH, PATH_PARAMETERS, PYTHON_INTERPRETER, TRACE_FILE
from tests.server.lifecycle_models import SCALE_MODEL, config_json, infer_x
from tests.server_harness import RunningServer, copy_example_model, start_server

PROTOCOLS = ("http", "grpc")
INVALID = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
DENIED = {"http": "403", "grpc": "StatusCode.PERMISSION_DENIED"}
# Written on import: shows whether a model file outside the version folder (or an upload) was ever run.
IMPORT_MARKER_MODEL = """
from pathlib import Path
Path({marker!r}).write_text("imported")

class TritonPythonModel:
    def execute(self, requests):
        return []
"""


@dataclass
class Guarded:
    running: RunningServer
    root: Path  # everything the test made lives under it
    repository: Path
    operator_trace: Path  # the trace_file the repository's tiny_llm config names
    private_tmp: Path  # where upload folders would be made
    cache_dir: Path  # where an EXECUTION_ENV_PATH archive would be unpacked
    marker: Path  # written by any model file outside the repository that runs


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    repository = root / "repository"
    copy_example_model(repository, "add_sub")
    operator_trace = root / "operator" / "tiny_llm.jsonl"
    with (copy_example_model(repository, "tiny_llm") / "config.pbtxt").open("a") as config:
        config.write(f'parameters {{ key: "{TRACE_FILE}" value {{ string_value: "{operator_trace}" }} }}\n')
        config.write('parameters { key: "show_progress" value { string_value: "false" } }\n')
    marker = root / "MARKER"
    (root / "outside" / "1").mkdir(parents=True)
    (root / "outside" / "1" / "model.py").write_text(IMPORT_MARKER_MODEL.format(marker=str(marker)))
    private_tmp = root / "tmp"
    private_tmp.mkdir()
    saved_tempdir, saved_cache = tempfile.tempdir, os.environ.get("MODELGATE_CACHE_DIR")
    tempfile.tempdir = str(private_tmp)
    os.environ["MODELGATE_CACHE_DIR"] = str(root / "cache")
    running = start_server([repository], model_control_mode="explicit", load_model=["add_sub"])
    yield Guarded(running, root, repository, operator_trace, private_tmp, root / "cache", marker)
    running.stop()
    tempfile.tempdir = saved_tempdir
    if saved_cache is None:
        os.environ.pop("MODELGATE_CACHE_DIR", None)
    else:
        os.environ["MODELGATE_CACHE_DIR"] = saved_cache


def load_error(running: RunningServer, protocol: str, name: str, config: dict, files=None) -> InferenceServerException:
    """The error a load request with `config` (and `files`) gets, through that protocol's tritonclient."""
    if protocol == "http":
        client = httpclient.InferenceServerClient(running.http_url, network_timeout=120)
    else:
        client = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        client.load_model(name, config=json.dumps(config), files=files)
    except InferenceServerException as exc:
        return exc
    finally:
        client.close()
    raise AssertionError(f"load of '{name}' with {config.get('parameters')} was accepted")


def repository_config(guarded: Guarded, model: str) -> dict:
    return config_to_dict(read_config_file(guarded.repository / model / "config.pbtxt"))


def assert_still_serving(guarded: Guarded) -> None:
    """add_sub answers, its serving config names no file, and nothing was written outside the repository."""
    client = httpclient.InferenceServerClient(guarded.running.http_url)
    try:
        inputs = [httpclient.InferInput(name, [4], "FP32") for name in ("INPUT0", "INPUT1")]
        inputs[0].set_data_from_numpy(np.array([1, 2, 3, 4], dtype=np.float32))
        inputs[1].set_data_from_numpy(np.array([1, 1, 1, 1], dtype=np.float32))
        np.testing.assert_array_equal(client.infer("add_sub", inputs).as_numpy("OUTPUT0"), [2, 3, 4, 5])
        assert not set(client.get_model_config("add_sub").get("parameters", {})) & set(PATH_PARAMETERS)
    finally:
        client.close()
    assert not guarded.marker.exists()
    assert list(guarded.private_tmp.iterdir()) == []
    assert not guarded.cache_dir.exists()


def _env_archive(root: Path) -> Path:
    """A packed environment that would work: loading it would unpack it into the cache folder."""
    archive = root / "env.tar.gz"
    if not archive.exists():
        (root / "env" / "bin").mkdir(parents=True)
        (root / "env" / "bin" / "python3").symlink_to(sys.executable)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root / "env", arcname=".")
    return archive


def _client_value(guarded: Guarded, parameter: str, target: Path) -> str:
    """A value that would be used if the parameter were accepted: a file to write, an environment, python."""
    if parameter == PYTHON_INTERPRETER:
        return sys.executable
    if parameter == EXECUTION_ENV_PATH:
        return str(_env_archive(guarded.root))
    return str(target)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("parameter", sorted(PATH_PARAMETERS))
def test_an_override_naming_a_path_parameter_is_refused_and_writes_nothing(guarded, parameter, protocol):
    model = "tiny_llm" if parameter == TRACE_FILE else "add_sub"
    target = guarded.root / "client-chosen" / f"{parameter}-{protocol}" / "written.jsonl"
    config = repository_config(guarded, model)
    config.setdefault("parameters", {})[parameter] = {"string_value": _client_value(guarded, parameter, target)}

    error = load_error(guarded.running, protocol, model, config)

    assert error.status() == INVALID[protocol]
    assert f"parameters.{parameter}" in error.message()
    assert "a load request may not set a parameter that names a file" in error.message()
    assert not target.parent.exists()
    assert_still_serving(guarded)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_uppercased_spelling_is_refused_too(guarded, protocol):
    config = repository_config(guarded, "tiny_llm")
    target = guarded.root / "client-chosen" / f"upper-{protocol}.jsonl"
    parameters = config.setdefault("parameters", {})
    parameters.pop("trace_file", None)  # the repository's own: the spelling below must be what is refused
    parameters["TRACE_FILE"] = {"string_value": str(target)}
    error = load_error(guarded.running, protocol, "tiny_llm", config)
    assert error.status() == INVALID[protocol] and "parameters.TRACE_FILE" in error.message()
    assert not target.exists()
    assert_still_serving(guarded)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("file_name", ["../../../outside/1/model.py", "<absolute>", "1/model.py", ".."])
def test_a_model_file_name_that_leaves_the_version_folder_is_refused(guarded, file_name, protocol):
    if file_name == "<absolute>":
        file_name = str(guarded.root / "outside" / "1" / "model.py")
    config = repository_config(guarded, "add_sub")
    config["default_model_filename"] = file_name

    error = load_error(guarded.running, protocol, "add_sub", config)

    assert error.status() == INVALID[protocol]
    assert "default_model_filename" in error.message() and "plain file name" in error.message()
    assert_still_serving(guarded)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_uploaded_model_files_are_refused_without_the_flag(guarded, protocol):
    files = {"file:1/model.py": IMPORT_MARKER_MODEL.format(marker=str(guarded.marker)).encode()}
    config = json.loads(config_json("uploaded"))

    error = load_error(guarded.running, protocol, "uploaded", config, files)

    assert error.status() == DENIED[protocol]
    assert "'file:' parameters" in error.message() and "--allow-model-file-uploads" in error.message()
    assert_still_serving(guarded)  # among others: no upload folder was made, the file never ran


def test_the_repository_config_may_set_trace_file(guarded):
    client = httpclient.InferenceServerClient(guarded.running.http_url, network_timeout=300)
    try:
        client.load_model("tiny_llm")
    finally:
        client.close()
    body = {"text_input": "The capital of France is", "parameters": {"max_tokens": 4, "temperature": 0}}
    answer = requests.post(f"http://{guarded.running.http_url}/v2/models/tiny_llm/generate", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    (record,) = [json.loads(line) for line in guarded.operator_trace.read_text().splitlines()]
    assert record["finish_reason"] in ("stop", "length")
    assert_still_serving(guarded)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_uploaded_model_files_are_served_when_the_flag_allows_them(tmp_path, make_server, protocol):
    copy_example_model(tmp_path / "repository", "add_sub")
    running = make_server([tmp_path / "repository"], model_control_mode="explicit", allow_model_file_uploads=True)
    files = {"file:1/model.py": SCALE_MODEL.encode()}
    if protocol == "http":
        loader = httpclient.InferenceServerClient(running.http_url, network_timeout=120)
    else:
        loader = grpcclient.InferenceServerClient(running.grpc_url)
    loader.load_model("uploaded", config=config_json("uploaded"), files=files)
    loader.close()
    client = httpclient.InferenceServerClient(running.http_url)
    np.testing.assert_array_equal(infer_x(client, "uploaded", [1.0, 2.0]), [2.0, 3.0])
    client.close()


@pytest.mark.parametrize(
    ("flags", "allowed"),
    [([], False), (["--allow-model-file-uploads"], True), (["--allow-model-file-uploads", "false"], False)],
)
def test_the_upload_flag_is_off_unless_given(flags, allowed):
    from modelgate.cli import build_parser

    assert build_parser().parse_args(["serve", *flags]).allow_model_file_uploads is allowed
