"""Instance slots: one batch per instance, or up to an instance's pipeline depth when the pool is pipelined."""

import asyncio
from pathlib import Path

import pytest
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import Backend, ExecuteResult, InstanceSpec, ModelInstance
from modelgate.core.inference_types import InferResponse
from modelgate.server.scheduling.instance_pool import InstancePool


class HeldInstance(ModelInstance):
    """Answers a batch only when the test says so; records which batches it holds."""

    def __init__(self, name: str, depth: int):
        self.name = name
        self.pipeline_depth = depth
        self.held: list[asyncio.Future] = []

    def submit(self, requests):
        future = asyncio.get_running_loop().create_future()
        self.held.append(future)
        return future

    def execute(self, requests):  # never used: every batch is submitted
        raise AssertionError("execute called")

    def answer_all(self) -> None:
        for future in self.held:
            if not future.done():
                future.set_result(ExecuteResult([InferResponse("m", "1")]))


class HeldBackend(Backend):
    def __init__(self, depths: list[int]):
        self.depths = iter(depths)
        self.instances: list[HeldInstance] = []

    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
        instance = HeldInstance(spec.instance_name, next(self.depths))
        self.instances.append(instance)
        return instance


def _specs(count: int) -> list[InstanceSpec]:
    return [
        InstanceSpec("m", 1, f"m_{k}", "CPU", 0, Path("/nonexistent"), Path("/nonexistent/1"), ModelConfig(name="m"))
        for k in range(count)
    ]


async def _started(pool: InstancePool, count: int) -> list[asyncio.Task]:
    tasks = [asyncio.create_task(pool.run([])) for _ in range(count)]
    for _ in range(5):
        await asyncio.sleep(0)
    return tasks


@pytest.mark.parametrize(("pipelined", "held"), [(False, [1, 1]), (True, [3, 2])])
async def test_an_instance_holds_up_to_its_depth_only_when_pipelined(pipelined, held):
    backend = HeldBackend([3, 2])
    pool = InstancePool(_specs(2), pipelined=pipelined)
    await pool.load(backend)
    tasks = await _started(pool, 8)
    assert [len(i.held) for i in backend.instances] == held  # the rest wait in the server
    for _ in range(4):  # answering frees slots for the waiting batches, until all ran
        for instance in backend.instances:
            instance.answer_all()
        for _ in range(5):
            await asyncio.sleep(0)
    results = await asyncio.gather(*tasks)
    assert len(results) == 8 and sum(len(i.held) for i in backend.instances) == 8
    await pool.close()


async def test_first_batches_spread_over_the_instances_before_any_gets_a_second():
    backend = HeldBackend([4, 4, 4])
    pool = InstancePool(_specs(3), pipelined=True)
    await pool.load(backend)
    tasks = await _started(pool, 3)
    assert [len(i.held) for i in backend.instances] == [1, 1, 1]
    for instance in backend.instances:
        instance.answer_all()
    await asyncio.gather(*tasks)
    await pool.close()
