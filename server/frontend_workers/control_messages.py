"""The control channel between the server and each frontend worker: typed messages in MessagePack.

Server to worker: the model table (model_table.py) whenever it changes, and StopWorker. Worker to server:
WorkerReady once its port is open, then a WorkerReport every REPORT_INTERVAL_S while something changed: the
increments of its request statistics and its LLM metrics, which the server adds to its own (one /metrics and
one statistics endpoint for all processes). Only the server's own processes write to this pipe.
"""

from __future__ import annotations

from multiprocessing.connection import Connection

import msgspec

from modelgate.server.frontend_workers.metrics_snapshot import MetricFamilySnapshot
from modelgate.server.frontend_workers.model_table import ModelTable
from modelgate.server.frontend_workers.statistics_deltas import StatisticsDelta

REPORT_INTERVAL_S = 0.5


class TableUpdate(msgspec.Struct, array_like=True, tag="table"):
    table: ModelTable


class StopWorker(msgspec.Struct, array_like=True, tag="stop"):
    pass


class WorkerReady(msgspec.Struct, array_like=True, tag="ready"):
    pid: int


class WorkerReport(msgspec.Struct, array_like=True, tag="report"):
    statistics: list[StatisticsDelta]
    metrics: list[MetricFamilySnapshot]


ToWorker = TableUpdate | StopWorker
FromWorker = WorkerReady | WorkerReport

_encoder = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_from_worker = msgspec.msgpack.Decoder(FromWorker)


def send(connection: Connection, message: ToWorker | FromWorker) -> None:
    connection.send_bytes(_encoder.encode(message))


def receive_to_worker(connection: Connection) -> ToWorker:
    return _to_worker.decode(connection.recv_bytes())


def receive_from_worker(connection: Connection) -> FromWorker:
    return _from_worker.decode(connection.recv_bytes())
