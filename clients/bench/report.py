"""The benchmark's outputs: a summary table on the terminal, bench.json and requests.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from modelgate.clients.bench.request_record import RequestRecord

JSON_NAME = "bench.json"
CSV_NAME = "requests.csv"
CSV_COLUMNS = (
    "index",
    "pattern",
    "protocol",
    "started_at",
    "start_s",
    "planned_isl",
    "planned_osl",
    "isl",
    "osl",
    "ttft_s",
    "ttc_s",
    "e2e_s",
    "tpot_s",
    "itl_mean_s",
    "itl_max_s",
    "finish_reason",
    "error",
)
_ROWS = (
    ("TTFT", "ttft_s", 1e3, "ms"),
    ("ITL", "itl_s", 1e3, "ms"),
    ("TPOT", "tpot_s", 1e3, "ms"),
    ("TTC", "ttc_s", 1e3, "ms"),
    ("E2E", "e2e_s", 1e3, "ms"),
    ("ISL", "isl", 1, "tokens"),
    ("OSL", "osl", 1, "tokens"),
)


def summary_table(summary: dict, title: str) -> str:
    lines = [
        title,
        f"requests {summary['num_ok']} ok, {summary['num_errors']} failed in {summary['duration_s']:.2f} s",
        f"request throughput       {summary['request_throughput_per_s']:10.2f} req/s",
        f"output token throughput  {summary['output_token_throughput_per_s']:10.1f} tok/s",
        f"input token throughput   {summary['input_token_throughput_per_s']:10.1f} tok/s",
        "",
        f"{'metric':<8}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}  unit",
    ]
    for label, key, scale, unit in _ROWS:
        values = summary.get(key)
        if values is None:
            lines.append(f"{label:<8}{'-':>10}{'-':>10}{'-':>10}{'-':>10}  {unit}")
            continue
        cells = "".join(f"{values[k] * scale:>10.{_digits(unit)}f}" for k in ("mean", "p50", "p90", "p99"))
        lines.append(f"{label:<8}{cells}  {unit}")
    fit = summary.get("ttft_vs_isl_fit")
    if fit:
        lines.append(f"TTFT ~ {fit['intercept'] * 1e3:.2f} ms + {fit['slope'] * 1e3:.4f} ms/input token")
    for error in summary.get("errors", []):
        lines.append(f"error: {error}")
    return "\n".join(lines)


def write_json(path: Path, settings: dict, summary: dict, records: list[RequestRecord]) -> None:
    document = {"settings": settings, "summary": summary, "requests": [r.as_dict() for r in records]}
    path.write_text(json.dumps(document, indent=1))


def write_csv(path: Path, records: list[RequestRecord]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in records:
            row = {key: value for key, value in record.as_dict().items() if key in CSV_COLUMNS}
            row["itl_mean_s"] = sum(record.itl_s) / len(record.itl_s) if record.itl_s else None
            row["itl_max_s"] = max(record.itl_s, default=None)
            writer.writerow(row)


def _digits(unit: str) -> int:
    return 1 if unit == "tokens" else 2
