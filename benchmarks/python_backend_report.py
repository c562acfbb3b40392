"""What `python_backend_vs_triton.py` prints and writes: one row per server setting and protocol, with ratios to Triton.

The ratio of a row is its req/s over Triton's req/s on the same protocol (Triton's own rows read
1.00); above 1.00 the row is faster than Triton.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.protocol_case import Measured

PEER = "triton"
NOISY_NEIGHBOUR_CORES = 0.25  # other processes' CPU during a run above which the table warns
BUSY_GENERATOR = 0.90  # generator CPU share above which its own speed may be what was measured


@dataclass(frozen=True)
class Row:
    server: str  # "modelgate" or "triton"
    isolation: str  # where the python model ran: "thread" or "process" (Triton: always a stub process)
    protocol: str  # "http" (KServe v2 JSON) or "grpc"
    measured: Measured


def ratios_to_peer(rows: list[Row]) -> list[float | None]:
    """Each row's req/s over the peer's on the same protocol; None where the peer has no row or no throughput."""
    peer_rates = {row.protocol: row.measured.requests_per_s for row in rows if row.server == PEER}
    return [_ratio(row.measured.requests_per_s, peer_rates.get(row.protocol)) for row in rows]


def _ratio(rate: float, peer_rate: float | None) -> float | None:
    return rate / peer_rate if peer_rate else None


def table_lines(rows: list[Row]) -> list[str]:
    """The table: rows grouped by protocol; within one, modelgate's in the order given, then Triton's."""
    head = (
        f"{'server':<12} {'isolation':<9} {'protocol':<8} | {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'vs triton':>9} | {'errors':>6} {'cpu':>5} {'gen cpu':>7} {'other':>5} {'procs':>5}"
    )
    lines = [head, "-" * len(head)]
    ratios = ratios_to_peer(rows)
    for protocol in dict.fromkeys(row.protocol for row in rows):
        group = [(row, ratio) for row, ratio in zip(rows, ratios) if row.protocol == protocol]
        lines += [_line(row, ratio) for row, ratio in sorted(group, key=lambda pair: pair[0].server == PEER)]
    return lines


def _line(row: Row, ratio: float | None) -> str:
    m = row.measured
    shown_ratio = "-" if ratio is None else f"{ratio:.2f}x"
    return (
        f"{row.server:<12} {row.isolation:<9} {row.protocol:<8} | {m.requests_per_s:>8,.0f} {m.p50_ms:>7.2f} "
        f"{m.p99_ms:>7.2f} | {shown_ratio:>9} | {m.errors + m.wrong:>6} {_percent(m.server_cpu):>5} "
        f"{_percent(m.generator_cpu):>7} {m.other_cpu:>5.2f} {m.server_processes:>5}"
    )


LEGEND = (
    "vs triton: req/s / Triton's req/s on the same protocol (above 1.00x: faster). errors: failed requests plus "
    "answers\nwith wrong values. cpu: the server's use of its core (its process and descendants); gen cpu: the "
    "load generator's\nuse of its core; other: cores that other processes and the kernel used meanwhile; procs: "
    "the server's processes\n(Triton: tritonserver and the stub process it runs every python-model instance in)."
)


def warning_lines(rows: list[Row]) -> list[str]:
    """Failed or wrong answers, a saturated generator, a noisy machine, and a process isolation not in effect."""
    warnings = []
    for row in rows:
        m, case = row.measured, f"{row.server} {row.isolation} {row.protocol}"
        if m.errors or m.wrong:
            warnings.append(f"ERRORS in {case}: {m.errors} failed requests, {m.wrong} wrong answers")
        if m.generator_cpu > BUSY_GENERATOR:
            warnings.append(
                f"WARNING: {case}: the load generator used {_percent(m.generator_cpu)} of its core; this rate may be "
                "the generator's limit (a lower bound for the server)"
            )
        if m.other_cpu > NOISY_NEIGHBOUR_CORES:
            warnings.append(
                f"WARNING: {case}: other processes used {m.other_cpu:.2f} cores meanwhile; these numbers are disturbed"
            )
    return warnings + _isolation_warnings(rows)


def _isolation_warnings(rows: list[Row]) -> list[str]:
    """A process row with no more processes than the thread row of its protocol ran the model in the server."""
    thread_counts = {
        row.protocol: row.measured.server_processes for row in rows if row.server != PEER and row.isolation == "thread"
    }
    return [
        f"NOTE: modelgate process {row.protocol}: {row.measured.server_processes} process(es), as many as with "
        "thread isolation: the isolation parameter is not in effect in this checkout (both rows measure threads)"
        for row in rows
        if row.server != PEER
        and row.isolation == "process"
        and row.measured.server_processes <= thread_counts.get(row.protocol, 0)
    ]


def report_lines(rows: list[Row]) -> list[str]:
    """Table, legend and warnings, as printed."""
    return [*table_lines(rows), "", LEGEND, *warning_lines(rows)]


def median_rows(rounds: list[list[Row]]) -> list[Row]:
    """Per setting and protocol, the row of the round with the median req/s (the lower middle one for an even
    count), in the order of the first round: one summary of rounds measured one after the other, interleaved,
    so that a machine whose speed drifts weighs on every server alike."""
    by_case: dict[tuple[str, str, str], list[Row]] = {}
    for rows in rounds:
        for row in rows:
            by_case.setdefault((row.server, row.isolation, row.protocol), []).append(row)
    summary = []
    for cases in by_case.values():
        ranked = sorted(cases, key=lambda row: row.measured.requests_per_s)
        summary.append(ranked[(len(ranked) - 1) // 2])
    return summary


def write_json(path: Path, rows: list[Row], environment: dict, rounds: list[list[Row]] | None = None) -> None:
    """`{"environment": {...}, "rows": [{server, isolation, protocol, ratio_to_triton, <Measured fields>}]}`,
    and with `rounds` (rows is then their medians) `"rounds": [[<rows as above>], ...]`."""
    document = {"environment": environment, "rows": _flat(rows)}
    if rounds is not None:
        document["rounds"] = [_flat(round_rows) for round_rows in rounds]
    path.write_text(json.dumps(document, indent=2) + "\n")


def _flat(rows: list[Row]) -> list[dict]:
    return [
        {"server": row.server, "isolation": row.isolation, "protocol": row.protocol, "ratio_to_triton": ratio}
        | asdict(row.measured)
        for row, ratio in zip(rows, ratios_to_peer(rows))
    ]


def has_failures(rows: list[Row]) -> bool:
    return any(row.measured.errors or row.measured.wrong for row in rows)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"
