"""Statistics across the lifecycle: a reload starts them afresh, an unload removes them."""

import numpy as np

from tests.server.lifecycle_models import (
    SCALE_MODEL,
    config_json,
    infer_x,
    server_error,
    write_scale_model,
)


def _counts(client, name, version=""):
    (stats,) = client.get_inference_statistics(name, version)["model_stats"]
    return stats["inference_count"], stats["execution_count"], stats["inference_stats"]["success"]["count"]


def test_statistics_reset_on_reload(tmp_path, serve):
    write_scale_model(tmp_path, "m")
    running, client = serve([tmp_path], model_control_mode="explicit", load_model=["m"])
    for _ in range(3):
        infer_x(client, "m", [1.0])
    assert _counts(client, "m") == (3, 3, 3)

    client.load_model("m")
    assert _counts(client, "m") == (0, 0, 0)
    infer_x(client, "m", [1.0])
    assert _counts(client, "m") == (1, 1, 1)

    client.load_model("m", config=config_json("m", max_batch_size=4))
    assert _counts(client, "m") == (0, 0, 0)
    infer_x(client, "m", np.ones((3, 1)))
    assert _counts(client, "m", "1") == (3, 1, 1)  # batch rows, executions, requests


def test_statistics_reset_when_a_poll_reloads(tmp_path, serve):
    model_dir = write_scale_model(tmp_path, "m")
    running, client = serve([tmp_path], model_control_mode="poll", repository_poll_secs=3600)
    infer_x(client, "m", [1.0])
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.py").write_text(SCALE_MODEL)
    running.run(running.server.poller.poll_once())
    model_stats = client.get_inference_statistics("m")["model_stats"]
    assert [(s["version"], s["inference_count"]) for s in model_stats] == [("2", 0)]


def test_an_unloaded_model_has_no_statistics(tmp_path, serve):
    write_scale_model(tmp_path, "m")
    write_scale_model(tmp_path, "other")
    running, client = serve([tmp_path], model_control_mode="explicit", load_model=["*"])
    infer_x(client, "m", [1.0])
    client.unload_model("m")
    assert [s["name"] for s in client.get_inference_statistics()["model_stats"]] == ["other"]
    error = server_error(client.get_inference_statistics, "m")
    assert error.status() == "503"
    assert "unloaded" in error.message()

    client.load_model("m")
    assert _counts(client, "m") == (0, 0, 0)


def test_statistics_of_an_unknown_model_or_version_are_not_found(tmp_path, serve):
    write_scale_model(tmp_path, "m")
    running, client = serve([tmp_path], model_control_mode="explicit", load_model=["m"])
    unknown = server_error(client.get_inference_statistics, "nope")
    assert unknown.status() == "404"
    assert "'nope'" in unknown.message()
    assert server_error(client.get_inference_statistics, "m", "9").status() == "404"
    never_loaded = write_scale_model(tmp_path, "later")
    assert never_loaded.exists()
    assert server_error(client.get_inference_statistics, "later").status() == "404"
