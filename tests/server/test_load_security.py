"""Load requests cannot reach outside the model repository: model names and `file:` paths.

A model folder sits beside the repository; its initialize writes a marker file, so any load
of it, by any path trick, would show.
"""

import tempfile
from urllib.parse import quote

import numpy as np
import pytest

from modelgate.core.errors import InvalidArgumentError
from tests.server.lifecycle_models import (
    MARKER_MODEL,
    SCALE_MODEL,
    config_json,
    infer_x,
    raw_request,
    server_error,
    state_of,
    write_scale_model,
    xy_config,
)
from tests.server_harness import write_model


@pytest.fixture
def guarded(tmp_path, serve, monkeypatch):
    """(running, client, outside model folder, private temp folder) of an explicit-mode server."""
    repository = tmp_path / "repository"
    write_scale_model(repository, "good")
    outside = write_model(tmp_path, "outside", xy_config("outside"), MARKER_MODEL)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # where override folders would go
    running, client = serve(
        [repository], model_control_mode="explicit", load_model=["good"], allow_model_file_uploads=True
    )
    return running, client, outside, private_tmp


def _assert_untouched(client, outside, private_tmp):
    assert not (outside / "LOADED_MARKER").exists()
    assert client.get_model_repository_index() == [{"name": "good", "version": "1", "state": "READY", "reason": ""}]
    np.testing.assert_array_equal(infer_x(client, "good", [1.0]), [2.0])
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize(
    "encoded_name",
    [
        "..%2Foutside",
        "%2E%2E%2Foutside",
        "%2E%2E",
        "..",
        "a%2Fb",
        "good%2F..%2F..%2Foutside",
        "..%5Coutside",
        "good%0A",
        "good%00",
        ".hidden",
    ],
)
@pytest.mark.parametrize("action", ["load", "unload"])
def test_encoded_names_that_try_to_leave_are_bad_requests(guarded, encoded_name, action):
    running, client, outside, private_tmp = guarded
    status, body = raw_request(running, "POST", f"/v2/repository/models/{encoded_name}/{action}", b"{}")
    assert status == 400
    assert "invalid model name" in body["error"]
    _assert_untouched(client, outside, private_tmp)


def test_an_absolute_path_as_the_name_is_a_bad_request(guarded):
    running, client, outside, private_tmp = guarded
    status, body = raw_request(running, "POST", f"/v2/repository/models/{quote(str(outside), safe='')}/load", b"{}")
    assert status == 400
    assert "invalid model name" in body["error"]
    _assert_untouched(client, outside, private_tmp)


@pytest.mark.parametrize("name", ["../outside", "a/b", "..", "/abs/outside", "..%2Foutside", "../../etc/passwd"])
def test_tritonclient_names_that_try_to_leave_are_refused(guarded, name):
    running, client, outside, private_tmp = guarded
    if name == "/abs/outside":
        name = str(outside)
    error = server_error(client.load_model, name)
    # tritonclient leaves '/' unquoted: such names reach no route (404); the others are invalid (400).
    assert error.status() == ("404" if "/" in name else "400")
    _assert_untouched(client, outside, private_tmp)


def test_the_dataplane_refuses_such_names_itself(guarded):
    running, client, outside, private_tmp = guarded
    for name in ("../outside", str(outside), "good/../../outside"):
        with pytest.raises(InvalidArgumentError):
            running.run(running.server.dataplane.load_model(name))
        with pytest.raises(InvalidArgumentError):
            running.run(running.server.dataplane.unload_model(name))
    _assert_untouched(client, outside, private_tmp)


@pytest.mark.parametrize(
    "path",
    [
        "file:../escape.py",
        "file:../../escape.py",
        "file:1/../../escape.py",
        "file:/tmp/escape.py",
        "file:1\\..\\..\\x.py",
    ],
)
def test_file_paths_with_dot_dot_or_absolute_are_refused(guarded, path):
    running, client, outside, private_tmp = guarded
    files = {"file:1/model.py": SCALE_MODEL.encode(), path: b"raise SystemExit('escaped')"}
    error = server_error(client.load_model, "good", config=config_json("good"), files=files)
    assert error.status() == "400"
    assert f"'{path}'" in error.message() and "without '..'" in error.message()
    _assert_untouched(client, outside, private_tmp)
    assert not [p for p in private_tmp.parent.rglob("escape.py")]


def test_override_files_are_deleted_on_unload_and_on_a_failed_load(guarded):
    running, client, outside, private_tmp = guarded
    files = {"file:1/model.py": SCALE_MODEL.encode()}
    client.load_model("good", config=config_json("good"), files=files)
    (override_root,) = private_tmp.iterdir()
    assert (override_root / "good" / "1" / "model.py").read_bytes() == SCALE_MODEL.encode()

    client.load_model("good")  # back to the repository: the sent files go
    assert list(private_tmp.iterdir()) == []

    broken = {"file:1/model.py": b"raise RuntimeError('bad module')"}
    server_error(client.load_model, "good", config=config_json("good"), files=broken)
    assert list(private_tmp.iterdir()) == []

    client.load_model("good", config=config_json("good"), files=files)
    client.unload_model("good")
    assert list(private_tmp.iterdir()) == []
    assert state_of(client, "good") == ("UNAVAILABLE", "unloaded")
