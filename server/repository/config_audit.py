"""Which fields of Triton's `ModelConfig` modelgate honours, and the check that refuses every other one.

A Triton user who moves a repository over must get Triton's behaviour or a load error, never a quiet
difference. So every field of every message a config can reach is in exactly one of two lists:
`IMPLEMENTED` (modelgate reads it and does what Triton does) or `REFUSED` (a config that sets it does not
load; the value says what to do instead). Messages are keyed by their name without the `inference.`
package; a message reached only through a refused field needs no entry (the field is refused whole).
tests/server/repository/test_config_audit.py walks the protobuf descriptor, so a field added to the
protobuf fails that test until someone puts it in one of the lists.

What counts as "set" is protobuf's own presence (`ListFields`): a scalar at its default value (`0`,
`false`, `""`, the first enum value) is indistinguishable from an absent one and passes, while a
submessage that is present, even empty (`model_warmup {}`, `optimization {}`), is set and refused.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError

_PACKAGE = "inference."

# message -> the fields modelgate reads and honours as Triton does.
IMPLEMENTED: dict[str, frozenset[str]] = {
    "ModelConfig": frozenset(
        {
            "name",
            "platform",
            "backend",
            "version_policy",
            "max_batch_size",
            "input",
            "output",
            "dynamic_batching",
            "ensemble_scheduling",
            "instance_group",
            "default_model_filename",
            "parameters",
            "model_transaction_policy",
            "model_warmup",
            "response_cache",
            "sequence_batching",
        }
    ),
    "ModelVersionPolicy": frozenset({"latest", "all", "specific"}),
    "ModelVersionPolicy.Latest": frozenset({"num_versions"}),
    "ModelVersionPolicy.All": frozenset(),
    "ModelVersionPolicy.Specific": frozenset({"versions"}),
    # `format` is client-facing metadata in Triton too (image clients lay out pixels by it); the server checks
    # that an NHWC/NCHW input has three dims (config_validation.py) and shows it in the config.
    "ModelInput": frozenset({"name", "data_type", "format", "dims", "reshape", "optional", "allow_ragged_batch"}),
    "ModelOutput": frozenset({"name", "data_type", "dims", "reshape"}),
    "ModelTensorReshape": frozenset({"shape"}),
    "ModelDynamicBatching": frozenset(
        {
            "preferred_batch_size",
            "max_queue_delay_microseconds",
            "priority_levels",
            "default_priority_level",
            "default_queue_policy",
            "priority_queue_policy",
        }
    ),
    "ModelQueuePolicy": frozenset(
        {"timeout_action", "default_timeout_microseconds", "allow_timeout_override", "max_queue_size"}
    ),
    "ModelEnsembling": frozenset({"step"}),
    "ModelEnsembling.Step": frozenset({"model_name", "model_version", "input_map", "output_map"}),
    "ModelInstanceGroup": frozenset({"name", "kind", "count", "gpus", "rate_limiter"}),
    # Honoured with --rate-limit execution_count; accepted and without effect with --rate-limit off, as Triton.
    "ModelRateLimiter": frozenset({"resources", "priority"}),
    "ModelRateLimiter.Resource": frozenset({"name", "global", "count"}),
    "ModelParameter": frozenset({"string_value"}),
    "ModelTransactionPolicy": frozenset({"decoupled"}),
    "ModelResponseCache": frozenset({"enable"}),
    "ModelSequenceBatching": frozenset(
        {"direct", "oldest", "max_sequence_idle_microseconds", "control_input", "state"}
    ),
    "ModelSequenceBatching.Control": frozenset(
        {"kind", "int32_false_true", "fp32_false_true", "bool_false_true", "data_type"}
    ),
    "ModelSequenceBatching.ControlInput": frozenset({"name", "control"}),
    "ModelSequenceBatching.InitialState": frozenset({"data_type", "dims", "zero_data", "data_file", "name"}),
    # The last two are hints on how Triton lays state out in GPU memory; what a model computes is the same.
    "ModelSequenceBatching.State": frozenset(
        {
            "input_name",
            "output_name",
            "data_type",
            "dims",
            "initial_state",
            "use_same_buffer_for_input_output",
            "use_growable_memory",
        }
    ),
    "ModelSequenceBatching.StrategyDirect": frozenset({"max_queue_delay_microseconds", "minimum_slot_utilization"}),
    "ModelSequenceBatching.StrategyOldest": frozenset(
        {"max_candidate_sequences", "preferred_batch_size", "max_queue_delay_microseconds"}
    ),
    "ModelWarmup": frozenset({"name", "batch_size", "inputs", "count"}),
    "ModelWarmup.Input": frozenset({"data_type", "dims", "zero_data", "random_data", "input_data_file"}),
}

# message -> field -> what the user can do instead (shown in the load error).
REFUSED: dict[str, dict[str, str]] = {
    "ModelConfig": {
        "runtime": "the backend is chosen by 'backend' or 'platform' alone",
        "batch_input": "no batch inputs are generated; send every input with the request",
        "batch_output": "no batch outputs are scattered; return every output per request",
        "optimization": "the backends choose their own optimizations (the LLM backend through its parameters)",
        "cc_model_filenames": "the model file is 'default_model_filename' on every GPU",
        "metric_tags": "metrics carry the model and version labels only",
        "model_operations": "custom operation libraries are not loaded",
        "model_repository_agents": "there are no repository agents",
        "model_metrics": "metric families and their histogram buckets are fixed",
    },
    "ModelInput": {
        "is_shape_tensor": "there are no shape tensors (a TensorRT feature)",
        "is_non_linear_format_io": "non-linear I/O formats are a TensorRT feature",
    },
    "ModelOutput": {
        "label_filename": "the classification extension is not supported",
        "is_shape_tensor": "there are no shape tensors (a TensorRT feature)",
        "is_non_linear_format_io": "non-linear I/O formats are a TensorRT feature",
    },
    "ModelDynamicBatching": {
        "preserve_ordering": "responses go out as their batches finish",
    },
    "ModelEnsembling": {
        "max_inflight_requests": "an ensemble's steps are not throttled",
    },
    "ModelEnsembling.Step": {
        "model_namespace": "model names are global; there are no namespaces",
    },
    "ModelSequenceBatching": {
        "iterative_sequence": "sequences run request by request; a model cannot reschedule itself",
    },
    "ModelSequenceBatching.StrategyOldest": {
        "preserve_ordering": "responses go out as their batches finish",
    },
    "ModelInstanceGroup": {
        "secondary_devices": "instances use one device each",
        "profile": "profiles are a TensorRT feature",
        "passive": "every instance receives requests",
        "host_policy": "there are no host policies",
    },
}


def audit_config(config: ModelConfig, source: str) -> None:
    """Raise ConfigError naming the first field `config` sets that modelgate does not implement."""
    _audit_message(config, "", source)


def _audit_message(message: Message, path: str, source: str) -> None:
    name = message_key(message.DESCRIPTOR)
    implemented = IMPLEMENTED.get(name, frozenset())
    for field, value in message.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        if field.name not in implemented:
            raise ConfigError(source, where, _refusal(name, field.name))
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item_path, item in _items(field, value, where):
                _audit_message(item, item_path, source)


def _items(field: FieldDescriptor, value, where: str):
    """(path, submessage) for each message a field holds: a map's message values, a list's elements, or itself."""
    if _is_map(field):
        value_field = field.message_type.fields_by_name["value"]
        if value_field.type != FieldDescriptor.TYPE_MESSAGE:
            return []
        return [(f"{where}[{key}]", item) for key, item in value.items()]
    if field.is_repeated:
        return [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    return [(where, value)]


def _refusal(message_name: str, field_name: str) -> str:
    hint = REFUSED.get(message_name, {}).get(field_name)
    suffix = f" ({hint})" if hint else ""
    return f"is not supported by modelgate{suffix}; remove it from the config"


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def message_key(descriptor: Descriptor) -> str:
    """A message's key in IMPLEMENTED / REFUSED: its full name without the protobuf package."""
    return descriptor.full_name.removeprefix(_PACKAGE)
