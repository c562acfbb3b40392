"""The order of work, with a made-up model of performance in place of serving: baseline, coarse grid, then
refinement around the best, within the budget, and a resumed run that measures only what the log lacks."""

import pytest

from modelgate.clients.bench.llm_settings import LengthSettings, LoadSettings
from modelgate.clients.tune.budget import Budget
from modelgate.clients.tune.choose import Targets
from modelgate.clients.tune.measurement import from_summary
from modelgate.clients.tune.tune_settings import TuneSettings
from modelgate.clients.tune.tuner import Tuner, run_tune
from tests.server_harness import EXAMPLE_REPOSITORY

TARGETS = Targets(ttft_p99_ms=250)


def fake_measure(self, candidate, phase, refine_round=0):
    """Throughput grows with max_num_seqs up to 24; TTFT p99 is 10 ms per sequence (so at most 25 meet)."""
    seqs = int(candidate.value("max_num_seqs"))
    self.measured_order.append((phase, seqs))
    summary = {
        "errors": [],
        "num_ok": 4,
        "num_errors": 0,
        "output_token_throughput_per_s": 100.0 * min(seqs, 24),
        "request_throughput_per_s": 1.0,
        "ttft_s": {"p50": seqs / 200, "p99": seqs / 100},
        "itl_s": {"p50": 0.01, "p99": 0.01},
    }
    return from_summary(self.log.fingerprint, candidate, phase, summary, 1.0, refine_round)


@pytest.fixture
def fake_serving(monkeypatch):
    monkeypatch.setattr(Tuner, "measured_order", None, raising=False)
    original_init = Tuner.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.measured_order = []

    monkeypatch.setattr(Tuner, "__init__", init)
    monkeypatch.setattr(Tuner, "_measure", fake_measure)


def settings(output_dir, **changes) -> TuneSettings:
    fields = {
        "model_dir": EXAMPLE_REPOSITORY / "tiny_llm",
        "output_dir": output_dir,
        "lengths": LengthSettings(isl=8, osl=4),
        "load": LoadSettings(concurrency=2, num_requests=4),
        "targets": TARGETS,
        "search": {"max_num_seqs": ["8", "32"]},
        "plots": False,
    }
    return TuneSettings(**{**fields, **changes})


def test_coarse_first_then_refinement_narrows_in_on_the_best(fake_serving, tmp_path):
    tuner = Tuner(settings(tmp_path), say=lambda line: None)
    result = tuner.run()
    assert tuner.measured_order == [
        ("baseline", 16),  # the model's config
        ("coarse", 8),
        ("coarse", 32),  # misses the TTFT target
        ("refine", 11),  # round 1: around 16, geometric midpoints to 8 and 32
        ("refine", 23),
        ("refine", 19),  # round 2: around 23, midpoints to 16 and 32
        ("refine", 27),
    ]
    assert result.choice.meets_targets and result.choice.measurement.settings["max_num_seqs"] == "23"
    assert "max_num_seqs" in (tmp_path / "config.pbtxt").read_text()


def test_a_resumed_run_measures_only_what_the_log_lacks(fake_serving, tmp_path):
    first = Tuner(settings(tmp_path, refine_rounds=1), say=lambda line: None)
    first.run()
    again = Tuner(settings(tmp_path, refine_rounds=2), say=lambda line: None)
    result = again.run()
    assert again.measured_order == [("refine", 19), ("refine", 27)]
    assert result.num_measured == 2 and len(result.measurements) == 7
    done = Tuner(settings(tmp_path, refine_rounds=2), say=lambda line: None)
    done.run()
    assert done.measured_order == []  # a finished run, rerun, measures nothing


def test_without_anything_to_refine_the_grid_gets_the_whole_budget(fake_serving, tmp_path):
    tuner = Tuner(settings(tmp_path, search={"kv_cache_dtype": ["auto", "fp8"]}), say=lambda line: None)
    assert tuner._coarse_share() == 1.0
    assert Tuner(settings(tmp_path), say=lambda line: None)._coarse_share() == pytest.approx(0.7)


def test_the_budget_starts_a_candidate_only_if_the_longest_so_far_fits():
    now = [0.0]
    budget = Budget(100.0, clock=lambda: now[0])
    assert budget.can_start()  # nothing measured yet: try
    now[0] = 40.0
    budget.record(40.0)
    assert budget.can_start() and not budget.can_start(share=0.7)  # 40 + 1.2 * 40 > 70
    now[0] = 60.0
    assert not budget.can_start() and budget.remaining_s() == 40.0
    assert not Budget(0.0).can_start()


def test_run_tune_is_the_library_call(fake_serving, tmp_path):
    lines = []
    result = run_tune(settings(tmp_path, refine_rounds=0), say=lines.append)
    assert result.num_measured == 3 and lines[0].startswith("modelgate tune: tiny_llm (version 1)")
