"""Protocol-independent inference requests and responses.

Frontends decode the wire into these, the dataplane validates them against the model's
config, schedulers and backends consume them. Tensor data is always a numpy array whose
shape equals the declared shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from modelgate.core.errors import ModelgateError


@dataclass
class InferTensor:
    """A named tensor; `data.shape == tuple(shape)` and `datatype` is a wire name.

    `data` is a numpy array, except between python models: a BLS request's inputs and, when the request
    `can_take_device_outputs`, its response's outputs may be torch CUDA tensors (core/tensors/device_tensors.py).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """One inference request.

    `model_version` is "" for the serving policy's choice. `outputs` empty means every output
    of the model. `parameters` holds the request-level parameters as sent (JSON values).
    """

    model_name: str
    model_version: str = ""
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, InferTensor] = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)
    # Set by the scheduler for streamed calls: where a decoupled model sends its responses,
    # and how it learns that the client cancelled.
    response_stream: ResponseSink | None = field(default=None, repr=False, compare=False)
    # Set for requests a python model sends (BLS): the caller takes GPU outputs as torch CUDA tensors. Unset
    # (requests from the network), every output is a numpy array in host memory, which the encoders take.
    can_take_device_outputs: bool = field(default=False, compare=False)
    # Set by frontends that write outputs as JSON values (generate, OpenAI): a model may then answer with
    # `InferResponse.values` rather than tensors, which saves building and reading arrays per streamed token.
    can_take_output_values: bool = field(default=False, compare=False)

    @property
    def requested_output_names(self) -> list[str]:
        return [output.name for output in self.outputs]


@dataclass
class InferResponse:
    """The answer to one request: outputs, or an error for this request alone.

    `values`, only in answer to a request that `can_take_output_values`: one-element outputs as Python values
    (str for BYTES, int, float, bool) by output name, in place of `outputs`.
    """

    model_name: str
    model_version: str
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[InferTensor] = field(default_factory=list)
    error: ModelgateError | None = None
    values: dict[str, Any] | None = None


class ResponseSink(Protocol):
    """Where a streamed request's responses go (`response_stream.ResponseStream` is the one implementation).

    Every method is safe to call from any thread.
    """

    def send(self, response: InferResponse | None, is_final: bool) -> None:
        """Queue a response and/or the final flag; raises RuntimeError once the stream is closed."""

    def fail(self, response: InferResponse) -> None:
        """End the stream with `response` (which carries an error)."""

    def try_write_values(self, values: dict) -> bool:
        """Write a non-final response that carries only `values` (and the stream's model name, version and id)
        to the client at once if the frontend can; False: nothing happened, `send` it."""

    @property
    def is_closed(self) -> bool:
        """Whether the final flag was sent."""

    def is_cancelled(self) -> bool:
        """Whether the client cancelled or went away: a model may stop producing."""

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback` once when the request is cancelled (at once if it already was)."""
