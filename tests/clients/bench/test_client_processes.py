"""How a run's load is shared between client processes."""

import pytest

from modelgate.clients.bench.client_processes import Share
from modelgate.clients.bench.llm_settings import LoadSettings


@pytest.mark.parametrize("total", [0, 1, 7, 8, 9, 100])
def test_the_parts_of_every_process_add_up_to_the_whole(total):
    parts = [Share(index, 3).part(total) for index in range(3)]
    assert sum(parts) == total and max(parts) - min(parts) <= 1


def test_a_share_of_a_closed_loop_run():
    load = LoadSettings(concurrency=10, num_requests=25, warmup_requests=4, seed=7, client_processes=4)
    shares = [Share(index, 4).load(load) for index in range(4)]
    assert [s.concurrency for s in shares] == [3, 3, 2, 2]
    assert [s.num_requests for s in shares] == [7, 6, 6, 6]
    assert [s.warmup_requests for s in shares] == [1, 1, 1, 1]
    assert len({s.seed for s in shares}) == 4 and shares[0].seed == 7  # arrival draws apart, the first as alone
    assert all(s.client_processes == 1 and s.request_rate is None for s in shares)


def test_a_share_of_a_poisson_run_takes_its_part_of_the_rate():
    load = LoadSettings(request_rate=12.0, max_concurrency=5, duration_s=30, client_processes=3)
    shares = [Share(index, 3).load(load) for index in range(3)]
    assert [s.request_rate for s in shares] == [4.0, 4.0, 4.0]
    assert [s.max_concurrency for s in shares] == [2, 2, 1]
    assert all(s.num_requests is None and s.duration_s == 30 for s in shares)
