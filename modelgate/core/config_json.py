"""ModelConfig as JSON, the way Triton returns it (and hands it to python-backend models).

Field names stay snake_case, default values are included, enums are names, and 64-bit
integers are JSON numbers (protobuf's JSON mapping would make them strings).
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def config_to_dict(message: Message) -> dict:
    """The message as a dict in Triton's JSON form."""
    as_dict = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    _int64_strings_to_numbers(message.DESCRIPTOR, as_dict)
    return as_dict


def _int64_strings_to_numbers(descriptor, as_dict: dict) -> None:
    for name, value in as_dict.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        if field.message_type is not None:
            _convert_message_value(field, value)
        elif field.type in _INT64_TYPES:
            as_dict[name] = [int(v) for v in value] if isinstance(value, list) else int(value)


def _convert_message_value(field, value) -> None:
    message_type = field.message_type
    if message_type.GetOptions().map_entry:
        value_field = message_type.fields_by_name["value"]
        for key, item in list(value.items()):
            if value_field.message_type is not None:
                _int64_strings_to_numbers(value_field.message_type, item)
            elif value_field.type in _INT64_TYPES:
                value[key] = int(item)
        return
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            _int64_strings_to_numbers(message_type, item)
