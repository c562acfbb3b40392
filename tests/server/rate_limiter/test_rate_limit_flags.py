"""`--rate-limit` and `--rate-limit-resource`: Triton's flags, refused with errors naming them."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from modelgate.server.settings import ServerSettings


def test_the_rate_limiter_is_off_by_default_and_on_with_execution_count(tmp_path):
    assert ServerSettings(model_repository=[tmp_path]).rate_limiter() is None
    limiter = ServerSettings(
        model_repository=[tmp_path], rate_limit="execution_count", rate_limit_resource=["R1:4", "R1:2:1"]
    ).rate_limiter()
    assert limiter.explicit.per_device("r1", 0) == 4 and limiter.explicit.per_device("r1", 1) == 2


def test_an_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="'off' or 'execution_count'"):
        ServerSettings(model_repository=[tmp_path], rate_limit="priority")


def test_resources_without_the_rate_limiter_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="--rate-limit-resource needs --rate-limit execution_count"):
        ServerSettings(model_repository=[tmp_path], rate_limit_resource=["R1:4"])


def _serve(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "modelgate", "serve", "--model-repository", str(tmp_path), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_cli_names_the_flag_and_the_format_of_a_bad_resource(tmp_path):
    finished = _serve(tmp_path, "--rate-limit", "execution_count", "--rate-limit-resource", "R1")
    assert finished.returncode == 2
    assert "--rate-limit-resource: Value error, 'R1': expected <name>:<count>[:<device>]" in finished.stderr


def test_the_cli_lists_the_modes_for_a_bad_one(tmp_path):
    finished = _serve(tmp_path, "--rate-limit", "sometimes")
    assert finished.returncode == 2
    assert "--rate-limit: invalid choice: 'sometimes' (choose from" in finished.stderr
    assert "execution_count" in finished.stderr
