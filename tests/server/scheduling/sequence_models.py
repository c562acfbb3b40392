"""Stateful python models for the sequence batcher tests, and a repository of them."""

from pathlib import Path

import numpy as np

from tests.server_harness import write_model

# A running sum per sequence, kept by correlation ID or (parameter key: slot) by batch position, which only
# holds up if every request of a sequence comes at its slot's position. BATCH and READY_ROWS tell how the
# request was batched.
ACCUMULATOR = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


def _value(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.by_slot = config["parameters"]["key"]["string_value"] == "slot"
        self.sums = {}

    def execute(self, requests):
        ready_rows = sum(int(_value(r, "READY").item() == 1) for r in requests)
        return [self._answer(position, r, len(requests), ready_rows) for position, r in enumerate(requests)]

    def _answer(self, position, request, batch, ready_rows):
        value = _value(request, "INPUT")
        is_ready = _value(request, "READY").item() == 1
        key = position if self.by_slot else _value(request, "CORRID").item()
        if is_ready:
            start = _value(request, "START").item() == 1
            self.sums[key] = (0 if start else self.sums.get(key, 0)) + int(value.sum())
        total = self.sums.get(key, 0) if is_ready else -1
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("OUTPUT", np.full(value.shape, total, np.int32)),
            pb_utils.Tensor("BATCH", np.full(value.shape, batch, np.int32)),
            pb_utils.Tensor("READY_ROWS", np.full(value.shape, ready_rows, np.int32)),
            pb_utils.Tensor("ENDS", np.full(value.shape, _value(request, "END").item(), np.float32)),
        ])
"""

ACCUMULATOR_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [
  {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "BATCH" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "READY_ROWS" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "ENDS" data_type: TYPE_FP32 dims: [ 1 ] }}
]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters {{ key: "key" value {{ string_value: "{key}" }} }}
sequence_batching {{
  {strategy}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] }} ] }},
    {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid} }} ] }}
  ]
}}
"""

# OUTPUT = the state plus INPUT, and the same as the next state: the implicit state carries the sum. A negative
# INPUT fails its request.
STATEFUL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            state = pb_utils.get_input_tensor_by_name(request, "STATE_IN").as_numpy()
            if value.item() < 0:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("INPUT must be >= 0")))
                continue
            total = state + value
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", total), pb_utils.Tensor("STATE_OUT", total)
            ]))
        return responses
"""

STATEFUL_CONFIG = """
name: "stateful"
backend: "python"
max_batch_size: 4
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
sequence_batching {
  oldest { max_candidate_sequences: 4 }
  state [ {
    input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 1 ]
    initial_state { data_type: TYPE_INT32 dims: [ 1 ] data_file: "hundred.bin" }
  } ]
}
"""

PLAIN = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([
            pb_utils.Tensor("OUTPUT", pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy())
        ]) for r in requests]
"""

PLAIN_CONFIG = """
name: "plain"
backend: "python"
max_batch_size: 4
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

# name -> (max_batch_size, instances, key, strategy, corrid)
ACCUMULATORS = {
    "direct_slot": (4, 1, "slot", "", "TYPE_UINT64"),
    "oldest": (4, 1, "corrid", "oldest { max_candidate_sequences: 4 }", "TYPE_UINT64"),
    "oldest_batched": (
        4,
        1,
        "corrid",
        "oldest { max_candidate_sequences: 3 preferred_batch_size: [ 3 ] max_queue_delay_microseconds: 30000000 }",
        "TYPE_UINT64",
    ),
    # Two instances, no batching, sums kept in each instance's process: right only if sequences stick to one.
    "string_ids": (0, 2, "corrid", "direct { }", "TYPE_STRING"),
    # One slot in all, released after 0.3 s idle.
    "idle": (1, 1, "slot", "max_sequence_idle_microseconds: 300000", "TYPE_UINT64"),
}


def write_sequence_repository(repository: Path) -> Path:
    for name, (max_batch_size, instances, key, strategy, corrid) in ACCUMULATORS.items():
        config = ACCUMULATOR_CONFIG.format(
            name=name, max_batch_size=max_batch_size, instances=instances, key=key, strategy=strategy, corrid=corrid
        )
        write_model(repository, name, config, ACCUMULATOR)
    stateful = write_model(repository, "stateful", STATEFUL_CONFIG, STATEFUL)
    (stateful / "initial_state").mkdir()
    (stateful / "initial_state" / "hundred.bin").write_bytes(np.array([100], np.int32).tobytes())
    write_model(repository, "plain", PLAIN_CONFIG, PLAIN)
    return repository
