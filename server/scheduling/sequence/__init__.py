"""Triton's sequence batcher: stateful models fed the requests of each sequence in order.

`config_fields` checks `sequence_batching` at load, `sequence_config` reads it, `correlation` reads a request's
`sequence_id` / `sequence_start` / `sequence_end`, `controls` and `implicit_state` build the tensors the batcher
adds to each request, `sequence_table` owns the sequences and their slots, `batch_forming` picks the next batch
(direct or oldest) and `scheduler` runs them on the instances.
"""

from modelgate.server.scheduling.sequence.config_fields import is_sequence_model

__all__ = ["is_sequence_model"]
