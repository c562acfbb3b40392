"""Protocol-independent inference requests and responses.

Frontends decode the wire into these, the dataplane validates them against the model's
config, schedulers and backends consume them. Tensor data is always a numpy array whose
shape equals the declared shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from server.errors import ModelgateError

if TYPE_CHECKING:
    from server.response_stream import ResponseStream


@dataclass
class InferTensor:
    """A named tensor; `data.shape == tuple(shape)` and `datatype` is a wire name."""

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
    response_stream: ResponseStream | None = field(default=None, repr=False, compare=False)

    @property
    def requested_output_names(self) -> list[str]:
        return [output.name for output in self.outputs]


@dataclass
class InferResponse:
    """The answer to one request: outputs, or an error for this request alone."""

    model_name: str
    model_version: str
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[InferTensor] = field(default_factory=list)
    error: ModelgateError | None = None
