"""Instance groups become instances placed as Triton places them."""

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from modelgate.server.loaded_model import instance_specs
from modelgate.server.memory.placement import ANY_GPU


def _config(**group) -> ModelConfig:
    config = ModelConfig(name="m", backend="pytorch")
    config.instance_group.add(name="m_0", **group)
    return config


def test_cpu_groups_make_count_instances(monkeypatch):
    specs = instance_specs(_config(count=3, kind=ModelInstanceGroup.KIND_CPU), Path("/r/m"), 1)
    assert [(s.instance_name, s.kind, s.device_id) for s in specs] == [
        ("m_0_0", "CPU", 0),
        ("m_0_1", "CPU", 0),
        ("m_0_2", "CPU", 0),
    ]


def test_gpu_groups_make_count_instances_on_each_listed_gpu():
    specs = instance_specs(_config(count=2, kind=ModelInstanceGroup.KIND_GPU, gpus=[1, 3]), Path("/r/m"), 1)
    assert [(s.instance_name, s.device_id) for s in specs] == [("m_0_0", 1), ("m_0_1", 1), ("m_0_2", 3), ("m_0_3", 3)]
    assert {s.kind for s in specs} == {"GPU"}


def test_gpu_groups_without_gpus_leave_the_gpu_to_the_memory_ledger():
    specs = instance_specs(_config(count=2, kind=ModelInstanceGroup.KIND_GPU), Path("/r/m"), 1)
    assert [s.device_id for s in specs] == [ANY_GPU, ANY_GPU]


def test_kind_auto_picks_gpu_only_when_gpus_are_visible(monkeypatch):
    import modelgate.server.repository.config_completion as completion
    from modelgate.backends.base import backend_for_config

    for visible, expected in ((0, ModelInstanceGroup.KIND_CPU), (1, ModelInstanceGroup.KIND_GPU)):
        monkeypatch.setattr(completion, "visible_gpu_count", lambda visible=visible: visible)
        config = _config(count=1, kind=ModelInstanceGroup.KIND_AUTO)
        completion._fill_defaults(config, backend_for_config(config, "test"))
        assert config.instance_group[0].kind == expected
