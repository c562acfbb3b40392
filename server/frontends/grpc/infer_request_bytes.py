"""ModelInferRequest decoded without copying its raw input contents.

protobuf's Python runtime (upb) copies a `bytes` field twice on the way to the caller: into its arena when it
parses the message, and into a new `bytes` object each time the field is read. For an image batch that is
two more passes over every input byte (600 KB per ResNet-50 image), on top of grpcio's own. Here the
message's top-level fields are scanned in the wire format: the `raw_input_contents` entries become views of
the received bytes, and the rest (names, shapes, parameters: small) is parsed by protobuf as usual.

Only requests whose raw contents are large go this way (LARGE_CONTENTS_BYTES); a malformed message, or one
that uses wire features a ModelInferRequest has no business with (groups), is left to protobuf, which then
raises the DecodeError it would have raised anyway.
"""

from __future__ import annotations

from tritonclient.grpc import service_pb2

# Below this many bytes of raw contents, the two copies cost less than the scan.
LARGE_CONTENTS_BYTES = 64 << 10
_RAW_CONTENTS = service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
_LENGTH_DELIMITED, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5


class InferRequestWithViews:
    """A ModelInferRequest whose `raw_input_contents` are memoryviews of the bytes it came in; every other
    field is read from `message` (parsed without them)."""

    __slots__ = ("message", "raw_input_contents")

    def __init__(self, message: service_pb2.ModelInferRequest, raw_input_contents: list[memoryview]):
        self.message = message
        self.raw_input_contents = raw_input_contents

    def __getattr__(self, name: str):
        return getattr(self.message, name)


def parse_infer_request(raw: bytes) -> service_pb2.ModelInferRequest | InferRequestWithViews:
    """`raw` decoded; raises google.protobuf.message.DecodeError as ModelInferRequest.FromString does."""
    spans = _top_level_spans(raw) if len(raw) >= LARGE_CONTENTS_BYTES else None
    if spans is None:
        return service_pb2.ModelInferRequest.FromString(raw)
    view = memoryview(raw)
    contents = [view[start:end] for field, _, start, end in spans if field == _RAW_CONTENTS]
    if sum(len(c) for c in contents) < LARGE_CONTENTS_BYTES:
        return service_pb2.ModelInferRequest.FromString(raw)
    rest = b"".join(view[begin:end] for field, begin, _, end in spans if field != _RAW_CONTENTS)
    return InferRequestWithViews(service_pb2.ModelInferRequest.FromString(rest), contents)


def _top_level_spans(raw: bytes) -> list[tuple[int, int, int, int]] | None:
    """(field number, where its tag begins, where its value begins, where it ends) of each top-level field;
    None where the bytes are not a message this scan reads (protobuf then decides)."""
    spans = []
    position, size = 0, len(raw)
    while position < size:
        begin = position
        tag, position = _varint(raw, position)
        if tag is None:
            return None
        field, wire_type = tag >> 3, tag & 7
        if wire_type == _LENGTH_DELIMITED:
            length, position = _varint(raw, position)
            if length is None or position + length > size:
                return None
            start, position = position, position + length
        elif wire_type == _VARINT:
            start = position
            _, position = _varint(raw, position)
            if position is None:
                return None
        elif wire_type in (_FIXED64, _FIXED32):
            start, position = position, position + (8 if wire_type == _FIXED64 else 4)
            if position > size:
                return None
        else:  # groups (3, 4) or an invalid wire type
            return None
        if field == 0:
            return None
        spans.append((field, begin, start, position))
    return spans


def _varint(raw: bytes, position: int) -> tuple[int | None, int | None]:
    """The base-128 varint at `position` and where it ends; (None, None) if it runs off the end or past 10
    bytes."""
    value, shift = 0, 0
    for index in range(position, min(position + 10, len(raw))):
        byte = raw[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    return None, None
