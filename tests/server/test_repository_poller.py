"""--model-control-mode poll: new, changed and removed models, and reloads that fail.

Servers start with a poll interval of an hour; each test triggers a poll itself with
`poller.poll_once()` on the server loop, so nothing depends on timing.
"""

import os
import shutil
import time

import numpy as np
import pytest

from tests.server.lifecycle_models import (
    INITIALIZE_RAISES_MODEL,
    SCALE_MODEL,
    index_rows,
    infer_x,
    parameter,
    server_error,
    state_of,
    wait_until,
    write_scale_model,
    xy_config,
)
from tests.server_harness import write_model

# Counts its initialize calls in the file named by the `count_file` parameter, then fails.
COUNTED_FAILURE_MODEL = """
import json

class TritonPythonModel:
    def initialize(self, args):
        path = json.loads(args["model_config"])["parameters"]["count_file"]["string_value"]
        with open(path, "a") as counter:
            counter.write("x")
        raise RuntimeError("initialize failed on purpose")

    def execute(self, requests):
        raise AssertionError("never executed")
"""


def _edit(path, text):
    """Write `text` and move the mtime a second on, as a later edit would (the poll compares mtimes)."""
    before = path.stat().st_mtime_ns if path.exists() else time.time_ns()
    path.write_text(text)
    later = max(before + 1_000_000_000, time.time_ns())
    os.utime(path, ns=(later, later))


def _poll(running):
    running.run(running.server.poller.poll_once())


@pytest.fixture
def poll_server(tmp_path, serve):
    """Factory: a poll-mode server of `tmp_path / "repository"` that only polls when told."""

    def start():
        return serve([tmp_path / "repository"], model_control_mode="poll", repository_poll_secs=3600)

    (tmp_path / "repository").mkdir()
    return tmp_path / "repository", start


def test_the_first_poll_loads_every_model(poll_server):
    repository, start = poll_server
    write_scale_model(repository, "a")
    write_scale_model(repository, "b")
    running, client = start()
    assert state_of(client, "a") == ("READY", "") and state_of(client, "b") == ("READY", "")


def test_a_new_model_is_picked_up(poll_server):
    repository, start = poll_server
    write_scale_model(repository, "a")
    running, client = start()
    write_scale_model(repository, "b")
    assert index_rows(client)[("b", "")] == {"name": "b"}  # seen in the repository, not loaded yet
    _poll(running)
    assert state_of(client, "b") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "b", [1.0]), [2.0])


def test_a_new_version_folder_is_picked_up(poll_server):
    repository, start = poll_server
    model_dir = write_scale_model(repository, "a")
    running, client = start()
    (model_dir / "2").mkdir()
    _edit(model_dir / "2" / "model.py", SCALE_MODEL)
    _poll(running)
    assert state_of(client, "a", "2") == ("READY", "")
    assert state_of(client, "a", "1") == ("UNAVAILABLE", "unloaded")
    np.testing.assert_array_equal(infer_x(client, "a", [1.0]), [3.0])


def test_a_changed_config_is_picked_up(poll_server):
    repository, start = poll_server
    model_dir = write_scale_model(repository, "a", extra=parameter("factor", "1"))
    running, client = start()
    np.testing.assert_array_equal(infer_x(client, "a", [2.0]), [3.0])

    _edit(model_dir / "config.pbtxt", xy_config("a", parameter("factor", "5"), max_batch_size=2))
    _poll(running)

    config = client.get_model_config("a")
    assert config["parameters"]["factor"]["string_value"] == "5"
    assert config["max_batch_size"] == 2
    np.testing.assert_array_equal(infer_x(client, "a", [[2.0]]), [[11.0]])


def test_a_poll_without_changes_reloads_nothing(poll_server):
    repository, start = poll_server
    write_scale_model(repository, "a")
    running, client = start()
    for _ in range(3):
        infer_x(client, "a", [1.0])
    _poll(running)
    _poll(running)
    # A reload would have started the statistics afresh.
    assert client.get_inference_statistics("a")["model_stats"][0]["inference_count"] == 3


def test_a_removed_model_is_unloaded_and_leaves_the_index(poll_server):
    repository, start = poll_server
    write_scale_model(repository, "a")
    write_scale_model(repository, "b")
    running, client = start()
    shutil.rmtree(repository / "b")
    _poll(running)
    assert {name for (name, _) in index_rows(client)} == {"a"}
    assert server_error(infer_x, client, "b", [1.0]).status() == "404"
    assert client.get_inference_statistics()["model_stats"][0]["name"] == "a"
    assert len(client.get_inference_statistics()["model_stats"]) == 1
    np.testing.assert_array_equal(infer_x(client, "a", [1.0]), [2.0])

    write_scale_model(repository, "b")  # and it comes back when it is back
    _poll(running)
    assert state_of(client, "b") == ("READY", "")


def test_a_reload_whose_initialize_raises_keeps_the_serving_version(poll_server, tmp_path):
    repository, start = poll_server
    count_file = tmp_path / "initialize_calls"
    model_dir = write_scale_model(repository, "a", extra=parameter("count_file", str(count_file)))
    running, client = start()

    _edit(model_dir / "1" / "model.py", COUNTED_FAILURE_MODEL)
    _poll(running)
    assert count_file.read_text() == "x"  # the new code did run
    assert state_of(client, "a") == ("READY", "")
    assert client.is_model_ready("a")
    np.testing.assert_array_equal(infer_x(client, "a", [1.0]), [2.0])  # still the old code

    _poll(running)
    assert count_file.read_text() == "x"  # the same broken files are not retried on every poll

    _edit(model_dir / "1" / "model.py", SCALE_MODEL.replace("x * self.factor", "x * self.factor * 2"))
    _poll(running)
    np.testing.assert_array_equal(infer_x(client, "a", [1.0]), [3.0])


def test_a_reload_with_an_invalid_config_keeps_the_serving_version(poll_server):
    repository, start = poll_server
    model_dir = write_scale_model(repository, "a")
    running, client = start()

    _edit(model_dir / "config.pbtxt", xy_config("a") + "\nunknown_field: 1\n")
    _poll(running)
    assert state_of(client, "a") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "a", [1.0]), [2.0])
    assert "unknown_field" not in str(client.get_model_config("a"))

    _edit(model_dir / "config.pbtxt", xy_config("a", parameter("factor", "3")))
    _poll(running)
    np.testing.assert_array_equal(infer_x(client, "a", [1.0]), [4.0])


def test_a_model_that_fails_its_first_load_is_unavailable_until_fixed(poll_server):
    repository, start = poll_server
    model_dir = write_model(repository, "a", xy_config("a"), INITIALIZE_RAISES_MODEL)
    write_scale_model(repository, "b")
    running, client = start()
    state, reason = state_of(client, "a")
    assert state == "UNAVAILABLE" and "weights file is corrupt" in reason
    assert client.is_model_ready("b")

    _edit(model_dir / "1" / "model.py", SCALE_MODEL)
    _poll(running)
    assert state_of(client, "a") == ("READY", "")


def test_a_broken_model_that_is_removed_leaves_the_index(poll_server):
    repository, start = poll_server
    write_model(repository, "a", 'name: "a"\nbackend: "nope"\n', SCALE_MODEL)
    running, client = start()
    row = index_rows(client)[("a", "")]
    assert row["state"] == "UNAVAILABLE" and "'nope' is not an available backend" in row["reason"]
    shutil.rmtree(repository / "a")
    _poll(running)
    assert client.get_model_repository_index() == []


def test_a_model_that_becomes_duplicated_is_unloaded_and_reported(tmp_path, serve):
    first, second = tmp_path / "one", tmp_path / "two"
    write_scale_model(first, "a")
    second.mkdir()
    running, client = serve([first, second], model_control_mode="poll", repository_poll_secs=3600)
    assert client.is_model_ready("a")

    write_scale_model(second, "a")
    _poll(running)
    assert not client.is_model_ready("a")
    row = index_rows(client)[("a", "")]
    assert row["state"] == "UNAVAILABLE" and "more than one repository" in row["reason"]

    shutil.rmtree(second / "a")
    _poll(running)
    assert state_of(client, "a") == ("READY", "")


def test_the_background_poll_runs_on_its_interval(tmp_path, serve):
    """No poll_once here: only the server's own polls (every 0.05 s) can load `late` and then unload it."""
    write_scale_model(tmp_path, "a")
    running, client = serve([tmp_path], model_control_mode="poll", repository_poll_secs=0.05)
    write_scale_model(tmp_path, "late")
    wait_until(lambda: client.is_model_ready("late"), "a background poll to load 'late'")
    np.testing.assert_array_equal(infer_x(client, "late", [1.0]), [2.0])
    shutil.rmtree(tmp_path / "late")
    wait_until(lambda: {name for name, _ in index_rows(client)} == {"a"}, "a later background poll to drop 'late'")
    assert server_error(infer_x, client, "late", [1.0]).status() == "404"
    assert state_of(client, "a") == ("READY", "")
