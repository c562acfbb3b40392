"""Python models that record, in one ledger file shared by all of them, how many executions run at once.

Each execution adds itself to the ledger (under an exclusive lock: the models run in processes of their own),
records its model name in the order of starts and the most executions seen at once, then holds while the
model's gate file exists, then removes itself. The test opens the gates.
"""

import json
import time
from pathlib import Path

from tests.server_harness import write_model

COUNTING_MODEL = """
import fcntl, json, os, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        self.ledger = config["parameters"]["ledger"]["string_value"]
        self.gate = config["parameters"]["gate"]["string_value"]
        self.batch_sizes = []

    def _count(self, change):
        with open(self.ledger, "a+") as ledger:
            fcntl.flock(ledger, fcntl.LOCK_EX)
            ledger.seek(0)
            state = json.loads(ledger.read() or '{"now": 0, "max": 0, "starts": []}')
            state["now"] += change
            state["max"] = max(state["max"], state["now"])
            if change > 0:
                state["starts"].append(self.name)
            ledger.seek(0)
            ledger.truncate()
            ledger.write(json.dumps(state))

    def execute(self, requests):
        self._count(+1)
        deadline = time.time() + 30  # a test that fails never hangs the server
        while os.path.exists(self.gate) and time.time() < deadline:
            time.sleep(0.005)
        self._count(-1)
        self.batch_sizes.append(len(requests))
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
            for r in requests
        ]
"""

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU {rate_limiter} }} ]
parameters {{ key: "ledger" value {{ string_value: "{ledger}" }} }}
parameters {{ key: "gate" value {{ string_value: "{gate}" }} }}
{extra}
"""


def write_counting_model(
    repository: Path, name: str, rate_limiter: str, ledger: Path, max_batch_size: int = 0, extra: str = ""
) -> Path:
    """A counting model (OUT echoes IN) whose one instance has `rate_limiter` (text inside instance_group, may
    be empty), `extra` config text (e.g. a scheduler); returns its gate file (absent: executions do not hold)."""
    gate = repository.parent / f"{repository.name}-{name}.gate"
    config = CONFIG.format(
        name=name, rate_limiter=rate_limiter, ledger=ledger, gate=gate, max_batch_size=max_batch_size, extra=extra
    )
    write_model(repository, name, config, COUNTING_MODEL)
    return gate


def read_ledger(ledger: Path) -> dict:
    text = ledger.read_text() if ledger.exists() else ""
    return json.loads(text) if text else {"now": 0, "max": 0, "starts": []}


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll until `condition()` holds; fail naming `what` if it never does (a bound on hanging, not a timing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)
