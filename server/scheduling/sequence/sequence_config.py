"""`sequence_batching` read once per loaded version into plain values the batcher consults per request.

Defaults where the config leaves a field unset (0): `max_sequence_idle_microseconds` 1 s, as Triton's; for the
oldest strategy `max_candidate_sequences` = max_batch_size (at least 1), the sequences one instance batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelSequenceBatching

from modelgate.core.errors import ConfigError
from modelgate.core.tensors import datatypes
from modelgate.server.scheduling.sequence.config_fields import FIELD

Control = ModelSequenceBatching.Control
DEFAULT_IDLE_US = 1_000_000
INITIAL_STATE_FOLDER = "initial_state"  # Triton's: data files of initial states live in <model>/initial_state/
_KIND_NAMES = {
    Control.CONTROL_SEQUENCE_START: "START",
    Control.CONTROL_SEQUENCE_END: "END",
    Control.CONTROL_SEQUENCE_READY: "READY",
    Control.CONTROL_SEQUENCE_CORRID: "CORRID",
}
_FALSE_TRUE = (("int32_false_true", "INT32"), ("fp32_false_true", "FP32"), ("bool_false_true", "BOOL"))


@dataclass(frozen=True)
class ControlSpec:
    """One control input: `kind` is START, END, READY or CORRID; `values` are (false, true) except for CORRID."""

    name: str
    kind: str
    datatype: datatypes.DataType
    values: tuple | None


@dataclass(frozen=True)
class StateSpec:
    """One implicit state; `initial` is the state of a sequence's first request, without the batch dimension."""

    input_name: str
    output_name: str
    datatype: datatypes.DataType
    initial: np.ndarray


@dataclass(frozen=True)
class SequenceConfig:
    model_name: str
    is_oldest: bool
    has_batch_dim: bool
    max_batch_size: int  # rows of one execution (1 for a model without batching)
    slots_per_instance: int  # direct: batch slots; oldest: candidate sequences
    idle_ns: int
    max_delay_ns: int
    min_slot_utilization: float  # direct only
    preferred_sizes: tuple[int, ...]  # oldest only
    controls: tuple[ControlSpec, ...]
    states: tuple[StateSpec, ...]

    @property
    def corrid_datatype(self) -> datatypes.DataType | None:
        """The CORRID control's datatype, which a request's `sequence_id` type must match; None without one."""
        return next((c.datatype for c in self.controls if c.kind == "CORRID"), None)


def read_sequence_config(config: ModelConfig, model_dir: Path | None) -> SequenceConfig:
    """The batcher's settings; raises ConfigError for an initial state file that is missing or the wrong size."""
    batching = config.sequence_batching
    is_oldest = batching.WhichOneof("strategy_choice") == "oldest"
    max_batch_size = max(1, config.max_batch_size)
    strategy = batching.oldest if is_oldest else batching.direct
    return SequenceConfig(
        model_name=config.name,
        is_oldest=is_oldest,
        has_batch_dim=config.max_batch_size > 0,
        max_batch_size=max_batch_size,
        slots_per_instance=(batching.oldest.max_candidate_sequences or max_batch_size) if is_oldest else max_batch_size,
        idle_ns=(batching.max_sequence_idle_microseconds or DEFAULT_IDLE_US) * 1000,
        max_delay_ns=strategy.max_queue_delay_microseconds * 1000,
        min_slot_utilization=0.0 if is_oldest else batching.direct.minimum_slot_utilization,
        preferred_sizes=tuple(sorted(batching.oldest.preferred_batch_size)) if is_oldest else (),
        controls=tuple(_control_spec(c) for c in batching.control_input),
        states=tuple(_state_spec(s, i, config.name, model_dir) for i, s in enumerate(batching.state)),
    )


def _control_spec(control_input) -> ControlSpec:
    control = control_input.control[0]
    kind = _KIND_NAMES[control.kind]
    if kind == "CORRID":
        return ControlSpec(control_input.name, kind, _datatype(control.data_type), None)
    for field, wire in _FALSE_TRUE:
        values = list(getattr(control, field))
        if values:
            return ControlSpec(control_input.name, kind, datatypes.from_wire_name(wire), (values[0], values[1]))
    raise AssertionError("config_fields checked that one false/true list is set")


def _state_spec(state, index: int, model_name: str, model_dir: Path | None) -> StateSpec:
    datatype = _datatype(state.data_type)
    if state.initial_state:
        initial = _initial_data(state.initial_state[0], datatype, f"{FIELD}.state[{index}]", model_name, model_dir)
    else:
        # Triton leaves the first state uninitialized; zeros (variable dimensions as 1) make it deterministic.
        initial = _zeros(datatype, [d if d > 0 else 1 for d in state.dims])
    return StateSpec(state.input_name, state.output_name, datatype, initial)


def _initial_data(initial, datatype, where: str, model_name: str, model_dir: Path | None) -> np.ndarray:
    dims = [int(d) for d in initial.dims]
    if initial.WhichOneof("state_data") == "zero_data":
        return _zeros(datatype, dims)
    source = f"model '{model_name}'"
    if model_dir is None:
        raise ConfigError(source, f"{where}.initial_state[0].data_file", "needs a model folder to read from")
    path = Path(model_dir) / INITIAL_STATE_FOLDER / initial.data_file
    expected = int(np.prod(dims)) * datatype.itemsize
    if not path.is_file():
        raise ConfigError(source, f"{where}.initial_state[0].data_file", f"names {path}, which is not a file")
    raw = path.read_bytes()
    if len(raw) != expected:
        raise ConfigError(
            source,
            f"{where}.initial_state[0].data_file",
            f"{path} has {len(raw)} bytes; dims {dims} of {datatype.config_name} need {expected}",
        )
    return np.frombuffer(raw, dtype=datatype.numpy_dtype).reshape(dims).copy()


def _zeros(datatype: datatypes.DataType, dims: list[int]) -> np.ndarray:
    if datatype.is_bytes:
        return np.full(dims, b"", dtype=object)
    return np.zeros(dims, dtype=datatype.numpy_dtype)


def _datatype(data_type: int) -> datatypes.DataType:
    return datatypes.BY_CONFIG_NAME[DataType.Name(data_type)]
