"""Version folders and version_policy, through a running server and tritonclient.http."""

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server.lifecycle_models import (
    SCALE_MODEL,
    config_json,
    index_rows,
    infer_x,
    server_error,
    write_scale_model,
)
from tests.server_harness import start_server

IGNORED_FOLDER_MODEL = 'raise RuntimeError("a non-numeric folder was loaded as a version")\n'


@pytest.fixture(scope="module")
def versions_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("versions")
    write_scale_model(
        repository, "latest_two", versions=(1, 2, 3), extra="version_policy { latest { num_versions: 2 } }"
    )
    write_scale_model(repository, "every", versions=(1, 2, 3), extra="version_policy { all { } }")
    write_scale_model(
        repository, "chosen", versions=(1, 2, 3), extra="version_policy { specific { versions: [ 1, 3 ] } }"
    )
    write_scale_model(repository, "default_policy", versions=(1, 5, 10))
    for folder in ("latest", "2a", "v4", "²", "07"):
        (repository / "every" / folder).mkdir()
        (repository / "every" / folder / "model.py").write_text(IGNORED_FOLDER_MODEL)
    running = start_server([repository])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def versions_client(versions_server):
    client = httpclient.InferenceServerClient(versions_server.http_url, network_timeout=60)
    yield client
    client.close()


EXPECTED_VERSIONS = {"latest_two": ["2", "3"], "every": ["1", "2", "3"], "chosen": ["1", "3"], "default_policy": ["10"]}


def test_index_lists_exactly_the_served_versions_as_ready(versions_client):
    rows = index_rows(versions_client)
    for name, versions in EXPECTED_VERSIONS.items():
        listed = sorted((v for (n, v) in rows if n == name), key=int)
        assert listed == versions, name
        assert all(rows[(name, v)]["state"] == "READY" for v in versions)


def test_metadata_versions_follow_the_policy(versions_client):
    for name, versions in EXPECTED_VERSIONS.items():
        assert versions_client.get_model_metadata(name)["versions"] == versions, name
    assert versions_client.get_model_metadata("every", model_version="2")["versions"] == ["2"]


def test_infer_on_a_specific_version(versions_client):
    x = np.array([1.0, 2.0], dtype=np.float32)
    for name, versions in EXPECTED_VERSIONS.items():
        for version in versions:
            np.testing.assert_array_equal(infer_x(versions_client, name, x, version=version), x + int(version))


def test_default_version_is_the_highest_served_one(versions_client):
    x = np.zeros(3, dtype=np.float32)
    np.testing.assert_array_equal(infer_x(versions_client, "every", x), x + 3)
    np.testing.assert_array_equal(infer_x(versions_client, "chosen", x), x + 3)
    np.testing.assert_array_equal(infer_x(versions_client, "default_policy", x), x + 10)  # 10 > 5 > 1 numerically


def test_readiness_per_version(versions_client):
    assert versions_client.is_model_ready("latest_two", "3")
    assert versions_client.is_model_ready("latest_two", "2")
    assert not versions_client.is_model_ready("latest_two", "1")  # on disk, not selected
    assert versions_client.is_model_ready("chosen", "1")
    assert not versions_client.is_model_ready("chosen", "2")
    assert not versions_client.is_model_ready("every", "4")


@pytest.mark.parametrize(
    "name, version", [("every", "7"), ("latest_two", "1"), ("chosen", "2"), ("default_policy", "9")]
)
def test_a_version_that_is_not_served_is_not_found(versions_client, name, version):
    error = server_error(infer_x, versions_client, name, [1.0], version=version)
    assert error.status() == "404"
    assert f"Request for unknown model: '{name}' version {version} is not found" in error.message()
    metadata_error = server_error(versions_client.get_model_metadata, name, model_version=version)
    assert metadata_error.status() == "404"


def test_a_version_that_is_not_a_number_is_a_bad_request(versions_client):
    error = server_error(infer_x, versions_client, "every", [1.0], version="latest")
    assert error.status() == "400"
    assert "failed to get model version from specified version string 'latest'" in error.message()


def test_non_numeric_folders_are_ignored(versions_client):
    rows = index_rows(versions_client)
    assert {v for (n, v) in rows if n == "every"} == {"1", "2", "3"}
    assert versions_client.is_model_ready("every")


def test_config_reports_the_policy_and_the_response_its_version(versions_client):
    config = versions_client.get_model_config("chosen")
    assert config["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert versions_client.get_model_config("default_policy")["version_policy"] == {"latest": {"num_versions": 1}}
    tensor = httpclient.InferInput("X", [1], "FP32")
    tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
    assert versions_client.infer("chosen", [tensor], model_version="1").get_response()["model_version"] == "1"
    assert versions_client.infer("chosen", [tensor]).get_response()["model_version"] == "3"


def test_reload_with_a_narrower_policy_unloads_the_dropped_versions(tmp_path, serve):
    write_scale_model(tmp_path, "m", versions=(1, 2, 3), extra="version_policy { all { } }")
    running, client = serve([tmp_path], model_control_mode="explicit", load_model=["m"])
    assert sorted(v for (n, v) in index_rows(client) if n == "m") == ["1", "2", "3"]

    client.load_model("m", config=config_json("m", {"version_policy": {"latest": {"num_versions": 1}}}))

    rows = index_rows(client)
    assert rows[("m", "3")]["state"] == "READY"
    for version in ("1", "2"):
        assert (rows[("m", version)]["state"], rows[("m", version)]["reason"]) == ("UNAVAILABLE", "unloaded")
        error = server_error(infer_x, client, "m", [1.0], version=version)
        assert error.status() == "503"
        assert "UNAVAILABLE" in error.message() and "unloaded" in error.message()
    assert client.get_model_metadata("m")["versions"] == ["3"]


def test_a_new_version_folder_is_served_after_an_explicit_reload(tmp_path, serve):
    model_dir = write_scale_model(tmp_path, "m", versions=(1,))
    running, client = serve([tmp_path], model_control_mode="explicit", load_model=["m"])
    np.testing.assert_array_equal(infer_x(client, "m", [0.0]), [1.0])

    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.py").write_text(SCALE_MODEL)
    np.testing.assert_array_equal(infer_x(client, "m", [0.0]), [1.0])  # nothing changes until a load
    client.load_model("m")

    np.testing.assert_array_equal(infer_x(client, "m", [0.0]), [2.0])
    assert client.get_model_metadata("m")["versions"] == ["2"]
    assert (index_rows(client)[("m", "1")]["state"], index_rows(client)[("m", "1")]["reason"]) == (
        "UNAVAILABLE",
        "unloaded",
    )
