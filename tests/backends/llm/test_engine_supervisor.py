"""EngineSupervisor with fake engines: restarts with back-off, gives up after MAX_START_ATTEMPTS, stops on unload."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from modelgate.backends.llm import engine_supervisor
from modelgate.backends.llm.engine_client import EngineStartError
from modelgate.backends.llm.engine_supervisor import MAX_START_ATTEMPTS, EngineSupervisor

WAIT_S = 10


@dataclass
class FakeProcess:
    exitcode: int | None = None

    def join(self, timeout=None) -> None:
        pass


@dataclass
class FakeEngine:
    on_exit: object
    process: FakeProcess = field(default_factory=FakeProcess)
    was_shut_down: bool = False

    def die(self, exitcode: int) -> None:
        self.process.exitcode = exitcode
        self.on_exit()

    def shutdown(self) -> None:
        self.was_shut_down = True


class Harness:
    """Starts fake engines (failing the starts listed in `failing`) and records what the supervisor reports."""

    def __init__(self, failing=()):
        self.failing = set(failing)
        self.starts = 0
        self.engines: list[FakeEngine] = []
        self.events: list[tuple[str, str | None]] = []
        self.changed = threading.Condition()

    def start(self, on_exit) -> FakeEngine:
        self.starts += 1
        if self.starts in self.failing:
            raise EngineStartError(f"start {self.starts} failed")
        engine = FakeEngine(on_exit)
        self.engines.append(engine)
        return engine

    def down(self, reason: str) -> None:
        self._record(("down", reason))

    def up(self) -> None:
        self._record(("up", None))

    def _record(self, event) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_events(self, count: int) -> list:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.events) >= count, WAIT_S), self.events
            return list(self.events)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(engine_supervisor, "RESTART_BACKOFF_S", 0.0)


def supervise(harness: Harness) -> EngineSupervisor:
    return EngineSupervisor("tiny", harness.start, harness.down, harness.up)


def test_a_dead_engine_is_reported_then_replaced():
    harness = Harness(failing={2})  # the first restart fails, the second serves
    supervisor = supervise(harness)
    first = supervisor.client
    first.die(-9)
    events = harness.wait_events(2)
    assert events[0][0] == "down" and "model 'tiny'" in events[0][1] and "killed by signal 9" in events[0][1]
    assert events[1] == ("up", None)
    assert harness.starts == 3 and supervisor.client is harness.engines[-1] and supervisor.client is not first
    assert supervisor.down_reason == ""


def test_an_engine_that_cannot_start_again_leaves_the_model_down():
    harness = Harness(failing=set(range(2, MAX_START_ATTEMPTS + 2)))
    supervisor = supervise(harness)
    supervisor.client.die(3)
    events = harness.wait_events(2)
    assert "exit code 3" in events[0][1]
    assert events[1][0] == "down" and f"after {MAX_START_ATTEMPTS} tries" in events[1][1]
    assert harness.starts == MAX_START_ATTEMPTS + 1 and supervisor.client is None
    assert supervisor.down_reason == events[1][1]


def test_an_engine_shut_down_on_purpose_is_not_restarted():
    harness = Harness()
    supervisor = supervise(harness)
    engine = supervisor.client
    supervisor.shutdown()
    engine.die(0)  # its pipe closes as it exits
    assert engine.was_shut_down and harness.events == [] and harness.starts == 1


def test_a_late_exit_of_a_replaced_engine_is_ignored():
    harness = Harness()
    supervisor = supervise(harness)
    first = supervisor.client
    first.die(1)
    harness.wait_events(2)
    first.on_exit()  # the old reader reports again: nothing happens to the new engine
    assert supervisor.client is harness.engines[1] and len(harness.events) == 2


def test_the_first_start_failing_fails_the_load():
    with pytest.raises(EngineStartError):
        supervise(Harness(failing={1}))
