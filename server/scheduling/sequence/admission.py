"""Which sequence a request joins, or the error that refuses it before anything is queued.

A sequence model takes only requests of a sequence (a non-zero or non-empty `sequence_id`) of batch size 1,
whose id type matches the CORRID control's datatype when the model has one. A request that starts a sequence
(`sequence_start`) opens it (or restarts it: it runs after what the sequence has queued, with a fresh state);
any other request needs its sequence open: not yet seen, ended, or released for being idle is an error, as
Triton's.
"""

from __future__ import annotations

import numpy as np

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest
from modelgate.server.scheduling.sequence.correlation import SequenceFlags, read_sequence_flags
from modelgate.server.scheduling.sequence.sequence_config import SequenceConfig
from modelgate.server.scheduling.sequence.sequence_table import Sequence, SequenceTable

# The schedule policy extension's parameters: the dynamic batcher's; refused here rather than ignored.
SCHEDULE_POLICY_PARAMETERS = ("priority", "timeout")


def read_flags(request: InferRequest, batch_size: int, config: SequenceConfig) -> SequenceFlags:
    """The request's sequence flags; InvalidArgumentError when the model cannot take it."""
    flags = read_sequence_flags(request.parameters)
    name = config.model_name
    if flags is None:
        raise InvalidArgumentError(
            f"inference request to model '{name}' must specify a non-zero or non-empty correlation ID: it is a "
            "sequence model (request parameters 'sequence_id', 'sequence_start', 'sequence_end')"
        )
    if config.has_batch_dim and batch_size != 1:
        raise InvalidArgumentError(
            f"inference request to model '{name}' must specify batch-size 1 due to requirements of sequence "
            f"batcher; got batch size {batch_size}"
        )
    _check_id_type(flags.sequence_id, config)
    for policy in SCHEDULE_POLICY_PARAMETERS:
        if request.parameters.get(policy) not in (None, 0):
            raise InvalidArgumentError(
                f"request parameter '{policy}' is not supported by the sequence batcher of model '{name}'; "
                "leave it unset (or 0)"
            )
    return flags


def _check_id_type(sequence_id: int | str, config: SequenceConfig) -> None:
    datatype = config.corrid_datatype
    if datatype is None:
        return
    if datatype.is_bytes != isinstance(sequence_id, str):
        wanted = "a string" if datatype.is_bytes else "an unsigned integer"
        raise InvalidArgumentError(
            f"request parameter 'sequence_id' of model '{config.model_name}' must be {wanted}: its "
            f"CONTROL_SEQUENCE_CORRID input is {datatype.config_name}; got {sequence_id!r}"
        )
    if not datatype.is_bytes and sequence_id > np.iinfo(datatype.numpy_dtype).max:
        raise InvalidArgumentError(
            f"request parameter 'sequence_id' {sequence_id} does not fit model '{config.model_name}''s "
            f"CONTROL_SEQUENCE_CORRID datatype {datatype.config_name}"
        )


def join_sequence(table: SequenceTable, flags: SequenceFlags, config: SequenceConfig) -> Sequence:
    """The sequence the request joins (a new one for a START); InvalidArgumentError for a closed sequence."""
    sequence = table.get(flags.key)
    if flags.is_start:
        sequence = sequence or table.start(flags.key)
    elif sequence is None or sequence.awaits_start:
        raise InvalidArgumentError(_no_start_message(table, flags, config))
    sequence.awaits_start = flags.is_end
    return sequence


def _no_start_message(table: SequenceTable, flags: SequenceFlags, config: SequenceConfig) -> str:
    message = (
        f"inference request for sequence {flags.sequence_id!r} to model '{config.model_name}' must specify the "
        "START flag on the first request of the sequence"
    )
    if flags.key in table.released_idle:
        idle_us = config.idle_ns // 1000
        message += (
            f"; the sequence was released after it was idle longer than max_sequence_idle_microseconds ({idle_us})"
        )
    elif table.get(flags.key) is not None:
        message += "; its last request so far had the END flag"
    return message
