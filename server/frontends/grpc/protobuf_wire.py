"""The few pieces of protobuf's wire format that streamed responses are built from without a message object.

A ModelStreamInferResponse of an LLM token is its request's constant fields followed by the token's raw output
contents (value_responses.py): building those bytes by concatenation costs a fraction of filling a message and
serializing it, paid per streamed token.
"""

from __future__ import annotations

_ONE_BYTE_VARINTS = [bytes((value,)) for value in range(0x80)]  # nearly every length in a streamed token


def varint(value: int) -> bytes:
    """`value` (>= 0) as a base-128 varint, least significant group first."""
    if value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    if value < 0x4000:  # a streamed token's message: two bytes, without the loop
        return bytes((value & 0x7F | 0x80, value >> 7))
    groups = bytearray()
    while value >= 0x80:
        groups.append(value & 0x7F | 0x80)
        value >>= 7
    groups.append(value)
    return bytes(groups)


def length_delimited_tag(field_number: int) -> bytes:
    """The key of a length-delimited field (bytes, string, message): the field number and wire type 2."""
    return varint(field_number << 3 | 2)


def length_delimited(tag: bytes, data: bytes) -> bytes:
    """One length-delimited field: its key (`length_delimited_tag`), the length of `data`, then `data`."""
    return tag + varint(len(data)) + data
