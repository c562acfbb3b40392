"""The refinement step: geometric midpoints towards the tried neighbours, and one step past an edge."""

from modelgate.clients.tune.refine import refine_overrides
from tests.clients.tune.helpers import measured

SPACE = ["max_num_seqs", "max_num_batched_tokens", "kv_cache_dtype"]


def test_midpoints_between_the_best_value_and_its_tried_neighbours():
    low, best, high = (measured(100, 1, 1, max_num_seqs=n) for n in (4, 16, 64))
    proposals = refine_overrides(best, [low, best, high], ["max_num_seqs"])
    assert proposals == [{"max_num_seqs": "8"}, {"max_num_seqs": "32"}]


def test_past_an_edge_the_value_doubles_or_halves():
    small, best = measured(100, 1, 1, max_num_seqs=4), measured(200, 1, 1, max_num_seqs=16)
    assert refine_overrides(best, [small, best], ["max_num_seqs"]) == [{"max_num_seqs": "8"}, {"max_num_seqs": "32"}]
    assert {"max_num_seqs": "2"} in refine_overrides(small, [small, best], ["max_num_seqs"])


def test_each_proposal_changes_one_setting_and_keeps_the_best_ones_other_overrides():
    best = measured(100, 1, 1, max_num_seqs=32, max_num_batched_tokens=512, kv_cache_dtype="fp8")
    others = [measured(50, 1, 1, max_num_seqs=8, max_num_batched_tokens=1024)]
    proposals = refine_overrides(best, [best, *others], SPACE)
    assert {"max_num_seqs": "16", "max_num_batched_tokens": "512", "kv_cache_dtype": "fp8"} in proposals  # sqrt(8*32)
    assert {
        "max_num_seqs": "32",
        "max_num_batched_tokens": "724",
        "kv_cache_dtype": "fp8",
    } in proposals  # sqrt(512*1024)
    assert all(len({k for k in p if p[k] != best.overrides.get(k)}) == 1 for p in proposals)


def test_nothing_new_when_the_neighbours_are_adjacent_or_at_the_bounds():
    one, two = measured(100, 1, 1, max_num_seqs=1), measured(50, 1, 1, max_num_seqs=2)
    assert (
        refine_overrides(one, [one, two], ["max_num_seqs"]) == []
    )  # 0 is below the minimum, no integer between 1 and 2
    wide = measured(100, 1, 1, block_size=256)
    assert refine_overrides(wide, [wide], ["block_size", "kv_cache_dtype"]) == []  # not refinable settings
