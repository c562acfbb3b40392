"""Python models in environments of their own: EXECUTION_ENV_PATH (an archive or a folder) and python_interpreter.

The environment is a venv built here (no pip, no network) holding a module of its own, `only_in_env`, and its own
`iniconfig` (which the server has too): a model that imports both and reports `sys.executable` proves where it runs
and that the environment's packages win over the server's.
"""

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from modelgate.backends.python.execution_env import EnvironmentProblem, unpacked
from tests.server_harness import write_model

CONFIG = """
name: "{name}"
backend: "python"
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
"""

MODEL = """
import json, sys
import numpy as np
import iniconfig, only_in_env
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):  # runs where the model's imports are: in its environment
        config.add_output({"name": only_in_env.OUTPUT, "data_type": "TYPE_STRING", "dims": [1]})
        return config

    def execute(self, requests):
        facts = {"executable": sys.executable, "constant": only_in_env.CONSTANT, "iniconfig": iniconfig.__file__}
        out = np.array([json.dumps(facts).encode()], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(only_in_env.OUTPUT, out)]) for _ in requests]
"""

SITE_PACKAGES = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory) -> Path:
    """A venv of the server's Python with copies, not links, of the interpreter: an archive of it is relocatable."""
    env = tmp_path_factory.mktemp("envs") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--copies", str(env)], check=True)
    (env / SITE_PACKAGES / "only_in_env.py").write_text('CONSTANT = "from the env"\nOUTPUT = "FACTS"\n')
    (env / SITE_PACKAGES / "iniconfig.py").write_text("# the environment's own, ahead of the server's\n")
    return env


@pytest.fixture(scope="module")
def env_archive(env_dir, tmp_path_factory) -> Path:
    archive = tmp_path_factory.mktemp("archives") / "env.tar.gz"
    _pack(env_dir, archive)
    return archive


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MODELGATE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "python_envs"


def _pack(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)


def _config(name: str, **parameters: str) -> str:
    lines = [f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in parameters.items()]
    return CONFIG.format(name=name) + "\n".join(lines)


def _write_model(
    repository: Path, name: str, archive: Path | None = None, model: str = MODEL, **parameters: str
) -> Path:
    model_dir = write_model(repository, name, _config(name, **parameters), model)
    if archive is not None:
        shutil.copy(archive, model_dir / archive.name)
    return model_dir


def _facts(http, model: str) -> dict:
    tensor = httpclient.InferInput("X", [1], "FP32")
    tensor.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    return json.loads(http.infer(model, [tensor]).as_numpy("FACTS")[0])


def _reasons(http) -> dict[str, str]:
    return {row["name"]: row.get("reason", "") for row in http.get_model_repository_index()}


def test_a_model_runs_in_its_own_environment(tmp_path, env_dir, env_archive, cache_dir, make_server):
    repository = tmp_path / "models"
    _write_model(repository, "packed", env_archive, EXECUTION_ENV_PATH="$$TRITON_MODEL_DIRECTORY/env.tar.gz")
    _write_model(repository, "folder", EXECUTION_ENV_PATH=str(env_dir))
    _write_model(repository, "named", python_interpreter=str(env_dir / "bin/python3"))
    running = make_server([repository])
    http = httpclient.InferenceServerClient(running.http_url, network_timeout=60)

    assert importlib.util.find_spec("iniconfig").origin != str(env_dir / SITE_PACKAGES / "iniconfig.py")  # ours
    (unpacked_env,) = cache_dir.iterdir()
    packed = _facts(http, "packed")
    assert packed["executable"] == str(unpacked_env / "bin/python3")
    assert packed["constant"] == "from the env"
    assert packed["iniconfig"] == str(unpacked_env / SITE_PACKAGES / "iniconfig.py")
    for model in ("folder", "named"):
        facts = _facts(http, model)
        assert facts["executable"] == str(env_dir / "bin/python3")
        assert facts["constant"] == "from the env"
        assert facts["iniconfig"] == str(env_dir / SITE_PACKAGES / "iniconfig.py")
    http.close()


def test_an_archive_is_unpacked_once(tmp_path, env_archive, cache_dir, make_server, monkeypatch):
    extractions = []
    extractall = tarfile.TarFile.extractall

    def counted_extractall(tar, *args, **kwargs):
        extractions.append(tar.name)
        return extractall(tar, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", counted_extractall)
    repository = tmp_path / "models"
    _write_model(repository, "first", env_archive, EXECUTION_ENV_PATH="$$TRITON_MODEL_DIRECTORY/env.tar.gz")
    _write_model(repository, "second", env_archive, EXECUTION_ENV_PATH="$$TRITON_MODEL_DIRECTORY/env.tar.gz")
    running = make_server([repository], model_control_mode="explicit", load_model=["first"])
    http = httpclient.InferenceServerClient(running.http_url, network_timeout=60)
    assert _facts(http, "first")["constant"] == "from the env"
    # Mark the unpacked copy: the second model (its own copy of the same archive) must run in this very folder.
    (unpacked_env,) = cache_dir.iterdir()
    (unpacked_env / SITE_PACKAGES / "only_in_env.py").write_text('CONSTANT = "from the cache"\nOUTPUT = "FACTS"\n')
    http.load_model("second")
    assert _facts(http, "second")["constant"] == "from the cache"
    assert list(cache_dir.iterdir()) == [unpacked_env]
    assert len(extractions) == 1  # the first model's load unpacked it, the second's did not
    http.close()


def test_loads_at_once_share_one_unpacked_copy(tmp_path, env_archive):
    cache = tmp_path / "cache"
    barrier = threading.Barrier(4)
    results: list[Path] = []

    def load() -> None:
        barrier.wait()
        results.append(unpacked(env_archive, cache))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert list(cache.iterdir()) == [results[0]]  # no scratch folder left behind
    assert (results[0] / SITE_PACKAGES / "only_in_env.py").is_file()


def _member(name: str, data: bytes = b"x", link: str | None = None) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        return info, None
    info.size = len(data)
    return info, io.BytesIO(data)


@pytest.mark.parametrize(
    "member",
    [
        _member("../escaped.txt"),
        _member("bin/python3", link="/usr/bin/python3"),
        _member("lib/escape", link="../../escaped.txt"),
    ],
    ids=["dot-dot", "absolute-link", "link-outside"],
)
def test_an_archive_member_that_escapes_is_refused(tmp_path, member):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(*_member("bin/ok.txt"))
        tar.addfile(*member)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(EnvironmentProblem, match="refused"):
        unpacked(archive, cache)
    assert list(cache.iterdir()) == []  # nothing escaped into the cache, nothing was published, no scratch left


def test_an_absolute_member_lands_inside_the_environment(tmp_path):
    outside = tmp_path / "outside.txt"
    archive = tmp_path / "absolute.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(*_member(str(outside)))
    env = unpacked(archive, tmp_path / "cache")
    assert not outside.exists()
    assert (env / str(outside).lstrip("/")).is_file()


def test_environment_problems_fail_the_load_naming_parameter_and_path(tmp_path, env_dir, cache_dir, make_server):
    repository = tmp_path / "models"
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    no_python = tmp_path / "no_python"
    (no_python / "lib").mkdir(parents=True)
    _pack(no_python, tmp_path / "no_python.tar.gz")
    old_python = tmp_path / "old_python"
    old_python.write_text("#!/bin/sh\necho 2.7\n")  # answers the version probe as Python 2.7 would
    old_python.chmod(0o755)
    env = "$$TRITON_MODEL_DIRECTORY/"
    _write_model(repository, "missing_archive", EXECUTION_ENV_PATH=env + "nowhere.tar.gz")
    _write_model(repository, "corrupt_archive", corrupt, EXECUTION_ENV_PATH=env + "corrupt.tar.gz")
    _write_model(repository, "no_python", tmp_path / "no_python.tar.gz", EXECUTION_ENV_PATH=env + "no_python.tar.gz")
    not_in_env = MODEL.replace("import iniconfig, only_in_env", "import not_in_env")
    _write_model(repository, "import_fails", model=not_in_env, EXECUTION_ENV_PATH=str(env_dir))
    _write_model(repository, "missing_interpreter", python_interpreter=str(tmp_path / "absent/bin/python3"))
    _write_model(repository, "other_version", python_interpreter=str(old_python))
    _write_model(repository, "in_thread", EXECUTION_ENV_PATH=str(env_dir), isolation="thread")
    _write_model(repository, "both", EXECUTION_ENV_PATH=str(env_dir), python_interpreter=str(env_dir / "bin/python3"))
    running = make_server([repository])
    http = httpclient.InferenceServerClient(running.http_url)
    reasons = _reasons(http)
    http.close()

    def says(model: str, field: str, *words: str) -> None:
        assert f"parameters.{field}" in reasons[model], reasons[model]
        for word in words:
            assert word in reasons[model], reasons[model]

    says("missing_archive", "EXECUTION_ENV_PATH", f"'{repository / 'missing_archive' / 'nowhere.tar.gz'}'", "not exist")
    says("corrupt_archive", "EXECUTION_ENV_PATH", "cannot unpack", str(repository / "corrupt_archive"))
    says("no_python", "EXECUTION_ENV_PATH", "no bin/python3", str(repository / "no_python" / "no_python.tar.gz"))
    assert "No module named 'not_in_env'" in reasons["import_fails"] and str(env_dir) in reasons["import_fails"]
    says("missing_interpreter", "python_interpreter", str(tmp_path / "absent/bin/python3"), "not exist")
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    says("other_version", "python_interpreter", "is Python 2.7", f"needs Python {ours}", str(old_python))
    says("in_thread", "EXECUTION_ENV_PATH", "needs isolation 'process'")
    says("both", "python_interpreter", "not both")
    assert not any(name.startswith(".") for name in os.listdir(cache_dir))  # failed unpacks left nothing
