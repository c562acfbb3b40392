"""Which requests of an instance's sequences run together next (direct and oldest), and the slot table."""

import time
from dataclasses import replace
from types import SimpleNamespace

from modelgate.server.scheduling.sequence.batch_forming import choose_batch
from modelgate.server.scheduling.sequence.correlation import SequenceFlags
from modelgate.server.scheduling.sequence.sequence_config import SequenceConfig
from modelgate.server.scheduling.sequence.sequence_table import Sequence, SequenceEntry, SequenceTable

DIRECT = SequenceConfig(
    model_name="m",
    is_oldest=False,
    has_batch_dim=True,
    max_batch_size=4,
    slots_per_instance=4,
    idle_ns=10**9,
    max_delay_ns=0,
    min_slot_utilization=0.0,
    preferred_sizes=(),
    controls=(),
    states=(),
)
OLDEST = replace(DIRECT, is_oldest=True)


def _signature(request):
    return request.shape


def _sequence(slot: int, *arrivals_and_shapes) -> Sequence:
    sequence = Sequence(key=(int, slot), slot=(0, slot))
    for arrival, shape in arrivals_and_shapes:
        request = SimpleNamespace(shape=shape)
        sequence.queue.append(SequenceEntry(request, SequenceFlags(slot + 1, False, False), None, arrival))
    return sequence


def test_direct_puts_requests_at_their_slots_and_pads_the_gaps():
    holders = [_sequence(0), _sequence(1, (5, (1,))), _sequence(3, (6, (1,)))]
    choice = choose_batch(holders, DIRECT, _signature)
    assert [s.slot[1] if s else None for s in choice.batch] == [None, 1, None, 3]
    assert choice.wait_ns == 0


def test_direct_leaves_out_requests_of_other_shapes_for_the_next_batch():
    holders = [_sequence(0, (1, (2,))), _sequence(1, (2, (3,))), _sequence(2, (3, (2,)))]
    choice = choose_batch(holders, DIRECT, _signature)
    assert [s.slot[1] if s else None for s in choice.batch] == [0, None, 2]


def test_direct_waits_for_minimum_slot_utilization_until_the_delay():
    config = replace(DIRECT, min_slot_utilization=0.5, max_delay_ns=60 * 10**9)
    now = time.monotonic_ns()
    assert choose_batch([_sequence(0, (now, (1,)))], config, _signature).wait_ns > 0
    two = [_sequence(0, (now, (1,))), _sequence(1, (now, (1,)))]
    assert choose_batch(two, config, _signature).wait_ns == 0
    late = [_sequence(0, (now - 61 * 10**9, (1,)))]
    assert choose_batch(late, config, _signature).wait_ns == 0


def test_oldest_takes_the_oldest_requests_one_per_sequence():
    holders = [_sequence(0, (30, (1,)), (31, (1,))), _sequence(1, (10, (1,))), _sequence(2, (20, (1,)))]
    choice = choose_batch(holders, replace(OLDEST, max_batch_size=2), _signature)
    assert [s.slot[1] for s in choice.batch] == [1, 2]
    assert choice.wait_ns == 0  # full


def test_oldest_runs_at_the_largest_preferred_size_else_waits_the_delay():
    config = replace(OLDEST, preferred_sizes=(2,), max_delay_ns=60 * 10**9)
    now = time.monotonic_ns()
    one = [_sequence(0, (now, (1,)))]
    assert choose_batch(one, config, _signature).wait_ns > 0
    three = one + [_sequence(1, (now, (1,))), _sequence(2, (now, (1,)))]
    choice = choose_batch(three, config, _signature)
    assert (len(choice.batch), choice.wait_ns) == (2, 0)


def test_slots_go_lowest_index_first_across_instances_and_the_backlog_takes_a_freed_one():
    table = SequenceTable(num_instances=2, slots_per_instance=1)
    first, second, third = (table.start((int, k)) for k in (1, 2, 3))
    assert (first.slot, second.slot, third.slot) == ((0, 0), (1, 0), None)
    assert table.release(second, was_idle=True) is third
    assert third.slot == (1, 0) and (int, 2) in table.released_idle
    assert table.release(first) is None
    assert table.start((int, 4)).slot == (0, 0)
