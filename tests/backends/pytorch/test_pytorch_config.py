"""Configs of PyTorch models: auto-completion from torch.export programs, and load-time errors."""

import pytest
import torch
import tritonclient.http as httpclient

from modelgate.backends.base import InstanceSpec
from modelgate.backends.pytorch.instance_device import instance_device
from modelgate.core.errors import ConfigError
from tests.backends.pytorch.torch_models import AddSub, write_torchscript


def _tensors(entries):
    return [(e["name"], e["data_type"], e["dims"], "reshape" in e) for e in entries]


def test_config_of_an_exported_program_with_a_dynamic_batch_dimension(torch_server):
    config = torch_server.http.get_model_config("token_weights")
    assert config["max_batch_size"] == 4  # Triton's default for auto-completed batching models
    assert "dynamic_batching" in config
    assert config["default_model_filename"] == "model.pt2"
    assert _tensors(config["input"]) == [("tokens", "TYPE_INT64", [5], False), ("weight", "TYPE_FP32", [5], False)]
    assert _tensors(config["output"]) == [("weighted", "TYPE_FP32", [5], False), ("count", "TYPE_INT64", [1], True)]
    assert config["output"][1]["reshape"] == {"shape": []}


def test_config_of_an_exported_program_with_static_shapes(torch_server):
    config = torch_server.grpc.get_model_config("static_double", as_json=True)["config"]
    assert config.get("max_batch_size", 0) == 0
    assert "dynamic_batching" not in config
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("x", "TYPE_FP32", ["2", "3"])]
    assert [(o["name"], o["dims"]) for o in config["output"]] == [("OUTPUT__0", ["2", "3"]), ("OUTPUT__1", ["2", "1"])]


def test_declared_tensors_of_an_exported_program_are_kept(torch_server):
    config = torch_server.http.get_model_config("exported_indexed")
    assert config["max_batch_size"] == 16
    assert [i["name"] for i in config["input"]] == ["INPUT__0"]
    assert [o["name"] for o in config["output"]] == ["OUTPUT__0", "OUTPUT__1"]


@pytest.mark.parametrize(
    "model, expected",
    [
        ("untyped", ["field 'input'", "is required for a TorchScript model"]),
        ("missing_argument", ["field 'input'", "forward() also needs b"]),
        ("bad_index", ["field 'input[0].name'", "'INPUT__3' names argument 3", "forward() takes 1 argument(s): x"]),
    ],
)
def test_models_that_do_not_fit_their_module_fail_to_load_with_the_reason(torch_server, model, expected):
    rows = {row["name"]: row for row in torch_server.http.get_model_repository_index()}
    assert rows[model]["state"] == "UNAVAILABLE"
    assert all(part in rows[model]["reason"] for part in expected), rows[model]["reason"]
    assert rows["add_sub"]["state"] == "READY"


def test_gpu_instances_need_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = InstanceSpec("m", 1, "m_0_0", "GPU", 0, tmp_path, tmp_path / "1", config=None)
    with pytest.raises(ConfigError) as caught:
        instance_device(spec)
    assert caught.value.field == "instance_group.kind" and "KIND_GPU needs CUDA" in str(caught.value)
    assert instance_device(InstanceSpec("m", 1, "m_0_0", "CPU", 0, tmp_path, tmp_path / "1", None)).device.type == "cpu"


def test_a_gpu_model_on_a_machine_without_cuda_reports_why(monkeypatch, make_server, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_torchscript(
        tmp_path,
        "on_gpu",
        AddSub(),
        """
        name: "on_gpu"
        backend: "pytorch"
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] },
                { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]
        """,
    )
    running = make_server([tmp_path])
    client = httpclient.InferenceServerClient(running.http_url)
    (row,) = client.get_model_repository_index()
    assert row["state"] == "UNAVAILABLE" and "KIND_GPU needs CUDA" in row["reason"]
    client.close()
