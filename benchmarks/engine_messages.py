"""Codecs for the messages between the LLM backend and its engine process, measured side by side.

The engine process (backends/llm/engine_process.py) gets one add-request message per request and sends back
one step-output batch per engine step, so both sit on the per-token path. Each candidate encodes a message to
bytes (what the pipe carries) and decodes the bytes back into typed objects, the same field set every time:

  dict + json                  string-keyed dicts through the standard json module (the engine's old wire)
  dataclass + pickle           dataclasses, pickle protocol 5 (our own processes only: never network input)
  dataclass + msgspec msgpack  dataclasses, msgspec's MessagePack codec with typed decoding
  Struct + msgspec msgpack     msgspec Structs, MessagePack (fields as a map)
  Struct + msgspec json        msgspec Structs, JSON
  Struct(array) + msgpack      msgspec Structs with array_like=True: fields by position, names never sent
  in use                       backends/llm/engine_messages.py: the codec the engine boundary uses now

Messages: an add request (a 512-token prompt, a few sampling fields set), a step of 64 outputs of one new
token each, and the same step with 5 top logprobs per token. Times are µs per message, the best of several
repeats (a shared machine only ever slows a run down), and the ratio of encode + decode to the fastest.

    python benchmarks/engine_messages.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import time
from collections.abc import Callable
from typing import Any

import msgspec

from modelgate.backends.llm import engine_messages

PROMPT_TOKENS = 512
BATCH = 64
TOP_LOGPROBS = 5

# (name, type, default); the same fields as the engine's messages, so each family carries the same data
_SAMPLING_FIELDS = [
    ("max_tokens", int, 16),
    ("min_tokens", int, 0),
    ("temperature", float, 1.0),
    ("top_k", int, 0),
    ("top_p", float, 1.0),
    ("min_p", float, 0.0),
    ("seed", int | None, None),
    ("repetition_penalty", float, 1.0),
    ("presence_penalty", float, 0.0),
    ("frequency_penalty", float, 0.0),
    ("stop", list[str], ()),
    ("stop_token_ids", list[int], ()),
    ("ignore_eos", bool, False),
    ("include_stop_str_in_output", bool, False),
    ("logprobs", int | None, None),
]
_OUTPUT_FIELDS = [
    ("request_id", str),
    ("new_token_ids", list[int]),
    ("new_text", str),
    ("finished", bool),
    ("finish_reason", str | None),
    ("num_prompt_tokens", int),
    ("num_output_tokens", int),
    ("num_cached_tokens", int),
    ("logprobs", list[dict[int, float]]),
    ("queue_time_s", float | None),
    ("engine_ttft_s", float | None),
]
_STATS_FIELDS = [
    ("num_running", int),
    ("num_waiting", int),
    ("kv_cache_usage", float),
    ("num_preemptions", int),
    ("prefix_cache_queries", int),
    ("prefix_cache_hits", int),
]


def _sample_fields() -> dict[str, dict]:
    """Plain values of the three messages, from which every family builds its own objects."""
    sampling = {"max_tokens": 128, "temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": ["\n\n"]}
    add = {"request_id": "17-3f9a2c1e", "prompt_token_ids": [(i * 7919) % 32000 for i in range(PROMPT_TOKENS)]}
    stats = {"num_running": BATCH, "num_waiting": 3, "kv_cache_usage": 0.42, "num_preemptions": 0}
    stats |= {"prefix_cache_queries": 81920, "prefix_cache_hits": 20480}
    return {"sampling": sampling, "add": add, "stats": stats}


def _outputs(with_logprobs: bool) -> list[dict]:
    outputs = []
    for i in range(BATCH):
        token = (i * 31) % 32000
        top = {token: -0.25, **{token + k: -1.5 - k for k in range(1, TOP_LOGPROBS + 1)}} if with_logprobs else None
        outputs.append(
            {
                "request_id": f"{i}-3f9a2c1e",
                "new_token_ids": [token],
                "new_text": " word",
                "finished": False,
                "finish_reason": None,
                "num_prompt_tokens": 512,
                "num_output_tokens": 40 + i,
                "num_cached_tokens": 128,
                "logprobs": [top] if top else [],
                "queue_time_s": None,
                "engine_ttft_s": None,
            }
        )
    return outputs


# -- the families: each builds (add message, outputs message) objects and an encode/decode pair per message


class _Family:
    name: str

    def build(self, fields: dict, outputs: list[dict]) -> tuple[Any, Any]:
        raise NotImplementedError

    def codec(self, kind: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
        raise NotImplementedError


class _DictJson(_Family):
    name = "dict + json"

    def build(self, fields, outputs):
        add = {"type": "add", **fields["add"], "sampling": _with_defaults(fields["sampling"])}
        return add, {"type": "outputs", "outputs": outputs, "stats": fields["stats"]}

    def codec(self, kind):
        return (lambda m: json.dumps(m, separators=(",", ":")).encode()), json.loads


def _with_defaults(sampling: dict) -> dict:
    return {
        name: sampling.get(name, list(default) if default == () else default) for name, _, default in _SAMPLING_FIELDS
    }


def _dataclass(name: str, fields: list[tuple]) -> type:
    spec = []
    for field in fields:
        if len(field) == 2:
            spec.append(field)
        elif field[2] == ():
            spec.append((field[0], field[1], dataclasses.field(default_factory=list)))
        else:
            spec.append(field)
    return dataclasses.make_dataclass(name, spec)


def _struct(name: str, fields: list[tuple], **options) -> type:
    spec = [(f[0], f[1], [] if f[2] == () else f[2]) if len(f) == 3 else f for f in fields]
    return msgspec.defstruct(name, spec, **options)


class _Dataclasses(_Family):
    def __init__(self):
        self.Sampling = _dataclass("Sampling", _SAMPLING_FIELDS)
        self.Output = _dataclass("Output", _OUTPUT_FIELDS)
        self.Stats = _dataclass("Stats", _STATS_FIELDS)
        self.Add = _dataclass(
            "Add", [("request_id", str), ("prompt_token_ids", list[int]), ("sampling", self.Sampling)]
        )
        self.Step = _dataclass("Step", [("outputs", list[self.Output]), ("stats", self.Stats)])

    def build(self, fields, outputs):
        add = self.Add(**fields["add"], sampling=self.Sampling(**fields["sampling"]))
        return add, self.Step([self.Output(**o) for o in outputs], self.Stats(**fields["stats"]))


# pickle finds classes by module and name: the dataclasses pickled here live at module level
_PICKLED = _Dataclasses()
for _cls in (_PICKLED.Sampling, _PICKLED.Output, _PICKLED.Stats, _PICKLED.Add, _PICKLED.Step):
    _cls.__module__ = __name__
    globals()[_cls.__name__] = _cls


class _DataclassPickle(_Family):
    name = "dataclass + pickle"

    def build(self, fields, outputs):
        return _PICKLED.build(fields, outputs)

    def codec(self, kind):
        return (lambda m: pickle.dumps(m, protocol=5)), pickle.loads


class _DataclassMsgpack(_Dataclasses):
    name = "dataclass + msgspec msgpack"

    def codec(self, kind):
        decoder = msgspec.msgpack.Decoder(self.Add if kind == "add" else self.Step)
        return msgspec.msgpack.Encoder().encode, decoder.decode


class _Structs(_Family):
    def __init__(self, name: str, module, **options):
        self.name, self.module = name, module
        self.Sampling = _struct("Sampling", _SAMPLING_FIELDS, **options)
        self.Output = _struct("Output", _OUTPUT_FIELDS, **options)
        self.Stats = _struct("Stats", _STATS_FIELDS, **options)
        add = [("request_id", str), ("prompt_token_ids", list[int]), ("sampling", self.Sampling)]
        self.Add = msgspec.defstruct("Add", add, tag="add", **options)
        self.Step = msgspec.defstruct("Step", [("outputs", list[self.Output]), ("stats", self.Stats)], **options)

    def build(self, fields, outputs):
        add = self.Add(**fields["add"], sampling=self.Sampling(**fields["sampling"]))
        return add, self.Step([self.Output(**o) for o in outputs], self.Stats(**fields["stats"]))

    def codec(self, kind):
        decoder = self.module.Decoder(self.Add if kind == "add" else self.Step)
        return self.module.Encoder().encode, decoder.decode


class _InUse(_Family):
    name = "in use (engine_messages)"

    def build(self, fields, outputs):
        m = engine_messages
        add = m.AddRequest(**fields["add"], sampling=m.SamplingParams(**fields["sampling"]))
        step = m.StepOutputs([m.RequestOutput(**o) for o in outputs], m.EngineStats(**fields["stats"]))
        return add, step

    def codec(self, kind):
        decode = engine_messages.decode_to_engine if kind == "add" else engine_messages.decode_from_engine
        return engine_messages.encode, decode


def _families() -> list[_Family]:
    return [
        _DictJson(),
        _DataclassPickle(),
        _DataclassMsgpack(),
        _Structs("Struct + msgspec msgpack", msgspec.msgpack),
        _Structs("Struct + msgspec json", msgspec.json),
        _Structs("Struct(array) + msgpack", msgspec.msgpack, array_like=True),
        _InUse(),
    ]


# -- timing


def _best_us(function: Callable, argument, repeats: int, budget_s: float) -> float:
    """The best per-call time in µs over `repeats` runs of about budget_s / repeats each."""
    number = 1
    while True:  # calls per run: enough for one run to take ~budget/repeats
        start = time.perf_counter()
        for _ in range(number):
            function(argument)
        if time.perf_counter() - start > budget_s / repeats / 4 or number > 1_000_000:
            break
        number *= 4
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            function(argument)
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def _measure(family: _Family, kind: str, message, repeats: int, budget_s: float) -> tuple[float, float, int]:
    encode, decode = family.codec(kind)
    data = encode(message)
    _check_round_trip(family, kind, message, decode(data))
    return _best_us(encode, message, repeats, budget_s), _best_us(decode, data, repeats, budget_s), len(data)


def _check_round_trip(family: _Family, kind: str, message, decoded) -> None:
    """A codec that loses or changes a field would win for the wrong reason."""
    if isinstance(family, _DictJson):
        if kind != "add":  # JSON turns the logprobs' int keys into strings; compare as the old wire did
            message = json.loads(json.dumps(message))
    assert decoded == message, f"{family.name}: {kind} does not survive the round trip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget-s", type=float, default=0.7, help="seconds per measured function")
    args = parser.parse_args()
    fields = _sample_fields()
    cases = [
        ("add request", "add", lambda f: f.build(fields, _outputs(False))[0]),
        (f"step of {BATCH} outputs", "step", lambda f: f.build(fields, _outputs(False))[1]),
        (f"step of {BATCH} outputs, {TOP_LOGPROBS} logprobs", "step", lambda f: f.build(fields, _outputs(True))[1]),
    ]
    for title, kind, make in cases:
        rows = []
        for family in _families():
            encode_us, decode_us, size = _measure(family, kind, make(family), args.repeats, args.budget_s)
            rows.append((family.name, encode_us, decode_us, size))
        _print_table(title, rows)


def _print_table(title: str, rows: list[tuple[str, float, float, int]]) -> None:
    fastest = min(encode + decode for _, encode, decode, _ in rows)
    print(f"\n{title}")
    print(f"{'codec':<28} {'encode µs':>10} {'decode µs':>10} {'total µs':>10} {'x fastest':>10} {'bytes':>7}")
    for name, encode, decode, size in rows:
        total = encode + decode
        print(f"{name:<28} {encode:>10.2f} {decode:>10.2f} {total:>10.2f} {total / fastest:>10.2f} {size:>7}")


if __name__ == "__main__":
    main()
