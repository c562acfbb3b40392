"""Good and hostile requests sent at once, and what became of each: the traffic of a soak.

Every good kind has a sender thread of its own, a closed loop (the next request when the last is answered);
hostile senders go round the hostile requests, each sender starting at another place in the list, so that
different hostile requests meet in the server. Everything seen is tallied: good requests sent and failed (with
the first failures' messages), hostile outcomes against the documented ones.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from benchmarks.soak_good_requests import GoodRequest
from benchmarks.soak_hostile_requests import HostileRequest
from benchmarks.soak_target import Target

MAX_FAILURES_KEPT = 3  # messages kept per good kind


@dataclass
class GoodTally:
    num_sent: int = 0
    num_failed: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class HostileTally:
    expected: str
    outcomes: Counter = field(default_factory=Counter)

    @property
    def num_unexpected(self) -> int:
        return sum(count for outcome, count in self.outcomes.items() if outcome != self.expected)


class Tallies:
    """What the senders saw; safe to record into from any thread."""

    def __init__(self):
        self.good: dict[str, GoodTally] = {}
        self.hostile: dict[str, HostileTally] = {}
        self._lock = threading.Lock()

    def record_good(self, name: str, failure: str | None) -> None:
        with self._lock:
            tally = self.good.setdefault(name, GoodTally())
            tally.num_sent += 1
            if failure is not None:
                tally.num_failed += 1
                if len(tally.failures) < MAX_FAILURES_KEPT:
                    tally.failures.append(failure)

    def record_hostile(self, request: HostileRequest, outcome: str) -> None:
        with self._lock:
            self.hostile.setdefault(request.name, HostileTally(request.expected)).outcomes[outcome] += 1

    @property
    def num_good_failed(self) -> int:
        return sum(tally.num_failed for tally in self.good.values())

    @property
    def num_hostile_unexpected(self) -> int:
        return sum(tally.num_unexpected for tally in self.hostile.values())


def send_hostile(request: HostileRequest, target: Target, tallies: Tallies) -> str:
    """Send one hostile request; record and return its outcome (a client-side exception is one too)."""
    try:
        outcome = request.send(target)
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"[:100]
    tallies.record_hostile(request, outcome)
    return outcome


def send_one_round(
    target: Target, tallies: Tallies, good_kinds: list[Callable[[Target], GoodRequest]], hostile: list[HostileRequest]
) -> None:
    """Each kind once, one after another: a warm-up, so that what is allocated once is in place before RSS is read."""
    for kind in good_kinds:
        request = kind(target)
        try:
            tallies.record_good(request.name, _failure(request.send))
        finally:
            request.close()
    for hostile_request in hostile:
        send_hostile(hostile_request, target, tallies)


@contextmanager
def traffic(
    target: Target,
    tallies: Tallies,
    good_kinds: list[Callable[[Target], GoodRequest]],
    hostile: list[HostileRequest],
    num_hostile_senders: int = 2,
    good_pause_s: float = 0.0,
) -> Iterator[None]:
    """Senders run while the block runs; on leaving it they finish the request in hand and stop.

    `good_pause_s`: how long each good sender waits between its requests (0: closed loop, as fast as answered).
    """
    stop = threading.Event()
    threads = [
        threading.Thread(target=_good_loop, args=(kind, target, tallies, stop, good_pause_s)) for kind in good_kinds
    ]
    for number in range(num_hostile_senders if hostile else 0):
        start = number * len(hostile) // num_hostile_senders
        order = hostile[start:] + hostile[:start]
        threads.append(threading.Thread(target=_hostile_loop, args=(order, target, tallies, stop)))
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def _good_loop(
    kind: Callable[[Target], GoodRequest], target: Target, tallies: Tallies, stop: threading.Event, pause_s: float
) -> None:
    try:
        request = kind(target)
    except Exception as exc:  # the clients could not even be opened: one failure, and this kind stops
        tallies.record_good(kind.__name__, f"opening the clients: {type(exc).__name__}: {exc}")
        return
    try:
        while not stop.is_set():
            tallies.record_good(request.name, _failure(request.send))
            stop.wait(pause_s)
    finally:
        request.close()


def _hostile_loop(order: list[HostileRequest], target: Target, tallies: Tallies, stop: threading.Event) -> None:
    while not stop.is_set():
        for request in order:
            if stop.is_set():
                return
            send_hostile(request, target, tallies)


def _failure(send: Callable[[], None]) -> str | None:
    try:
        send()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None
