"""`pb_utils.MetricFamily` and `pb_utils.Metric`: custom metrics of a python model, as Triton's API has them.

Every operation goes to the process's metric transport: the server's store itself when the model runs in the
server (thread isolation), or a round trip to the server when it runs in a stub (the stub installs that
transport at start). Either way the value a model reads is the server's, shared by every instance.
A Metric holds its family weakly: once the model dropped the family, the metric's operations fail, as in Triton.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from modelgate.backends.python.pb_types import TritonModelException

# (family name, description, kind, labels, operation, value, buckets) -> the value after it, or None.
MetricTransport = Callable[[str, str, str, dict, str, float, "list[float] | None"], "float | None"]

_transport: MetricTransport | None = None


def install_metric_transport(transport: MetricTransport) -> None:
    """Where this process's metric operations go (the stub sends them to the server)."""
    global _transport
    _transport = transport


def _call(family: MetricFamily, labels: dict, operation: str, value: float = 0.0, buckets=None) -> float | None:
    transport = _transport or _server_store_transport()
    try:
        return transport(family._name, family._description, family._kind, labels, operation, value, buckets)
    except ValueError as exc:  # the store's MetricError, or the server's answer to a stub
        raise TritonModelException(str(exc)) from None


def _server_store_transport() -> MetricTransport:
    from modelgate.backends.python.custom_metrics import custom_metric_store

    return custom_metric_store().handle


class MetricFamily:
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2
    _KIND_NAMES = {COUNTER: "counter", GAUGE: "gauge", HISTOGRAM: "histogram"}

    def __init__(self, name: str, description: str, kind: int):
        if kind not in self._KIND_NAMES:
            raise TritonModelException("MetricFamily kind must be COUNTER, GAUGE or HISTOGRAM")
        self._name = name
        self._description = description
        self._kind = self._KIND_NAMES[kind]
        _call(self, {}, "declare")

    def Metric(
        self, labels: dict[str, str] | None = None, buckets: list[float] | None = None
    ) -> Metric:  # Triton's name
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        _call(self, labels, "create", buckets=None if buckets is None else [float(b) for b in buckets])
        return Metric(self, labels)


class Metric:
    def __init__(self, family: MetricFamily, labels: dict[str, str]):
        self._family = weakref.ref(family)
        self._labels = labels

    def increment(self, value: float) -> None:
        self._op("increment", value)

    def set(self, value: float) -> None:
        self._op("set", value)

    def value(self) -> float:
        return self._op("value")

    def observe(self, value: float) -> None:
        self._op("observe", value)

    def _op(self, operation: str, value: float = 0.0) -> float | None:
        family = self._family()
        if family is None:
            raise TritonModelException("Invalid metric operation as the corresponding 'MetricFamily' has been deleted.")
        return _call(family, self._labels, operation, float(value))
