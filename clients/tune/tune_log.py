"""tune_log.jsonl: one line per measured candidate, appended as each finishes; what makes a run resumable.

Every line carries the run's fingerprint (the model's config and checkpoint folder, the device, the traffic).
A log written for another fingerprint is refused rather than mixed in: its numbers answer another question.
Latency targets are not in the fingerprint: a rerun with other targets chooses again from the same numbers.
A line that does not parse (a run killed while writing it) is skipped, and that candidate is measured again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from modelgate.clients.tune.measurement import Measurement
from modelgate.clients.tune.tune_errors import TuneInputError

LOG_NAME = "tune_log.jsonl"


def run_fingerprint(**facts) -> str:
    """A short hash of `facts` (JSON-serializable values; paths and the like as strings)."""
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class TuneLog:
    def __init__(self, path: Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.num_skipped = 0  # lines that did not parse

    def read(self) -> list[Measurement]:
        """The logged measurements in the order they were taken (a candidate logged twice: its last line)."""
        if not self.path.exists():
            return []
        found: dict[str, Measurement] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            measurement = self._parse(line)
            if measurement is None:
                continue
            if measurement.run != self.fingerprint:
                raise TuneInputError(
                    f"{self.path}:{number} was written by a tune run of another model config, checkpoint folder, "
                    "device or traffic; give another --output-dir, or delete the log to start over"
                )
            found.pop(measurement.key, None)
            found[measurement.key] = measurement
        return list(found.values())

    def append(self, measurement: Measurement) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as log:
            log.write(measurement.model_dump_json() + "\n")

    def _parse(self, line: str) -> Measurement | None:
        if not line.strip():
            return None
        try:
            return Measurement.model_validate_json(line)
        except ValidationError:
            self.num_skipped += 1
            return None
