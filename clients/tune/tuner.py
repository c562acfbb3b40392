"""`modelgate tune` as a library call: baseline, coarse grid, refinement, choice, outputs.

result = run_tune(TuneSettings(model_dir=..., output_dir=..., lengths=..., load=..., targets=...))

Order of work: the model's own config first (the baseline every report compares against), then the coarse
points of the search space, then up to `refine_rounds` rounds of refinement around the best candidate so far
(refine.py), each candidate served by its own `modelgate serve` and measured by the same `bench llm` traffic.
Candidates already in the output folder's log are not measured again, so an interrupted run, or one whose
budget ran out, resumes where it stopped; a rerun with other targets only chooses again.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelgate.clients.tune.budget import Budget
from modelgate.clients.tune.candidate import Candidate, make_candidate
from modelgate.clients.tune.candidate_config import write_repository
from modelgate.clients.tune.choose import Choice, choose, meets
from modelgate.clients.tune.measurement import Measurement, Phase, from_summary, not_served
from modelgate.clients.tune.model_folder import ModelFolder, read_model_folder
from modelgate.clients.tune.outputs import Outputs, write_outputs
from modelgate.clients.tune.parameters import TUNABLE_PARAMETERS
from modelgate.clients.tune.refine import refine_overrides
from modelgate.clients.tune.search_space import SearchSpace, build_space
from modelgate.clients.tune.server_process import DeadlineReached, ServerStartError, serve_repository
from modelgate.clients.tune.traffic import bench_settings, fitted_lengths, run_bench
from modelgate.clients.tune.tune_log import LOG_NAME, TuneLog, file_digest, run_fingerprint
from modelgate.clients.tune.tune_settings import TuneSettings

CANDIDATES_DIR = "candidates"  # <id>/server.log, bench.json, requests.csv per measured candidate


@dataclass
class TuneResult:
    choice: Choice | None
    measurements: list[Measurement]  # every candidate of the log, in the order measured
    num_measured: int  # by this invocation
    outputs: Outputs
    notes: list[str] = field(default_factory=list)


def run_tune(settings: TuneSettings, say: Callable[[str], None] = print) -> TuneResult:
    """Tune (TuneInputError for bad input, before anything is served)."""
    return Tuner(settings, say).run()


class Tuner:
    def __init__(self, settings: TuneSettings, say: Callable[[str], None]):
        self.settings = settings
        self.say = say
        self.model: ModelFolder = read_model_folder(settings.model_dir, settings.model_version)
        self.space: SearchSpace = build_space(settings.search, settings.candidates, self.model)
        self.lengths = fitted_lengths(settings.lengths, self.model)
        self.log = TuneLog(settings.output_dir / LOG_NAME, self._fingerprint())
        self.measured: dict[str, Measurement] = {m.key: m for m in self.log.read()}
        self.budget = Budget(settings.time_budget_s)
        self.baseline = make_candidate(self.model.settings, {})
        self.num_measured = 0
        self.notes: list[str] = []

    def run(self) -> TuneResult:
        coarse = _unique(
            [self.baseline, *(make_candidate(self.model.settings, o) for o in self.space.coarse_overrides())]
        )
        self._announce(coarse)
        if self._measure_all(coarse, self._coarse_share()):
            self._refine()
        measurements = list(self.measured.values())
        choice = choose(measurements, self.settings.targets)
        outputs = write_outputs(
            self.settings.output_dir,
            self.model,
            measurements,
            self.space.names,
            self.settings.targets,
            choice,
            self.baseline,
            self.settings.device,
            self.settings.plots,
        )
        return TuneResult(choice, measurements, self.num_measured, outputs, self.notes + outputs.notes)

    def _announce(self, coarse: list[Candidate]) -> None:
        known = sum(c.key in self.measured for c in coarse)
        self.say(
            f"modelgate tune: {self.model.name} (version {self.model.version}) on {self.settings.device or 'its configured device'}; "
            f"{len(coarse)} coarse candidates ({known} already in {self.log.path}), up to {self.settings.refine_rounds} "
            f"refinement rounds, budget {self.settings.time_budget_s:g} s; targets: {self.settings.targets.describe()}"
        )
        if self.log.num_skipped:
            self.say(f"  {self.log.num_skipped} unreadable line(s) of the log skipped: those candidates run again")

    def _coarse_share(self) -> float:
        refinable = any(TUNABLE_PARAMETERS[name].refinable for name in self.space.names)
        return 1.0 - self.settings.refine_share if self.settings.refine_rounds and refinable else 1.0

    def _refine(self) -> None:
        """Round k proposes around the best of what the coarse phase and rounds before k measured, so a resumed
        run proposes what the interrupted one did and measures only what its log lacks."""
        for number in range(1, self.settings.refine_rounds + 1):
            known = [m for m in self.measured.values() if m.refine_round < number]
            choice = choose(known, self.settings.targets)
            if choice is None:
                return
            proposals = refine_overrides(choice.measurement, known, self.space.names)
            keys = {m.key for m in known}
            candidates = [
                c for c in _unique([make_candidate(self.model.settings, p) for p in proposals]) if c.key not in keys
            ]
            if not candidates:
                return  # converged: nothing new around the best
            todo = [c for c in candidates if c.key not in self.measured]
            if todo:
                self.say(f"refinement round {number}: {len(todo)} candidates around {choice.measurement.label}")
            if not self._measure_all(candidates, 1.0, "refine", number):
                return

    def _measure_all(
        self, candidates: list[Candidate], share: float, phase: Phase | None = None, round_: int = 0
    ) -> bool:
        """Measures those not in the log; False when the budget stopped it first."""
        for candidate in candidates:
            if candidate.key in self.measured:
                continue
            if not self.budget.can_start(share):
                self._budget_note(candidates)
                return False
            measurement = self._measure(candidate, phase or ("baseline" if candidate.is_baseline else "coarse"), round_)
            if measurement is None:
                self._budget_note(candidates)
                return False
            self.log.append(measurement)
            self.measured[candidate.key] = measurement
            self.num_measured += 1
            self.say(f"  [{candidate.id}] {candidate.label}: {self._line(measurement)}")
        return True

    def _budget_note(self, candidates: list[Candidate]) -> None:
        left = sum(c.key not in self.measured for c in candidates)
        note = f"the time budget stopped the search with {left} candidate(s) of this phase unmeasured: rerun to resume"
        self.notes.append(note)
        self.say(note)

    def _measure(self, candidate: Candidate, phase: Phase, refine_round: int = 0) -> Measurement | None:
        """The candidate's measurement; None when the budget ran out during it (nothing is logged then)."""
        started = time.monotonic()
        folder = self.settings.output_dir / CANDIDATES_DIR / candidate.id
        run = self.log.fingerprint
        with tempfile.TemporaryDirectory(prefix="modelgate-tune-") as root:
            repository = write_repository(Path(root), self.model, candidate, self.settings.device)
            try:
                with serve_repository(
                    repository,
                    self.model.name,
                    folder / "server.log",
                    self.settings.server_start_timeout_s,
                    self.budget.deadline,
                ) as url:
                    bench = bench_settings(self.model, url, self.lengths, self.settings.load, folder)
                    summary = run_bench(bench, self.budget.remaining_s())
            except ServerStartError as exc:
                self.budget.record(time.monotonic() - started)
                return not_served(run, candidate, phase, str(exc), time.monotonic() - started, refine_round)
            except (DeadlineReached, TimeoutError):
                self.say(f"  [{candidate.id}] {candidate.label}: the time budget ran out while it was measured")
                return None
        wall_s = time.monotonic() - started
        self.budget.record(wall_s)
        return from_summary(run, candidate, phase, summary, wall_s, refine_round)

    def _line(self, m: Measurement) -> str:
        if not m.served:
            return f"not served: {m.error}"
        itl = "-" if m.itl_p99_ms is None else f"{m.itl_p99_ms:.1f}"
        verdict = "meets the targets" if meets(m, self.settings.targets) else "misses the targets"
        return (
            f"{m.output_tok_s:.1f} tok/s, TTFT p99 {m.ttft_p99_ms or 0:.1f} ms, ITL p99 {itl} ms, "
            f"{m.num_ok} ok {m.num_errors} failed ({verdict}; {m.wall_s:.0f} s)"
        )

    def _fingerprint(self) -> str:
        lengths = self.lengths
        return run_fingerprint(
            config=self.model.config_file.read_text(),
            version_dir=str(self.model.version_dir),
            device=self.settings.device,
            lengths=lengths.model_dump(mode="json"),
            trace=file_digest(lengths.trace_file) if lengths.pattern == "trace" else None,
            load=self.settings.load.model_dump(mode="json"),
        )


def _unique(candidates: list[Candidate]) -> list[Candidate]:
    return list({c.key: c for c in candidates}.values())
