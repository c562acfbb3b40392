"""Model states READY / UNAVAILABLE / LOADING / UNLOADING with their reasons, and failing models.

Models that must stay LOADING or UNLOADING wait for a release file; the test releases them.
"""

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server.lifecycle_models import (
    EXECUTE_RAISES_MODEL,
    INITIALIZE_RAISES_MODEL,
    SCALE_MODEL,
    SLOW_FINALIZE_MODEL,
    SLOW_INITIALIZE_MODEL,
    config_json,
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

INIT_FAILURE = "RuntimeError: weights file is corrupt (initialize of version 1)"


@pytest.fixture
def dirs(tmp_path):
    """(repository, control): release files live outside the repository."""
    repository, control = tmp_path / "repository", tmp_path / "control"
    repository.mkdir()
    control.mkdir()
    return repository, control


def _in_thread(pool, url, method, *args, **kwargs):
    """Call a client method on a worker thread with its own client (clients are not thread-safe)."""

    def call():
        client = httpclient.InferenceServerClient(url, network_timeout=60)
        try:
            return getattr(client, method)(*args, **kwargs)
        finally:
            client.close()

    return pool.submit(call)


@contextmanager
def _released_at_exit(release):
    """Whatever happens in the block, the waiting model is released (no 30 s hang on a failure)."""
    try:
        yield
    finally:
        release.touch()


def _write_waiting_model(repository, control, name, source, versions=(1,)):
    release = control / f"{name}.release"
    write_model(repository, name, xy_config(name, parameter("release_file", str(release))), source, versions=versions)
    return release


# -- LOADING and UNLOADING ---------------------------------------------------------------------


def test_a_loading_model_is_loading_in_the_index_and_not_ready(dirs, serve):
    repository, control = dirs
    release = _write_waiting_model(repository, control, "slow", SLOW_INITIALIZE_MODEL)
    write_scale_model(repository, "fast")
    running, client = serve([repository], model_control_mode="explicit", load_model=["fast"])

    with ThreadPoolExecutor(1) as pool, _released_at_exit(release):
        loading = _in_thread(pool, running.http_url, "load_model", "slow")
        wait_until(lambda: state_of(client, "slow") == ("LOADING", ""), "'slow' to be LOADING")
        assert not client.is_model_ready("slow")
        error = server_error(infer_x, client, "slow", [1.0])
        assert error.status() == "503"
        assert "version 1 is LOADING" in error.message()
        np.testing.assert_array_equal(infer_x(client, "fast", [1.0]), [2.0])  # others keep serving meanwhile
        assert not loading.done()
        release.touch()
        loading.result(timeout=30)

    assert state_of(client, "slow") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "slow", [4.0]), [4.0])


def test_an_unloading_model_is_unloading_in_the_index(dirs, serve):
    repository, control = dirs
    release = _write_waiting_model(repository, control, "sticky", SLOW_FINALIZE_MODEL)
    running, client = serve([repository], model_control_mode="explicit", load_model=["sticky"])
    assert state_of(client, "sticky") == ("READY", "")

    with ThreadPoolExecutor(1) as pool, _released_at_exit(release):
        unloading = _in_thread(pool, running.http_url, "unload_model", "sticky")
        wait_until(lambda: state_of(client, "sticky") == ("UNLOADING", ""), "'sticky' to be UNLOADING")
        assert not client.is_model_ready("sticky")
        error = server_error(infer_x, client, "sticky", [1.0])
        assert error.status() == "503"
        assert "version 1 is UNLOADING" in error.message()
        release.touch()
        unloading.result(timeout=30)

    assert state_of(client, "sticky") == ("UNAVAILABLE", "unloaded")


def test_a_reload_keeps_the_old_version_serving_while_the_new_one_loads(dirs, serve):
    repository, control = dirs
    release = _write_waiting_model(repository, control, "m", SLOW_INITIALIZE_MODEL)
    release.touch()  # the first load goes through at once
    running, client = serve([repository], model_control_mode="explicit", load_model=["m"])
    release.unlink()
    waiting = control / "m.release.waiting"
    waiting.unlink()
    write_model(repository, "m", None, SLOW_INITIALIZE_MODEL, versions=(2,))

    with ThreadPoolExecutor(1) as pool, _released_at_exit(release):
        reloading = _in_thread(pool, running.http_url, "load_model", "m")
        wait_until(waiting.exists, "version 2 to wait in initialize")
        rows = index_rows(client)
        assert (rows[("m", "1")]["state"], rows[("m", "2")]["state"]) == ("READY", "LOADING")
        assert client.get_model_metadata("m")["versions"] == ["1"]
        infer_x(client, "m", [1.0])  # version 1 answers during the reload
        assert client.infer("m", [_x()]).get_response()["model_version"] == "1"
        release.touch()
        reloading.result(timeout=30)

    assert state_of(client, "m", "2") == ("READY", "")
    assert state_of(client, "m", "1") == ("UNAVAILABLE", "unloaded")
    assert client.infer("m", [_x()]).get_response()["model_version"] == "2"


def _x():
    tensor = httpclient.InferInput("X", [1], "FP32")
    tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
    return tensor


# -- failing models ----------------------------------------------------------------------------


def test_a_model_whose_initialize_raises_is_unavailable_and_the_others_serve(dirs, serve):
    repository, _ = dirs
    write_model(repository, "broken", xy_config("broken"), INITIALIZE_RAISES_MODEL)
    write_scale_model(repository, "good")
    running, client = serve([repository])  # none mode: a failing model does not stop the start

    state, reason = state_of(client, "broken")
    assert state == "UNAVAILABLE"
    assert INIT_FAILURE in reason
    assert not client.is_model_ready("broken")
    error = server_error(infer_x, client, "broken", [1.0])
    assert error.status() == "503"
    assert INIT_FAILURE in error.message()
    assert state_of(client, "good") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "good", [1.0]), [2.0])
    assert client.is_server_ready() is False  # strict readiness, Triton's default: "broken" counts


def test_an_explicit_load_of_a_failing_model_reports_the_exception(dirs, serve):
    repository, _ = dirs
    write_model(repository, "broken", xy_config("broken"), INITIALIZE_RAISES_MODEL)
    write_scale_model(repository, "good")
    running, client = serve([repository], model_control_mode="explicit", load_model=["good"])

    error = server_error(client.load_model, "broken")
    assert error.status() in ("400", "503")
    assert "'broken'" in error.message() and INIT_FAILURE in error.message()
    assert state_of(client, "broken")[0] == "UNAVAILABLE"
    np.testing.assert_array_equal(infer_x(client, "good", [1.0]), [2.0])

    # Fixing the model and loading it again brings it up.
    (repository / "broken" / "1" / "model.py").write_text(SCALE_MODEL)
    client.load_model("broken")
    assert state_of(client, "broken") == ("READY", "")


def test_a_failing_reload_keeps_the_serving_version(dirs, serve):
    repository, _ = dirs
    write_scale_model(repository, "m")
    running, client = serve(
        [repository], model_control_mode="explicit", load_model=["m"], allow_model_file_uploads=True
    )
    for _ in range(2):
        infer_x(client, "m", [1.0])

    error = server_error(
        client.load_model, "m", config=config_json("m"), files={"file:1/model.py": INITIALIZE_RAISES_MODEL.encode()}
    )
    assert "previous versions keep serving" in error.message()
    assert INIT_FAILURE in error.message()
    assert state_of(client, "m") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "m", [1.0]), [2.0])
    stats = client.get_inference_statistics("m")["model_stats"][0]
    assert stats["inference_count"] == 3  # the failed reload did not reset the serving version's statistics


def test_a_model_with_a_bad_config_is_unavailable_with_the_config_error(dirs, serve):
    repository, _ = dirs
    write_model(repository, "badcfg", xy_config("badcfg", "version_policy { latest { num_versions: 0 } }"), SCALE_MODEL)
    write_scale_model(repository, "good")
    running, client = serve([repository])
    row = index_rows(client)[("badcfg", "")]
    assert row["state"] == "UNAVAILABLE"
    assert str(repository / "badcfg" / "config.pbtxt") in row["reason"]
    assert "version_policy.latest.num_versions" in row["reason"]
    error = server_error(infer_x, client, "badcfg", [1.0])
    assert error.status() == "503" and "num_versions" in error.message()
    assert client.is_model_ready("good")


def test_an_execute_exception_fails_only_that_request(dirs, serve):
    repository, _ = dirs
    write_model(repository, "picky", xy_config("picky"), EXECUTE_RAISES_MODEL)
    running, client = serve([repository])
    np.testing.assert_array_equal(infer_x(client, "picky", [1.0, 2.0]), [1.0, 2.0])

    error = server_error(infer_x, client, "picky", [-1.0])
    assert error.status() == "400"
    assert "ValueError: negative input is not allowed by this model" in error.message()

    np.testing.assert_array_equal(infer_x(client, "picky", [3.0]), [3.0])
    assert state_of(client, "picky") == ("READY", "")
    stats = client.get_inference_statistics("picky")["model_stats"][0]["inference_stats"]
    assert (stats["success"]["count"], stats["fail"]["count"]) == (2, 1)


# -- several repositories ------------------------------------------------------------------------


def test_a_model_in_two_repositories_is_reported_not_served(tmp_path, serve):
    first, second = tmp_path / "one", tmp_path / "two"
    write_scale_model(first, "shared")
    write_scale_model(second, "shared")
    write_scale_model(first, "only_first")
    write_scale_model(second, "only_second")
    running, client = serve([first, second])

    rows = index_rows(client)
    shared = rows[("shared", "")]
    assert shared["state"] == "UNAVAILABLE"
    assert "more than one repository" in shared["reason"]
    assert str(first.resolve()) in shared["reason"] and str(second.resolve()) in shared["reason"]
    assert not client.is_model_ready("shared")
    assert server_error(infer_x, client, "shared", [1.0]).status() == "404"
    for name in ("only_first", "only_second"):
        np.testing.assert_array_equal(infer_x(client, name, [1.0]), [2.0])


def test_an_explicit_load_of_a_duplicated_model_says_why(tmp_path, serve):
    first, second = tmp_path / "one", tmp_path / "two"
    write_scale_model(first, "shared")
    write_scale_model(second, "shared")
    running, client = serve([first, second], model_control_mode="explicit", load_model=["*"])
    error = server_error(client.load_model, "shared")
    assert error.status() == "400"
    assert "more than one repository" in error.message()
    assert [r for r in client.get_model_repository_index() if r["name"] == "shared"][0]["state"] == "UNAVAILABLE"
