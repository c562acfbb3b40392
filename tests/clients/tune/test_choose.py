"""The choosing rule: the highest throughput within the targets, else the closest (and it says so)."""

from modelgate.clients.tune.choose import Targets, choose, meets, worst_ratio
from tests.clients.tune.helpers import failed, measured

TARGETS = Targets(ttft_p99_ms=100, itl_p99_ms=20)


def test_the_highest_throughput_among_those_meeting_the_targets_wins():
    slow_ok = measured(100, ttft_ms=50, itl_ms=10, max_num_seqs=8)
    fast_ok = measured(200, ttft_ms=90, itl_ms=19, max_num_seqs=16)
    fastest_but_late = measured(500, ttft_ms=150, itl_ms=10, max_num_seqs=64)
    choice = choose([slow_ok, fastest_but_late, fast_ok], TARGETS)
    assert choice.measurement is fast_ok and choice.meets_targets
    assert "highest output throughput of 2" in choice.reason


def test_a_candidate_with_failed_requests_does_not_meet_the_targets():
    flaky = measured(300, ttft_ms=10, itl_ms=5, num_errors=1, max_num_seqs=64)
    clean = measured(100, ttft_ms=10, itl_ms=5, max_num_seqs=8)
    assert not meets(flaky, TARGETS)
    assert choose([flaky, clean], TARGETS).measurement is clean


def test_when_none_meets_the_targets_the_closest_is_chosen_and_it_says_so():
    far = measured(500, ttft_ms=400, itl_ms=10, max_num_seqs=64)  # 4x the TTFT target
    near = measured(100, ttft_ms=120, itl_ms=30, max_num_seqs=8)  # 1.5x the ITL target
    flaky_nearest = measured(100, ttft_ms=101, itl_ms=5, num_errors=2, max_num_seqs=4)  # failed requests: last
    choice = choose([far, near, flaky_nearest], TARGETS)
    assert choice.measurement is near and not choice.meets_targets
    assert worst_ratio(near, TARGETS) == 1.5
    assert "no candidate meets" in choice.reason and "1.50x" in choice.reason


def test_ties_on_the_distance_go_to_the_higher_throughput():
    a = measured(100, ttft_ms=200, itl_ms=10, max_num_seqs=8)
    b = measured(150, ttft_ms=200, itl_ms=10, max_num_seqs=4)
    assert choose([a, b], TARGETS).measurement is b


def test_candidates_that_were_not_served_are_never_chosen():
    assert choose([failed(max_num_seqs=8)], TARGETS) is None
    served = measured(1, ttft_ms=10_000, itl_ms=10_000, max_num_seqs=4)
    assert choose([failed(max_num_seqs=8), served], TARGETS).measurement is served


def test_missing_targets_hold_for_everyone_and_no_itl_meets_an_itl_target():
    one_token_outputs = measured(100, ttft_ms=50, itl_ms=None)
    assert meets(one_token_outputs, TARGETS)
    assert meets(measured(1, ttft_ms=1e6, itl_ms=1e6), Targets())
    assert Targets().describe() == "no latency targets"
