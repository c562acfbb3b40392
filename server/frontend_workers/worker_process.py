"""A frontend worker process: the HTTP and gRPC ports shared with the server (SO_REUSEPORT: the kernel spreads
connections over the processes), LLM generation served here over the server's engines, the rest sent on.

It lives as long as its control pipe: when the server goes away (or says StopWorker), it stops accepting,
lets the requests in flight finish within --exit-timeout-secs, lets go of the engines and exits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from multiprocessing.connection import Connection

from aiohttp import web

from modelgate.core.backend_metrics import BACKEND_METRICS
from modelgate.core.process_sharing import ProcessSharing, share_processes
from modelgate.server.dataplane import Dataplane
from modelgate.server.frontend_workers.attached_models import AttachedModels
from modelgate.server.frontend_workers.control_messages import (
    REPORT_INTERVAL_S,
    StopWorker,
    TableUpdate,
    WorkerReady,
    WorkerReport,
    receive_to_worker,
    send,
)
from modelgate.server.frontend_workers.grpc_worker_server import WorkerGrpcServer
from modelgate.server.frontend_workers.http_proxy import PrimaryProxy
from modelgate.server.frontend_workers.metrics_snapshot import snapshot
from modelgate.server.frontend_workers.primary_endpoints import PrimaryEndpoints
from modelgate.server.frontend_workers.statistics_deltas import DeltaTracker
from modelgate.server.frontend_workers.worker_app import create_worker_app
from modelgate.server.log_settings import LogSettings
from modelgate.server.settings import ServerSettings
from modelgate.server.statistics import StatisticsRegistry

logger = logging.getLogger(__name__)


def worker_main(index: int, settings_json: str, endpoints: PrimaryEndpoints, authkey: bytes, control) -> None:
    """Entry point (spawned): `endpoints`: the ports the server bound (it may have asked for port 0) and its
    sockets."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker {index}: %(message)s")
    settings = ServerSettings.model_validate_json(settings_json)
    try:
        from uvloop import run
    except ImportError:
        from asyncio import run
    run(_serve(settings, endpoints, authkey, control))


async def _serve(settings: ServerSettings, endpoints: PrimaryEndpoints, authkey: bytes, control) -> None:
    share_processes(ProcessSharing(endpoints.socket_dir, authkey))  # the key to attach with
    stats = StatisticsRegistry()
    models = AttachedModels(stats)
    dataplane = Dataplane(models, stats, settings.model_control_mode, server_name=settings.server_name)
    dataplane.is_ready = True
    http = await _start_http(settings, endpoints, models, dataplane) if endpoints.http_port is not None else None
    grpc_server = None
    if endpoints.grpc_port is not None:
        grpc_server = WorkerGrpcServer(settings, models, dataplane, endpoints.grpc_socket)
        await grpc_server.start(settings.grpc_address, endpoints.grpc_port)
    gc.collect()
    gc.freeze()  # as the server does (runtime.py): full collections then skip what lives as long as the process
    send(control, WorkerReady(os.getpid()))
    messages = _read_control(control)
    reports = asyncio.create_task(_report_forever(stats, control))
    try:
        while (message := await messages.get()) is not None and not isinstance(message, StopWorker):
            if isinstance(message, TableUpdate):
                await models.reconcile(message.table)
    finally:
        reports.cancel()
        # Stop accepting; requests in flight finish within --exit-timeout-secs.
        drains = [http.stop()] if http is not None else []
        if grpc_server is not None:
            drains.append(grpc_server.stop(settings.exit_timeout_secs))
        await asyncio.gather(*drains)
        await models.close()


class _WorkerHttp:
    """The worker's HTTP site and its proxy to the server, stopped together."""

    def __init__(self, runner: web.AppRunner, proxy: PrimaryProxy):
        self.runner = runner
        self.proxy = proxy

    async def stop(self) -> None:
        await self.runner.cleanup()  # requests in flight finish (shutdown_timeout)
        await self.proxy.close()


async def _start_http(
    settings: ServerSettings, endpoints: PrimaryEndpoints, models: AttachedModels, dataplane: Dataplane
) -> _WorkerHttp:
    proxy = PrimaryProxy(endpoints.http_socket)
    app = create_worker_app(
        models,
        dataplane,
        proxy,
        LogSettings(settings.log_verbose),
        settings.http_max_input_size,
        settings.http_restrictions(),
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.exit_timeout_secs, handler_cancellation=True)
    await runner.setup()
    tls = settings.http_tls()
    site = web.TCPSite(
        runner,
        settings.http_address,
        endpoints.http_port,
        reuse_address=True,
        reuse_port=True,
        ssl_context=tls.server_context() if tls is not None else None,
    )
    await site.start()
    return _WorkerHttp(runner, proxy)


def _read_control(control: Connection) -> asyncio.Queue:
    """The server's messages, put on the loop by a reader thread; None once the pipe closed (server gone)."""
    loop = asyncio.get_running_loop()
    messages: asyncio.Queue = asyncio.Queue()

    def read_forever() -> None:
        while True:
            try:
                message = receive_to_worker(control)
            except (EOFError, OSError):
                message = None
            loop.call_soon_threadsafe(messages.put_nowait, message)
            if message is None or isinstance(message, StopWorker):
                return

    threading.Thread(target=read_forever, name="worker-control", daemon=True).start()
    return messages


async def _report_forever(stats: StatisticsRegistry, control: Connection) -> None:
    """The server adds what the worker's requests did to its own statistics and metrics."""
    tracker = DeltaTracker()
    last_metrics = None
    while True:
        await asyncio.sleep(REPORT_INTERVAL_S)
        deltas = tracker.deltas(stats)
        metrics = snapshot(BACKEND_METRICS)
        if deltas or metrics != last_metrics:
            try:
                send(control, WorkerReport(deltas, metrics))
            except OSError:
                return  # the server is gone; the control reader ends the worker
            last_metrics = metrics
