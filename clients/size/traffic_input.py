"""Requests of measured traffic, from a server trace (JSONL) or a `bench llm` result (bench.json).

A trace line is what the LLM backend's trace recorder writes: timestamp, isl, osl, ttft_s,
ttc_s (other keys ignored; timestamp and ttc_s may be missing). bench.json's successful
requests give started_at as their timestamp; failed ones are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrafficRequest:
    isl: int
    osl: int
    timestamp: float | None = None  # unix seconds at arrival
    ttc_s: float | None = None  # arrival to last token


class TrafficInputError(ValueError):
    """A file that is neither a JSONL trace nor a bench.json, or a line without isl/osl."""


def read_traffic(path: Path) -> list[TrafficRequest]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TrafficInputError(f"cannot read {path}: {exc}") from None
    document = _whole_json(text)
    if isinstance(document, dict) and isinstance(document.get("requests"), list):
        rows = [row for row in document["requests"] if not row.get("error")]
        requests = [_request(row, f"{path}: request {number}", "started_at") for number, row in enumerate(rows)]
    else:
        requests = [
            _request(_line(line, path, number), f"{path}:{number}", "timestamp")
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
    if not requests:
        raise TrafficInputError(f"{path} holds no requests")
    return requests


def _whole_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None  # JSONL: one document per line


def _line(line: str, path: Path, number: int) -> dict:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise TrafficInputError(f"{path}:{number}: not JSON: {exc}") from None
    if not isinstance(row, dict):
        raise TrafficInputError(f"{path}:{number}: expected a JSON object")
    return row


def _request(row: dict, where: str, time_key: str) -> TrafficRequest:
    try:
        isl, osl = int(row["isl"]), int(row["osl"])
    except (KeyError, TypeError, ValueError):
        raise TrafficInputError(f"{where}: needs integer 'isl' and 'osl'") from None
    timestamp, ttc = row.get(time_key), row.get("ttc_s")
    return TrafficRequest(
        isl, osl, None if timestamp is None else float(timestamp), None if ttc is None else float(ttc)
    )
