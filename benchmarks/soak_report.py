"""What a soak found, as a table, and the problems that fail it.

A soak passes when no good request failed, every hostile request got its documented outcome, the server's
resident memory grew by less than the bound between the end of the warm-up and the end, no event-loop probe ran
STALL_S late during the soak, and the LLM engine is idle soon after the traffic stops (what the clients who
left had asked for was cancelled).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import TextIO

from benchmarks.soak_target import IDLE_WAIT_S, STALL_S, LoopLag
from benchmarks.soak_traffic import Tallies

MAX_RSS_GROWTH_MB = 100.0


@dataclass(frozen=True)
class SoakResult:
    duration_s: float
    tallies: Tallies
    rss_mb: tuple[float, float, float]  # the server process: before the warm-up, after it (start), at the end
    tree_rss_mb: tuple[float, float]  # server, engine and stubs together: start, end
    rss_timeline_mb: list[float]  # the server process, from the start through the soak
    lag_start: LoopLag  # after the warm-up
    lag_end: LoopLag
    llm_idle_after_s: float | None  # once the traffic stopped; None: still busy after IDLE_WAIT_S

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_mb[2] - self.rss_mb[1]


def problems(result: SoakResult, max_rss_growth_mb: float = MAX_RSS_GROWTH_MB) -> list[str]:
    """Why the soak fails; empty when it passes."""
    found = []
    if result.tallies.num_good_failed:
        found.append(f"{result.tallies.num_good_failed} good requests failed")
    if result.tallies.num_hostile_unexpected:
        found.append(f"{result.tallies.num_hostile_unexpected} hostile requests got an outcome not documented")
    if result.rss_growth_mb >= max_rss_growth_mb:
        found.append(f"server RSS grew by {result.rss_growth_mb:.0f} MiB (bound: {max_rss_growth_mb:.0f})")
    stalls = result.lag_end.stalls_since(result.lag_start)
    if stalls:
        found.append(f"{stalls} event-loop probes ran {STALL_S} s late or more")
    if result.llm_idle_after_s is None:
        found.append(f"the LLM engine still held requests {IDLE_WAIT_S:.0f} s after the traffic stopped")
    return found


def print_report(result: SoakResult, out: TextIO) -> None:
    tallies = result.tallies
    print(f"soak: {result.duration_s:.0f} s of mixed traffic after one warm-up round", file=out)
    load = os.getloadavg()[0]  # the machine may be shared: what else ran shows here
    print(
        f"machine: {os.cpu_count()} cores, load average {load:.1f} at the end; Python {platform.python_version()}\n",
        file=out,
    )
    print(f"{'good requests':<36}{'sent':>8}{'failed':>8}", file=out)
    for name, tally in sorted(tallies.good.items()):
        print(f"{name:<36}{tally.num_sent:>8}{tally.num_failed:>8}", file=out)
        for failure in tally.failures:
            print(f"    {failure}", file=out)
    print(f"\n{'hostile requests':<36}{'expected':<48}{'outcomes (count)'}", file=out)
    for name, tally in tallies.hostile.items():
        outcomes = ", ".join(f"{outcome} ({count})" for outcome, count in tally.outcomes.most_common())
        print(f"{name:<36}{tally.expected:<48}{outcomes}", file=out)
    before, start, end = result.rss_mb
    print(f"\n{'RSS (MiB)':<36}{'launch':>8}{'start':>8}{'end':>8}{'growth':>8}", file=out)
    print(f"{'server process':<36}{before:>8.0f}{start:>8.0f}{end:>8.0f}{end - start:>+8.0f}", file=out)
    tree_start, tree_end = result.tree_rss_mb
    print(
        f"{'with engine and stubs':<36}{'':>8}{tree_start:>8.0f}{tree_end:>8.0f}{tree_end - tree_start:>+8.0f}",
        file=out,
    )
    print(f"{'server process over the soak':<36}" + " ".join(f"{mb:.0f}" for mb in result.rss_timeline_mb), file=out)
    lag = result.lag_end
    print(
        f"\nevent-loop lag: max {lag.max_s * 1000:.1f} ms since the server started; "
        f"{lag.num_probes - result.lag_start.num_probes} probes during the soak, "
        f"{lag.stalls_since(result.lag_start)} of them {STALL_S} s late or more",
        file=out,
    )
    idle = result.llm_idle_after_s
    idle_text = f"after {idle:.1f} s" if idle is not None else f"not within {IDLE_WAIT_S:.0f} s"
    print(f"LLM engine idle once the traffic stopped: {idle_text}", file=out)
    found = problems(result)
    print("\nPASS" if not found else "\nFAIL: " + "; ".join(found), file=out)
