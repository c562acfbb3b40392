"""An LLM on a GPU gets what the other models leave (or what it declares), and loads after them."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from modelgate.core.byte_sizes import parse_bytes, parse_limit
from modelgate.server.loaded_model import instance_specs
from modelgate.server.memory.ledger import Holder, InsufficientMemoryError, MemoryLedger
from modelgate.server.memory.placement import plan_memory
from tests.server.memory.fake_memory import GIB, FakeMemory
from tests.server_harness import start_server


def _config(name: str, backend: str, **parameters) -> ModelConfig:
    config = ModelConfig(name=name, backend=backend)
    config.instance_group.add(name=f"{name}_0", kind=ModelInstanceGroup.KIND_GPU, count=1)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def _plan(ledger: MemoryLedger, config: ModelConfig):
    return plan_memory(ledger, config, instance_specs(config, Path("/nowhere") / config.name, 1))


def test_an_llm_takes_what_the_others_leave_less_its_headroom():
    ledger = MemoryLedger(FakeMemory([10 * GIB]))
    _plan(ledger, _config("vision", "pytorch", gpu_memory_bytes="4GiB"))
    [llm] = _plan(ledger, _config("llm", "llm")).specs
    assert llm.memory_budget_bytes == 10 * GIB - 4 * GIB - GIB  # gpu_memory_utilization 0.9 keeps 1 GiB aside
    [half] = _plan(MemoryLedger(FakeMemory([10 * GIB])), _config("llm", "llm", gpu_memory_utilization="0.5")).specs
    assert half.memory_budget_bytes == 5 * GIB
    with pytest.raises(InsufficientMemoryError, match=r"needs 1\.5 GiB on GPU 0.*1\.0 GiB free"):
        _plan(ledger, _config("late", "pytorch", gpu_memory_bytes="1.5GiB"))  # the LLM holds all but the headroom


def test_two_llms_on_one_gpu_each_get_their_declared_share():
    ledger = MemoryLedger(FakeMemory([10 * GIB]))
    budgets = [_plan(ledger, _config(n, "llm", gpu_memory_bytes="4.5GiB")).specs[0].memory_budget_bytes for n in "ab"]
    assert budgets == [int(4.5 * GIB)] * 2
    assert ledger.free(ledger.gpus()[0]) == GIB


def test_a_refused_plan_keeps_nothing_reserved():
    ledger = MemoryLedger(FakeMemory([10 * GIB]))
    config = _config("pair", "pytorch", gpu_memory_bytes="6GiB")
    config.instance_group[0].count = 2  # the second instance does not fit beside the first
    with pytest.raises(InsufficientMemoryError, match=r"pair_0_1\) needs 6\.0 GiB.*held by 'pair' 6\.0 GiB"):
        _plan(ledger, config)
    assert ledger.holdings() == [] and ledger.free(ledger.gpus()[0]) == 10 * GIB


def test_settled_figures_keep_a_declared_floor_and_are_remembered():
    ledger = MemoryLedger(FakeMemory([10 * GIB]))
    gpu = ledger.gpus()[0]
    ledger.reserve(Holder("m", 1, "m_0", 1), gpu, 2 * GIB, "declared", floor=2 * GIB)
    ledger.reserve(Holder("n", 1, "n_0", 1), gpu, 1, "estimated")
    ledger.settle([Holder("m", 1, "m_0", 1)], gpu, GIB)
    ledger.settle([Holder("n", 1, "n_0", 1)], gpu, 3 * GIB)
    assert ledger.held(gpu) == 5 * GIB
    assert ledger.remembered("n", 1, "GPU") == 3 * GIB


def test_sizes_and_limits_as_people_write_them():
    assert parse_bytes("2GiB") == parse_bytes("2G") == 2 * GIB
    assert parse_bytes("512MB") == 512 * 10**6 and parse_bytes("1.5GiB") == int(1.5 * GIB) and parse_bytes("17") == 17
    assert parse_limit("0.8", 10 * GIB) == 8 * GIB and parse_limit("25%", 8 * GIB) == 2 * GIB
    assert parse_limit("40GiB", 10 * GIB) == 10 * GIB  # a limit beyond the device is the device
    for bad in ("lots", "2 parsecs", "0", "1.5", "-1GiB"):
        with pytest.raises(ValueError):
            parse_limit(bad, 10 * GIB)


def test_the_server_loads_llms_after_the_other_models(tmp_path, monkeypatch):
    for name, backend in (("a_llm", "llm"), ("b_sized_llm", "llm"), ("z_vision", "pytorch")):
        (tmp_path / name / "1").mkdir(parents=True)
        declared = 'parameters { key: "gpu_memory_bytes" value { string_value: "1GiB" } }' if "sized" in name else ""
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "{backend}"\n{declared}\n')
    order = []

    async def record(self, name, *args, **kwargs):
        order.append(name)

    monkeypatch.setattr("modelgate.server.model_manager.ModelManager.load", record)
    server = start_server([tmp_path])
    server.stop()
    assert order.index("a_llm") > order.index("z_vision")  # sized by what the others leave
    assert order.index("b_sized_llm") < order.index("a_llm")  # declared: no need to wait


def test_a_tensor_parallel_llm_holds_its_share_on_each_of_its_consecutive_gpus():
    ledger = MemoryLedger(FakeMemory([10 * GIB] * 4))
    _plan(ledger, _config("vision", "pytorch", gpu_memory_bytes="4GiB"))  # on GPU 0, the first with most free
    [llm] = _plan(ledger, _config("llm", "llm", tensor_parallel_size="2")).specs
    assert llm.device_id == 1  # GPUs 1 and 2: with GPU 0 in the pair, its tightest GPU would have less
    assert llm.memory_budget_bytes == 10 * GIB - GIB
    free = [ledger.free(gpu) for gpu in ledger.gpus()]
    assert free == [6 * GIB, GIB, GIB, 10 * GIB]
    ranks = sorted(h.holder.instance for h in ledger.holdings() if h.holder.model == "llm")
    assert ranks == ["llm_0_0 rank 0", "llm_0_0 rank 1"]


def test_a_tensor_parallel_llm_placed_by_gpus_declares_its_bytes_per_gpu():
    ledger = MemoryLedger(FakeMemory([10 * GIB] * 2))
    config = _config("llm", "llm", tensor_parallel_size="2", gpu_memory_bytes="3GiB")
    config.instance_group[0].gpus.append(0)
    [llm] = _plan(ledger, config).specs
    assert (llm.device_id, llm.memory_budget_bytes) == (0, 3 * GIB)
    assert [ledger.free(gpu) for gpu in ledger.gpus()] == [7 * GIB, 7 * GIB]


def test_a_tensor_parallel_llm_that_does_not_fit_on_one_rank_keeps_nothing_reserved():
    ledger = MemoryLedger(FakeMemory([10 * GIB] * 2))
    _plan(ledger, _config("vision", "pytorch", gpu_memory_bytes="8GiB"))
    config = _config("llm", "llm", tensor_parallel_size="2", gpu_memory_bytes="4GiB")
    with pytest.raises(InsufficientMemoryError, match=r"llm_0_0 rank 0\) needs 4\.0 GiB on GPU 0"):
        _plan(ledger, config)
    assert [h.holder.model for h in ledger.holdings()] == ["vision"]
    assert [ledger.free(gpu) for gpu in ledger.gpus()] == [2 * GIB, 10 * GIB]


def test_a_pipeline_parallel_llm_takes_tp_times_pp_consecutive_gpus():
    ledger = MemoryLedger(FakeMemory([10 * GIB] * 8))
    _plan(ledger, _config("vision", "pytorch", gpu_memory_bytes="4GiB"))  # on GPU 0
    config = _config("llm", "llm", tensor_parallel_size="2", pipeline_parallel_size="2", gpu_memory_bytes="3GiB")
    [llm] = _plan(ledger, config).specs
    assert (llm.device_id, llm.memory_budget_bytes) == (1, 3 * GIB)  # GPUs 1..4: GPU 0 is the tightest
    assert [ledger.free(gpu) // GIB for gpu in ledger.gpus()] == [6, 7, 7, 7, 7, 10, 10, 10]
    ranks = sorted(h.holder.instance for h in ledger.holdings() if h.holder.model == "llm")
    assert ranks == [f"llm_0_0 rank {r}" for r in range(4)]
    only_stages = _config("llm2", "llm", pipeline_parallel_size="3", gpu_memory_bytes="1GiB")
    [llm2] = _plan(ledger, only_stages).specs
    assert llm2.device_id == 5  # the run of three with the most free memory: GPUs 5, 6, 7
    assert [ledger.free(gpu) // GIB for gpu in ledger.gpus()][5:] == [9, 9, 9]


def test_a_pipeline_parallel_llm_on_too_few_gpus_reserves_nothing():
    ledger = MemoryLedger(FakeMemory([10 * GIB] * 2))
    config = _config("llm", "llm", tensor_parallel_size="2", pipeline_parallel_size="2")
    config.instance_group[0].gpus.append(0)
    [llm] = _plan(ledger, config).specs
    assert llm.device_id == 0  # the engine's start says it needs cuda:3
    assert list(ledger.holdings()) == []
