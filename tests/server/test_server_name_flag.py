"""`--server-name`: the name server metadata reports; a bad one is refused naming the flag."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from modelgate.core.version import DEFAULT_SERVER_NAME
from modelgate.server.settings import ServerSettings


def test_the_default_is_modelgate(tmp_path):
    assert ServerSettings(model_repository=[tmp_path]).server_name == DEFAULT_SERVER_NAME == "modelgate"


@pytest.mark.parametrize("name", ["", "two words", "tab\tinside", "x" * 129])
def test_an_empty_spaced_or_overlong_name_is_refused(tmp_path, name):
    with pytest.raises(ValidationError):
        ServerSettings(model_repository=[tmp_path], server_name=name)


def test_the_cli_names_the_flag_when_it_refuses_one(tmp_path):
    command = [sys.executable, "-m", "modelgate", "serve", "--model-repository", str(tmp_path), "--server-name", "a b"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2
    assert "--server-name" in finished.stderr
