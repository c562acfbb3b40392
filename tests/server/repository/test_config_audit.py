"""Every ModelConfig field is implemented or refused at load, and the two lists cover the protobuf exactly."""

import pytest
import tritonclient.grpc as grpcclient
from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.config_files import parse_config_text
from modelgate.core.errors import ConfigError
from modelgate.server.repository.config_audit import IMPLEMENTED, REFUSED, audit_config, message_key
from modelgate.server.repository.config_completion import complete_model_config, read_model_config
from modelgate.server.repository.config_validation import validate_model_config
from tests.server.lifecycle_models import SCALE_MODEL, server_error, write_scale_model, xy_config
from tests.server_harness import write_model


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _child_message(field: FieldDescriptor):
    """The message a field leads to (a map's value message), or None for scalars and scalar maps."""
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return None
    if _is_map(field):
        value = field.message_type.fields_by_name["value"]
        return value.message_type if value.type == FieldDescriptor.TYPE_MESSAGE else None
    return field.message_type


def _reachable_messages() -> dict[str, list[str]]:
    """Every message reached from ModelConfig through implemented fields -> the field path to it."""
    found = {"ModelConfig": []}
    pending = [ModelConfig.DESCRIPTOR]
    while pending:
        descriptor = pending.pop()
        key = message_key(descriptor)
        for field in descriptor.fields:
            child = _child_message(field)
            if child is None or field.name not in IMPLEMENTED.get(key, ()):
                continue
            if message_key(child) not in found:
                found[message_key(child)] = [*found[key], field.name]
                pending.append(child)
    return found


REACHABLE = _reachable_messages()
REFUSED_FIELDS = [(message, field) for message, fields in sorted(REFUSED.items()) for field in sorted(fields)]


def test_every_field_of_every_reachable_message_is_in_exactly_one_list():
    """A field added to Triton's protobuf fails here until it is implemented or refused."""
    for key in REACHABLE:
        descriptor = _descriptor(key)
        names = {field.name for field in descriptor.fields}
        implemented, refused = set(IMPLEMENTED.get(key, ())), set(REFUSED.get(key, {}))
        assert key in IMPLEMENTED, f"message {key} is reachable through implemented fields but has no entry"
        assert not implemented & refused, f"{key}: {sorted(implemented & refused)} are in both lists"
        assert names == implemented | refused, (
            f"{key}: unlisted {sorted(names - implemented - refused)}, unknown {sorted((implemented | refused) - names)}"
        )


def test_the_lists_name_only_reachable_messages():
    assert set(IMPLEMENTED) | set(REFUSED) <= set(REACHABLE)


@pytest.mark.parametrize(("message", "field"), REFUSED_FIELDS, ids=[f"{m}.{f}" for m, f in REFUSED_FIELDS])
def test_each_refused_field_is_a_config_error_naming_it(message, field):
    config = ModelConfig(name="m", backend="python")
    path = _set_field(config, REACHABLE[message], field)
    with pytest.raises(ConfigError) as raised:
        audit_config(config, "/models/m/config.pbtxt")
    assert raised.value.field == path
    assert raised.value.message.startswith(f"/models/m/config.pbtxt: field '{path}': is not supported by modelgate")


def test_an_empty_submessage_of_a_refused_feature_is_refused(tmp_path):
    """`optimization {}` asks for the feature even without settings: refused like a full one."""
    model_dir = write_model(tmp_path, "m", xy_config("m", "optimization {}"), SCALE_MODEL)
    with pytest.raises(ConfigError) as raised:
        read_model_config(model_dir, "m", None)
    assert raised.value.field == "optimization"
    assert f"{model_dir / 'config.pbtxt'}: field 'optimization': is not supported by modelgate" in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "dynamic_batching { preserve_ordering: false }",  # a scalar at its default is the field left out
        "model_repository_agents { }",
        'instance_group [ { count: 1 kind: KIND_CPU host_policy: "" } ]',
    ],
)
def test_default_scalars_pass_and_present_messages_do_not(tmp_path, text):
    model_dir = write_model(tmp_path, "m", xy_config("m", text, max_batch_size=4), SCALE_MODEL)
    if "agents" in text:
        with pytest.raises(ConfigError, match="field 'model_repository_agents': is not supported"):
            read_model_config(model_dir, "m", None)
    else:
        config, source = read_model_config(model_dir, "m", None)
        complete_model_config(config, source, model_dir, "m")


def test_nested_fields_are_named_with_their_position():
    text = xy_config("m", 'instance_group [ { count: 1 }, { count: 1 host_policy: "numa0" } ]')
    with pytest.raises(ConfigError) as raised:
        audit_config(parse_config_text(text, "config.pbtxt"), "config.pbtxt")
    assert raised.value.field == "instance_group[1].host_policy"
    assert "no host policies" in raised.value.message


def test_yaml_and_json_configs_are_audited_too(tmp_path):
    yaml = "name: m\nbackend: python\nmetric_tags: {team: a}\n"
    model_dir = write_model(tmp_path, "m", yaml, SCALE_MODEL, config_file="config.yaml")
    with pytest.raises(ConfigError, match="field 'metric_tags': is not supported by modelgate"):
        read_model_config(model_dir, "m", None)


def test_a_refused_field_fails_the_load_through_the_clients(make_server, tmp_path):
    write_scale_model(tmp_path, "ok")
    write_scale_model(tmp_path, "pinned", extra="optimization { input_pinned_memory { enable: true } }")
    running = make_server([tmp_path], strict_readiness=False, model_control_mode="explicit", load_model=["*"])
    grpc = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        assert grpc.is_model_ready("ok") and not grpc.is_model_ready("pinned")
        rows = {row.name: row for row in grpc.get_model_repository_index().models}
        assert "field 'optimization': is not supported by modelgate" in rows["pinned"].reason
        error = server_error(grpc.load_model, "ok", config='{"backend": "python", "metric_tags": {"team": "a"}}')
        assert "field 'metric_tags': is not supported by modelgate" in error.message()
        assert grpc.is_model_ready("ok")  # a refused reload keeps the serving version
    finally:
        grpc.close()


def test_kind_model_is_refused(tmp_path):
    model_dir = write_model(tmp_path, "m", xy_config("m", "instance_group [ { kind: KIND_MODEL } ]"), SCALE_MODEL)
    config, source = read_model_config(model_dir, "m", None)
    with pytest.raises(ConfigError) as raised:
        complete_model_config(config, source, model_dir, "m")
    assert raised.value.field == "instance_group[0].kind"
    assert "allowed: KIND_AUTO, KIND_CPU, KIND_GPU" in raised.value.message


def test_an_image_format_needs_three_dims():
    text = 'input [ { name: "X" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 224 ] } ]'
    config = parse_config_text(f'name: "m" backend: "python"\n{text}', "config.pbtxt")
    with pytest.raises(ConfigError, match="FORMAT_NCHW, which needs 3 dims") as raised:
        validate_model_config(config, "config.pbtxt", "m")
    assert raised.value.field == "input[0].format"
    config.input[0].dims.append(224)
    validate_model_config(config, "config.pbtxt", "m")


# -- helpers ---------------------------------------------------------------------------------


def _descriptor(key: str):
    descriptor = ModelConfig.DESCRIPTOR
    for name in REACHABLE[key]:
        descriptor = _child_message(descriptor.fields_by_name[name])
    return descriptor


def _set_field(config: ModelConfig, route: list[str], field: str) -> str:
    """Set `field` of the message at `route` (creating one element of each list on the way); its error path."""
    message, path = config, []
    for name in route:
        descriptor = message.DESCRIPTOR.fields_by_name[name]
        container = getattr(message, name)
        if _is_map(descriptor):
            message, label = container["k"], f"{name}[k]"
        elif descriptor.is_repeated:
            message, label = container.add(), f"{name}[0]"
        else:
            message, label = container, name
        path.append(label)
    _set_value(message, message.DESCRIPTOR.fields_by_name[field])
    return ".".join([*path, field])


def _set_value(message, field: FieldDescriptor) -> None:
    value = getattr(message, field.name)
    if _is_map(field):
        entry = field.message_type.fields_by_name["value"]
        if entry.type == FieldDescriptor.TYPE_MESSAGE:
            value["k"].SetInParent()
        else:
            value["k"] = _nonzero(entry)
    elif field.is_repeated:
        value.add() if field.type == FieldDescriptor.TYPE_MESSAGE else value.append(_nonzero(field))
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        value.SetInParent()
    else:
        setattr(message, field.name, _nonzero(field))


def _nonzero(field: FieldDescriptor):
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[1].number
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_STRING:
        return "x"
    return 1
