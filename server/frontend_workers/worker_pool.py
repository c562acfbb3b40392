"""The server's side of its frontend workers (--http-workers): start them, keep them told which models they
may serve, add what they report to the server's statistics and metrics, start again one that dies.

The server itself stays a full frontend on the same ports; with N workers the kernel spreads HTTP and gRPC
connections over N+1 processes. Workers send on (to the server's Unix sockets) everything they do not serve
themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import threading
from dataclasses import dataclass, field

from modelgate.server.frontend_workers.control_messages import (
    StopWorker,
    TableUpdate,
    WorkerReady,
    WorkerReport,
    receive_from_worker,
    send,
)
from modelgate.server.frontend_workers.metrics_snapshot import WorkerMetrics
from modelgate.server.frontend_workers.model_table import ModelTable, attachable_models
from modelgate.server.frontend_workers.primary_endpoints import PrimaryEndpoints
from modelgate.server.frontend_workers.statistics_deltas import absorb
from modelgate.server.frontend_workers.worker_process import worker_main
from modelgate.server.model_manager import ModelManager
from modelgate.server.settings import ServerSettings
from modelgate.server.statistics import StatisticsRegistry

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
TABLE_INTERVAL_S = 0.25  # how soon a model loaded (or an engine back) is served by the workers too
RESTART_DELAY_S = 1.0
MAX_RESTARTS = 5  # per worker slot; past that the slot stays empty (the other processes serve its share)


@dataclass(eq=False)
class _Worker:
    index: int
    metrics_id: int  # a new process reports new metrics: its predecessor's totals are kept, not replaced
    process: multiprocessing.process.BaseProcess
    control: object
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    restarts: int = 0


class FrontendWorkers:
    def __init__(
        self,
        settings: ServerSettings,
        manager: ModelManager,
        stats: StatisticsRegistry,
        metrics: WorkerMetrics,
        authkey: bytes,
    ):
        self.settings = settings
        self.manager = manager
        self.stats = stats
        self.metrics = metrics
        self._authkey = authkey
        self._workers: list[_Worker] = []
        self._metrics_ids = itertools.count()
        self._table: ModelTable | None = None
        self._table_task: asyncio.Task | None = None
        self._is_stopping = False
        self._endpoints: PrimaryEndpoints | None = None

    async def start(self, count: int, endpoints: PrimaryEndpoints) -> None:
        """Start `count` workers on the server's ports and wait until each has its ports open."""
        self._endpoints = endpoints
        self._workers = await asyncio.gather(*(self._start_worker(index) for index in range(count)))
        self._table_task = asyncio.create_task(self._publish_forever())

    async def stop(self, timeout_s: float) -> None:
        """Workers finish their requests in flight (their own --exit-timeout-secs) and exit."""
        self._is_stopping = True
        if self._table_task is not None:
            self._table_task.cancel()
        for worker in self._workers:
            self._send(worker, StopWorker())
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, _join, worker.process, timeout_s) for worker in self._workers)
        )

    async def _start_worker(self, index: int, restarts: int = 0) -> _Worker:
        context = multiprocessing.get_context("spawn")
        control, child_control = context.Pipe(duplex=True)
        args = (index, self.settings.model_dump_json(), self._endpoints, self._authkey)
        process = context.Process(
            target=worker_main, args=(*args, child_control), name=f"modelgate-http-worker-{index}", daemon=True
        )
        process.start()
        child_control.close()
        worker = _Worker(index, next(self._metrics_ids), process, control, restarts=restarts)
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, _wait_ready, control)
        if ready is None:
            process.terminate()
            raise RuntimeError(f"HTTP worker {index} did not start (exit code {process.exitcode})")
        logger.info("HTTP worker %d serving, pid %d", index, ready.pid)
        threading.Thread(
            target=self._read_forever, args=(worker, loop), name=f"worker-{index}-reports", daemon=True
        ).start()
        if self._table is not None:
            self._send(worker, TableUpdate(self._table))
        return worker

    async def _publish_forever(self) -> None:
        while True:
            table = attachable_models(self.manager.all_serving())
            if table != self._table:
                self._table = table
                for worker in self._workers:
                    self._send(worker, TableUpdate(table))
            await asyncio.sleep(TABLE_INTERVAL_S)

    def _send(self, worker: _Worker, message) -> None:
        with worker.send_lock:
            try:
                send(worker.control, message)
            except OSError:
                pass  # a worker that died: its reader restarts it

    def _read_forever(self, worker: _Worker, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                message = receive_from_worker(worker.control)
            except (EOFError, OSError):
                break
            if isinstance(message, WorkerReport):
                loop.call_soon_threadsafe(self._absorb, worker, message)
        if not self._is_stopping and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._replace(worker)))

    def _absorb(self, worker: _Worker, report: WorkerReport) -> None:
        for delta in report.statistics:
            for stats in self.stats.select(delta.name, delta.version):
                absorb(stats, delta)
        self.metrics.update(worker.metrics_id, report.metrics)

    async def _replace(self, worker: _Worker) -> None:
        """A worker died (its connections with it): start another in its place, a bounded number of times."""
        worker.process.join(1)
        logger.error("HTTP worker %d exited (code %s)", worker.index, worker.process.exitcode)
        if worker.restarts >= MAX_RESTARTS or self._is_stopping:
            return
        await asyncio.sleep(RESTART_DELAY_S)
        try:
            replacement = await self._start_worker(worker.index, worker.restarts + 1)
        except RuntimeError as exc:
            logger.error("%s", exc)
            return
        self._workers[self._workers.index(worker)] = replacement


def _wait_ready(control) -> WorkerReady | None:
    if not control.poll(START_TIMEOUT_S):
        return None
    try:
        message = receive_from_worker(control)
    except (EOFError, OSError):
        return None
    return message if isinstance(message, WorkerReady) else None


def _join(process, timeout_s: float) -> None:
    process.join(timeout_s)
    if process.is_alive():
        process.terminate()
        process.join(5)
