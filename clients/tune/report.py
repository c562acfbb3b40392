"""The candidates as a table (printed, and in report.txt) and as candidates.csv, and the verdict in words."""

from __future__ import annotations

import csv
from pathlib import Path

from modelgate.clients.tune.choose import Choice, Targets, meets, worst_ratio
from modelgate.clients.tune.measurement import Measurement

CSV_NAME = "candidates.csv"
_CSV_FIGURES = (
    "output_tok_s",
    "request_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "num_ok",
    "num_errors",
    "wall_s",
)
_METRICS = (
    ("tok/s", "output_tok_s", "{:.1f}"),
    ("req/s", "request_per_s", "{:.2f}"),
    ("TTFT p50 ms", "ttft_p50_ms", "{:.1f}"),
    ("TTFT p99 ms", "ttft_p99_ms", "{:.1f}"),
    ("ITL p50 ms", "itl_p50_ms", "{:.1f}"),
    ("ITL p99 ms", "itl_p99_ms", "{:.1f}"),
)


def setting_names(measurements: list[Measurement], names: list[str]) -> list[str]:
    """The space's settings, then any other a measured candidate overrides."""
    found = list(names)
    for measurement in measurements:
        found += [name for name in sorted(measurement.overrides) if name not in found]
    return found


def verdict(measurement: Measurement, targets: Targets) -> str:
    if not measurement.served:
        return "not served"
    if not measurement.has_numbers:
        return "all failed"
    return "meets" if meets(measurement, targets) else f"misses ({worst_ratio(measurement, targets):.2f}x)"


def rows(measurements: list[Measurement], names: list[str], targets: Targets, choice: Choice | None) -> list[dict]:
    chosen = choice.measurement.key if choice else None
    table = []
    for number, m in enumerate(measurements, 1):
        row = {"#": str(number), "id": m.id, "phase": m.phase}
        row.update({name: m.settings.get(name, "-") for name in names})
        row.update({title: _cell(m, field, fmt) for title, field, fmt in _METRICS})
        row.update({"ok": str(m.num_ok), "failed": str(m.num_errors), "targets": verdict(m, targets)})
        row["chosen"] = "*" if m.key == chosen else ""
        table.append(row)
    return table


def _cell(m: Measurement, field: str, fmt: str) -> str:
    value = getattr(m, field)
    return "-" if value is None or not m.has_numbers else fmt.format(value)


def format_table(table: list[dict]) -> str:
    if not table:
        return "(no candidates measured)"
    columns = list(table[0])
    widths = {c: max(len(c), *(len(row[c]) for row in table)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(row[c].rjust(widths[c]) for c in columns) for row in table]
    return "\n".join(line.rstrip() for line in lines)


def write_csv(
    path: Path, measurements: list[Measurement], names: list[str], targets: Targets, choice: Choice | None
) -> None:
    """One row per candidate: its settings, then every figure unrounded (empty where there is none)."""
    chosen = choice.measurement.key if choice else None
    columns = ["id", "phase", *names, *_CSV_FIGURES, "served", "meets_targets", "chosen", "error"]
    with Path(path).open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for m in measurements:
            figures = ["" if getattr(m, name) is None else getattr(m, name) for name in _CSV_FIGURES]
            flags = [m.served, meets(m, targets), m.key == chosen]
            writer.writerow([m.id, m.phase, *(m.settings.get(n, "") for n in names), *figures, *flags, m.error or ""])


def summary_lines(choice: Choice | None, baseline: Measurement | None, targets: Targets) -> list[str]:
    if choice is None:
        return ["no candidate completed a request: nothing to choose (see each candidate's server.log)"]
    chosen = choice.measurement
    lines = [f"chosen: {chosen.label} [{chosen.id}], {choice.reason}", f"  {_figures(chosen, targets)}"]
    if baseline is None:
        lines.append("the model's own config was not measured in this run (budget)")
    elif baseline.key == chosen.key:
        lines.append("the model's own config is the choice")
    else:
        lines.append(f"the model's config [{baseline.id}]: {_figures(baseline, targets)}")
        if baseline.has_numbers and baseline.output_tok_s > 0:
            gain = chosen.output_tok_s / baseline.output_tok_s - 1
            lines.append(f"  the choice gives {gain:+.1%} output throughput")
    return lines


def _figures(m: Measurement, targets: Targets) -> str:
    if not m.has_numbers:
        return f"{verdict(m, targets)}: {m.error or ''}".strip()
    itl = "-" if m.itl_p99_ms is None else f"{m.itl_p99_ms:.1f}"
    return (
        f"{m.output_tok_s:.1f} output tok/s, TTFT p99 {m.ttft_p99_ms:.1f} ms, ITL p99 {itl} ms, "
        f"{m.num_errors} failed: {verdict(m, targets)}"
    )
