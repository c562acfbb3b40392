"""Checks `sequence_batching` of a ModelConfig at load; every error names the field and what is allowed.

Checked here: what the config says on its own (control and state names, their datatypes, strategy values).
What needs the model folder (an initial state's `data_file`) is read, and checked, when the batcher is made
(`sequence_config.read_sequence_config`).
"""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelSequenceBatching

from modelgate.core.backend_names import backend_name
from modelgate.core.errors import ConfigError
from modelgate.core.path_parameters import is_plain_file_name

Control = ModelSequenceBatching.Control
FIELD = "sequence_batching"
# CORRID may be any integer type up to 64 bits, or a string, as Triton allows.
CORRID_TYPES = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")
FALSE_TRUE_FIELDS = ("int32_false_true", "fp32_false_true", "bool_false_true")


def is_sequence_model(config: ModelConfig) -> bool:
    """The sequence batcher schedules this model."""
    return config.HasField("sequence_batching")


def check_sequence_fields(config: ModelConfig, source: str) -> None:
    """Raise ConfigError for the first problem of `sequence_batching`; nothing to check without it."""
    if not is_sequence_model(config):
        return
    batching = config.sequence_batching
    _check_unsupported(config, source)
    taken = {t.name for t in config.input}
    for index, control_input in enumerate(batching.control_input):
        _check_control_input(control_input, f"{FIELD}.control_input[{index}]", taken, source)
        taken.add(control_input.name)
    for index, state in enumerate(batching.state):
        _check_state(state, f"{FIELD}.state[{index}]", taken, source)
        taken.add(state.input_name)
    _check_strategy(config, source)


def _check_unsupported(config: ModelConfig, source: str) -> None:
    # Framework backends bind only the config's inputs to the model: control and state inputs would be lost.
    if backend_name(config) != "python":
        raise ConfigError(
            source,
            FIELD,
            f"is supported for python models only so far; this model's backend is '{backend_name(config)}'",
        )
    if config.model_transaction_policy.decoupled:
        raise ConfigError(
            source, "model_transaction_policy.decoupled", f"is not supported with {FIELD} yet (one response a request)"
        )


def _check_control_input(control_input, where: str, taken: set[str], source: str) -> None:
    _check_new_name(control_input.name, f"{where}.name", taken, source)
    if len(control_input.control) != 1:
        raise ConfigError(source, f"{where}.control", f"has {len(control_input.control)} entries; exactly one a name")
    control = control_input.control[0]
    kind = Control.Kind.Name(control.kind)
    if control.kind == Control.CONTROL_SEQUENCE_CORRID:
        _check_corrid(control, f"{where}.control[0]", source)
        return
    given = [name for name in FALSE_TRUE_FIELDS if len(getattr(control, name))]
    if len(given) != 1 or len(getattr(control, given[0])) != 2:
        raise ConfigError(
            source,
            f"{where}.control[0]",
            f"{kind} needs exactly one of {', '.join(FALSE_TRUE_FIELDS)} with two values [false, true]",
        )


def _check_corrid(control, where: str, source: str) -> None:
    type_name = DataType.Name(control.data_type)
    if type_name not in CORRID_TYPES:
        raise ConfigError(source, f"{where}.data_type", f"is {type_name}; CONTROL_SEQUENCE_CORRID takes {CORRID_TYPES}")
    given = [name for name in FALSE_TRUE_FIELDS if len(getattr(control, name))]
    if given:
        raise ConfigError(source, f"{where}.{given[0]}", "is not allowed for CONTROL_SEQUENCE_CORRID (set data_type)")


def _check_state(state, where: str, taken: set[str], source: str) -> None:
    _check_new_name(state.input_name, f"{where}.input_name", taken, source)
    if not state.output_name:
        raise ConfigError(source, f"{where}.output_name", "is required: the model output fed back as the state")
    if state.data_type == DataType.TYPE_INVALID:
        raise ConfigError(source, f"{where}.data_type", "is required; e.g. TYPE_FP32")
    if any(d == 0 or d < -1 for d in state.dims):
        raise ConfigError(source, f"{where}.dims", f"is {list(state.dims)}; each must be -1 (variable) or > 0")
    if len(state.initial_state) > 1:
        raise ConfigError(source, f"{where}.initial_state", "has more than one entry; at most one is allowed")
    for initial in state.initial_state:
        _check_initial_state(initial, state, f"{where}.initial_state[0]", source)


def _check_initial_state(initial, state, where: str, source: str) -> None:
    if initial.data_type != state.data_type:
        raise ConfigError(
            source, f"{where}.data_type", f"must equal the state's data_type {DataType.Name(state.data_type)}"
        )
    if not initial.dims or any(d < 1 for d in initial.dims):
        raise ConfigError(source, f"{where}.dims", f"is {list(initial.dims)}; every dimension must be given (> 0)")
    choice = initial.WhichOneof("state_data")
    if choice is None:
        raise ConfigError(source, where, "needs zero_data: true or data_file")
    if choice == "data_file":
        if not is_plain_file_name(initial.data_file):
            raise ConfigError(
                source, f"{where}.data_file", "must be a plain file name inside the model's initial_state/ folder"
            )
        if state.data_type == DataType.TYPE_STRING:
            raise ConfigError(source, f"{where}.data_file", "is not supported for TYPE_STRING states; use zero_data")


def _check_new_name(name: str, field: str, taken: set[str], source: str) -> None:
    if not name:
        raise ConfigError(source, field, "is required")
    if name in taken:
        raise ConfigError(
            source, field, f"'{name}' is already an input or another control/state input; the batcher adds it itself"
        )


def _check_strategy(config: ModelConfig, source: str) -> None:
    batching = config.sequence_batching
    if batching.WhichOneof("strategy_choice") == "oldest":
        oldest = batching.oldest
        too_big = [s for s in oldest.preferred_batch_size if s < 1 or s > max(1, config.max_batch_size)]
        if too_big:
            raise ConfigError(
                source,
                f"{FIELD}.oldest.preferred_batch_size",
                f"has {too_big}; each must be between 1 and max_batch_size {max(1, config.max_batch_size)}",
            )
        if oldest.max_candidate_sequences < 0:
            raise ConfigError(source, f"{FIELD}.oldest.max_candidate_sequences", "must be >= 0")
        return
    utilization = batching.direct.minimum_slot_utilization
    if not 0.0 <= utilization <= 1.0:
        raise ConfigError(source, f"{FIELD}.direct.minimum_slot_utilization", f"is {utilization}; allowed: 0.0 to 1.0")
