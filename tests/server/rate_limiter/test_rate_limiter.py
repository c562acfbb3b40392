"""The rate limiter on its own: sizing, refusals at load, who starts next, and giving resources back."""

import asyncio

import pytest

from modelgate.backends.base import InstanceLoadError
from modelgate.core.errors import UnavailableError
from modelgate.server.rate_limiter.rate_limiter import RateLimiter
from modelgate.server.rate_limiter.resource_flags import parse_rate_limit_resources
from tests.server.rate_limiter.limited_specs import limited_specs, resource


def _limiter(*flags: str) -> RateLimiter:
    return RateLimiter(parse_rate_limit_resources(list(flags)))


def test_default_sizes_are_the_largest_count_any_instance_lists():
    """Triton's example: A [R1: 4, R2: 4], B [R2: 5, R3: 10, R4: 5], C [R1: 1, R3: 7, R4: 2]."""
    limiter = _limiter()
    limiter.register(limited_specs("a", resource("R1", 4) + resource("R2", 4)))
    limiter.register(limited_specs("b", resource("R2", 5) + resource("R3", 10) + resource("R4", 5)))
    limiter.register(limited_specs("c", resource("R1", 1) + resource("R3", 7) + resource("R4", 2)))
    assert [limiter.capacity(name, 0) for name in ("R1", "R2", "R3", "R4")] == [4, 5, 10, 5]


def test_flags_size_resources_per_device_and_global_ones_once():
    """Triton's two-device example: R1:10 R2:5:0 R2:8:1 R3:2, R3 global in a config."""
    limiter = _limiter("R1:10", "R2:5:0", "R2:8:1", "R3:2")
    for device in (0, 1):
        limiter.register(limited_specs(f"m{device}", resource("R1", 1) + resource("R2", 1), device=device))
    limiter.register(limited_specs("g", resource("R3", 1, is_global=True)))
    assert (limiter.capacity("R1", 0), limiter.capacity("R2", 0)) == (10, 5)
    assert (limiter.capacity("R1", 1), limiter.capacity("R2", 1)) == (10, 8)
    assert limiter.capacity("R3", None) == 2


def test_sizes_shrink_when_the_instance_that_needed_most_unloads():
    limiter = _limiter()
    limiter.register(limited_specs("small", resource("R1", 2)))
    big = limiter.register(limited_specs("big", resource("R1", 6)))
    assert limiter.capacity("R1", 0) == 6
    limiter.unregister(big)
    assert limiter.capacity("R1", 0) == 2


def test_a_count_below_an_instance_s_need_refuses_its_load_in_triton_s_words():
    limiter = _limiter("resource1:3")
    with pytest.raises(InstanceLoadError) as raised:
        limiter.register(limited_specs("m", resource("resource1", 4)))
    assert str(raised.value).startswith(
        'Resource count for "resource1" is limited to 3 which will prevent scheduling of one or more model '
        "instances, the minimum required count is 4"
    )
    assert "--rate-limit-resource resource1:4" in str(raised.value)


def test_a_resource_given_for_another_device_only_is_limited_to_0_on_this_one():
    with pytest.raises(InstanceLoadError, match='"r1" is limited to 0 which will prevent scheduling'):
        _limiter("R1:10:10").register(limited_specs("m", resource("R1", 4), device=0))


def test_a_name_global_in_one_model_and_per_device_in_another_refuses_the_second():
    limiter = _limiter()
    limiter.register(limited_specs("a", resource("R2", 2, is_global=True)))
    with pytest.raises(InstanceLoadError) as raised:
        limiter.register(limited_specs("b", resource("r2", 2)))
    assert 'Resource "r2" is present as both global and device-specific resource' in str(raised.value)
    assert "model 'a'" in str(raised.value) and "model 'b'" in str(raised.value)


def test_an_instance_without_resources_is_not_limited():
    assert _limiter().register(limited_specs("m", "priority: 3")) == [None]


async def _started(*tasks) -> list[bool]:
    for _ in range(3):
        await asyncio.sleep(0)
    return [task.done() for task in tasks]


async def test_an_execution_waits_until_the_resources_it_needs_are_released():
    limiter = _limiter()
    [a] = limiter.register(limited_specs("a", resource("R1", 1)))
    [b] = limiter.register(limited_specs("b", resource("R1", 1)))
    await limiter.acquire(a)
    waiting = asyncio.create_task(limiter.acquire(b))
    assert await _started(waiting) == [False]
    assert limiter.in_use("R1", 0) == 1
    limiter.release(a)
    assert await _started(waiting) == [True]
    limiter.release(b)
    assert limiter.in_use("R1", 0) == 0


async def test_per_device_resources_do_not_hold_up_instances_on_other_devices_but_global_ones_do():
    limiter = _limiter()
    [gpu0] = limiter.register(limited_specs("m0", resource("R1", 1), device=0))
    [gpu1] = limiter.register(limited_specs("m1", resource("R1", 1), device=1))
    [g0] = limiter.register(limited_specs("g0", resource("G", 1, is_global=True), device=0))
    [g1] = limiter.register(limited_specs("g1", resource("G", 1, is_global=True), device=1))
    await limiter.acquire(gpu0)
    other_device = asyncio.create_task(limiter.acquire(gpu1))
    await limiter.acquire(g0)
    shared = asyncio.create_task(limiter.acquire(g1))
    assert await _started(other_device, shared) == [True, False]
    limiter.release(g0)
    assert await _started(shared) == [True]


async def _order_of_starts(limiter: RateLimiter, queued: list, blocker) -> list[str]:
    """Each of `queued` (instance, times) waits `times` executions behind `blocker`; the order they then run."""
    order = []

    async def execute(instance):
        await limiter.acquire(instance)
        order.append(instance.model_name)
        await asyncio.sleep(0)
        limiter.release(instance)

    await limiter.acquire(blocker)
    tasks = [asyncio.create_task(execute(instance)) for instance, times in queued for _ in range(times)]
    await _started(*tasks)
    limiter.release(blocker)
    await asyncio.gather(*tasks)
    return order


async def test_priority_2_starts_half_as_often_as_priority_1_while_both_wait():
    limiter = _limiter()
    [blocker] = limiter.register(limited_specs("blocker", resource("R1", 1)))
    [slow] = limiter.register(limited_specs("p2", resource("R1", 1) + "priority: 2"))
    [fast] = limiter.register(limited_specs("p1", resource("R1", 1) + "priority: 1"))
    order = await _order_of_starts(limiter, [(slow, 6), (fast, 6)], blocker)
    # Equal passes at first: the longer waiting (p2) goes; then p1 twice for each p2.
    assert order[:9] == ["p2", "p1", "p1", "p2", "p1", "p1", "p2", "p1", "p1"]


async def test_equal_priorities_take_turns_and_priority_0_is_priority_1():
    limiter = _limiter()
    [blocker] = limiter.register(limited_specs("blocker", resource("R1", 1)))
    [a] = limiter.register(limited_specs("a", resource("R1", 1) + "priority: 0"))
    [b] = limiter.register(limited_specs("b", resource("R1", 1) + "priority: 1"))
    assert await _order_of_starts(limiter, [(a, 3), (b, 3)], blocker) == ["a", "b"] * 3


async def test_a_large_need_is_not_overtaken_by_small_ones_on_the_same_resource():
    limiter = _limiter("R1:2")
    [small] = limiter.register(limited_specs("small", resource("R1", 1), count=2))[:1]
    [large] = limiter.register(limited_specs("large", resource("R1", 2)))
    [late] = limiter.register(limited_specs("late", resource("R1", 1)))
    await limiter.acquire(small)
    large_waits = asyncio.create_task(limiter.acquire(large))
    await _started(large_waits)
    late_waits = asyncio.create_task(limiter.acquire(late))  # one copy is free, but `large` waits first
    assert await _started(large_waits, late_waits) == [False, False]
    limiter.release(small)
    assert await _started(large_waits, late_waits) == [True, False]
    limiter.release(large)
    assert await _started(late_waits) == [True]


async def test_a_cancelled_wait_holds_nothing_and_no_longer_holds_others_back():
    limiter = _limiter("R1:2")
    [small] = limiter.register(limited_specs("small", resource("R1", 1)))
    [large] = limiter.register(limited_specs("large", resource("R1", 2)))
    [other] = limiter.register(limited_specs("other", resource("R1", 1)))
    await limiter.acquire(small)
    large_waits = asyncio.create_task(limiter.acquire(large))
    other_waits = asyncio.create_task(limiter.acquire(other))
    assert await _started(large_waits, other_waits) == [False, False]
    large_waits.cancel()
    assert await _started(other_waits) == [True]
    assert limiter.in_use("R1", 0) == 2


async def test_unloading_refuses_waiting_executions_and_running_ones_still_release():
    limiter = _limiter()
    [a] = limiter.register(limited_specs("a", resource("R1", 1)))
    [b] = limiter.register(limited_specs("b", resource("R1", 1)))
    await limiter.acquire(a)
    waiting = asyncio.create_task(limiter.acquire(b))
    await _started(waiting)
    limiter.unregister([b])
    with pytest.raises(UnavailableError, match="model 'b' is unloading"):
        await waiting
    limiter.unregister([a])  # a's execution is still running
    limiter.release(a)
    assert limiter.in_use("R1", 0) == 0
