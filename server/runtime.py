"""Starting and stopping the whole server on one asyncio event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import ssl
import tempfile
from pathlib import Path

from aiohttp import web

from modelgate.core.backend_metrics import BACKEND_METRICS
from modelgate.core.errors import ModelgateError
from modelgate.core.process_sharing import ProcessSharing, share_processes
from modelgate.server.dataplane import Dataplane
from modelgate.server.frontend_workers.metrics_snapshot import WorkerMetrics
from modelgate.server.frontend_workers.primary_endpoints import PrimaryEndpoints
from modelgate.server.frontend_workers.worker_pool import FrontendWorkers
from modelgate.server.frontends.grpc.server import GrpcFrontend
from modelgate.server.frontends.http.app import create_http_app
from modelgate.server.hardware_metrics import HardwareSampler, start_hardware_sampler
from modelgate.server.large_allocations import return_large_blocks_to_the_os
from modelgate.server.log_settings import LogSettings
from modelgate.server.loop_lag import LoopLagProbe
from modelgate.server.memory.device_memory import SystemMemory
from modelgate.server.memory.ledger import MemoryLedger
from modelgate.server.memory.placement import sized_last
from modelgate.server.metrics import create_metrics_app
from modelgate.server.model_manager import ModelManager
from modelgate.server.model_residency import ModelResidency
from modelgate.server.repository.layout import RepositoryLayout
from modelgate.server.repository_poller import RepositoryPoller
from modelgate.server.response_cache.lru_cache import ResponseCache
from modelgate.server.server_metrics import LOOP_PROBE_INTERVAL_S, ServerMetrics
from modelgate.server.settings import ServerSettings
from modelgate.server.shared_memory.registry import SharedMemoryRegistry
from modelgate.server.statistics import StatisticsRegistry

logger = logging.getLogger(__name__)

UNLOAD_RESERVE_S = 5.0  # of --exit-timeout-secs, kept for unloading the models (at most half of it)


class ModelgateServer:
    """Owns the dataplane, the frontends and the poller. `start` returns once models are loaded (the ports are
    open before: liveness answers during loads, readiness once they are done)."""

    def __init__(self, settings: ServerSettings, ledger: MemoryLedger | None = None):
        """`ledger`: the memory ledger (tests lend one over a fake device); by default one over this machine."""
        self.settings = settings
        self.layout = RepositoryLayout(list(settings.model_repository))
        self.stats = StatisticsRegistry()
        if ledger is None:
            ledger = MemoryLedger(SystemMemory(), settings.gpu_memory_limit, settings.cpu_memory_limit)
        self.manager = ModelManager(self.layout, self.stats, ledger)
        cache = settings.response_cache()
        self.manager.services.response_cache = None if cache is None else ResponseCache(cache.max_bytes)
        self.manager.services.rate_limiter = settings.rate_limiter()
        self.server_metrics = ServerMetrics()
        residency = None
        if settings.model_load_on_demand:
            residency = ModelResidency(self.manager, ledger, settings.pin_model, self.server_metrics.registry)
        self.dataplane = Dataplane(
            self.manager,
            self.stats,
            settings.model_control_mode,
            strict_readiness=settings.strict_readiness,
            allow_model_file_uploads=settings.allow_model_file_uploads,
            residency=residency,
            shared_memory=SharedMemoryRegistry() if settings.allow_shared_memory else None,
            server_name=settings.server_name,
        )
        # Ensemble steps and models calling models (BLS) go through the dataplane, as clients' requests do.
        self.manager.infer_step = self.dataplane.infer
        self.log_settings = LogSettings(settings.log_verbose)
        self.poller = RepositoryPoller(self.manager, self.layout, settings.repository_poll_secs)
        self._lag_probe = LoopLagProbe(LOOP_PROBE_INTERVAL_S, self.server_metrics.observe_loop_lag)
        self.grpc = (
            GrpcFrontend(
                self.dataplane,
                self.log_settings,
                self.server_metrics.observe_grpc_request,
                settings.grpc_max_input_size,
                settings.grpc_restrictions(),
                settings.grpc_tls(),
                share_port=settings.http_workers > 1,
            )
            if settings.allow_grpc
            else None
        )
        self.workers: FrontendWorkers | None = None  # --http-workers above 1; made in start()
        self._sharing: ProcessSharing | None = None
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self.metrics_port: int | None = None
        self.hardware: HardwareSampler | None = None  # nv_gpu_* / nv_cpu_* figures, sampled off the loop
        self._runners: list[web.AppRunner] = []
        self._poll_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Open the ports (live at once: a probe answers while models load), load the models, then be ready."""
        if self.settings.http_workers > 1 and (self.settings.allow_http or self.grpc is not None):
            self._share_processes()
        http_runner = None
        if self.settings.allow_http:
            app = create_http_app(
                self.dataplane,
                self.log_settings,
                self.settings.http_max_input_size,
                self.settings.http_restrictions(),
            )
            app.middlewares.insert(0, self.server_metrics.http_middleware)  # outermost: refused bodies count too
            tls = self.settings.http_tls()
            ssl_context = tls.server_context() if tls is not None else None
            self.http_port = await self._serve(app, self.settings.http_address, self.settings.http_port, ssl_context)
            http_runner = self._runners[-1]
        if self.grpc is not None:
            local = self._endpoints().grpc_socket if self._sharing is not None else None
            self.grpc_port = await self.grpc.start(self.settings.grpc_address, self.settings.grpc_port, local)
        if self._sharing is not None:
            await self._start_workers(http_runner)
        if self.settings.allow_metrics:
            self.hardware = await start_hardware_sampler(self.settings, self.server_metrics.registry)
            backends = self.workers.metrics if self.workers is not None else None
            metrics_app = create_metrics_app(self.stats, self.server_metrics.registry, backend_collector=backends)
            address = self.settings.metrics_address or self.settings.http_address
            self.metrics_port = await self._serve(metrics_app, address, self.settings.metrics_port)
        await self._load_initial_models()
        if self.settings.model_control_mode == "poll":
            self._poll_task = asyncio.create_task(self.poller.run_forever())
        self.dataplane.is_ready = True
        self._lag_probe.start()
        if self.grpc is not None:
            await self.grpc.set_serving(True)
        logger.info(
            "modelgate ready: HTTP on port %s, gRPC on port %s, metrics on port %s",
            self.http_port,
            self.grpc_port,
            self.metrics_port,
        )

    async def stop(self) -> bool:
        """Shut down within one budget, --exit-timeout-secs in all: the frontends stop taking requests and let
        those in flight finish (until UNLOAD_RESERVE_S before the end, or half the budget), then the models unload. True when everything ended in time; False when the budget
        ran out first (a model stuck in execute, say): the caller then ends the process without waiting for it.
        """
        loop = asyncio.get_running_loop()
        budget = self.settings.exit_timeout_secs
        deadline = loop.time() + budget
        # The drain may not take it all: the models' finalize (and the cancellations the drain causes) need time.
        drain_deadline = deadline - min(budget / 2, UNLOAD_RESERVE_S)

        def left(until: float = deadline) -> float:
            return max(0.0, until - loop.time())

        self.dataplane.is_ready = False
        self._lag_probe.stop()
        if self.hardware is not None:
            self.hardware.stop()
        if self._poll_task is not None:
            self._poll_task.cancel()
        drains = [runner.cleanup() for runner in self._runners]
        if self.workers is not None:
            drains.append(self.workers.stop(left(drain_deadline)))
        if self.grpc is not None:
            await self.grpc.set_serving(False)
            drains.append(self.grpc.stop(grace_secs=left(drain_deadline)))
        in_time = await _within(asyncio.gather(*drains), left(drain_deadline), "requests in flight did not finish")
        unloaded = await _within(self.manager.shutdown(), left(), "models did not unload")
        self._stop_sharing()
        return unloaded and in_time

    def _share_processes(self) -> None:
        """Instances loaded from now on whose work runs in a process of its own (LLM engines) take frontend
        workers there, at sockets in a directory of this server's own (mkdtemp: mode 0700), with a key that
        only this server and its workers know."""
        self._sharing = ProcessSharing(Path(tempfile.mkdtemp(prefix="modelgate-")), os.urandom(32))
        share_processes(self._sharing)

    def _stop_sharing(self) -> None:
        if self._sharing is not None:
            share_processes(None)
            shutil.rmtree(self._sharing.socket_dir, ignore_errors=True)

    def _endpoints(self) -> PrimaryEndpoints:
        return PrimaryEndpoints(self._sharing.socket_dir, self.http_port, self.grpc_port)

    async def _start_workers(self, http_runner: web.AppRunner | None) -> None:
        """The server's HTTP app on a Unix socket too (where workers send what they do not serve; gRPC's is
        opened with its port), then the workers on the server's ports."""
        endpoints = self._endpoints()
        if http_runner is not None:
            await web.UnixSite(http_runner, endpoints.http_socket).start()
        metrics = WorkerMetrics(BACKEND_METRICS)
        self.workers = FrontendWorkers(self.settings, self.manager, self.stats, metrics, self._sharing.authkey)
        await self.workers.start(self.settings.http_workers - 1, endpoints)

    async def _load_initial_models(self) -> None:
        mode = self.settings.model_control_mode
        if mode == "poll":
            await self.poller.poll_once()
            return
        models, duplicated = self.layout.scan()
        for reason in duplicated.values():
            logger.error("%s", reason)
        if mode == "none" or "*" in self.settings.load_model:
            names = sorted(models)
        else:
            names = list(dict.fromkeys(self.settings.load_model))
        # Models that take what the others leave (an LLM's KV cache) load once the others have.
        last = [name for name in names if sized_last(self.layout, name)]
        await asyncio.gather(*(self._load_logged(name) for name in names if name not in last))
        await asyncio.gather(*(self._load_logged(name) for name in last))

    async def _load_logged(self, name: str) -> None:
        try:
            await self.manager.load(name)
            logger.info("model '%s' loaded", name)
        except ModelgateError as exc:
            logger.error("model '%s' failed to load: %s", name, exc.message)

    async def _serve(
        self, app: web.Application, address: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        # Open connections get at most --exit-timeout-secs to finish at shutdown (aiohttp waits 60 s by default).
        # A client that goes away cancels its handler (aiohttp's default lets it run on): the request is
        # cancelled with it, streaming or not, so nobody's work goes on for a client that left.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.settings.exit_timeout_secs, handler_cancellation=True
        )
        await runner.setup()
        # With frontend workers the port is shared: the kernel spreads connections over the processes.
        reuse_port = self.settings.http_workers > 1 or None
        site = web.TCPSite(runner, address, port, reuse_address=True, reuse_port=reuse_port, ssl_context=ssl_context)
        await site.start()
        self._runners.append(runner)
        return site._server.sockets[0].getsockname()[1]


async def _within(work, seconds: float, what: str) -> bool:
    try:
        await asyncio.wait_for(work, timeout=seconds)
        return True
    except asyncio.TimeoutError:
        logger.warning("%s within --exit-timeout-secs", what)
        return False


async def serve_forever(settings: ServerSettings) -> bool:
    """Run until SIGINT/SIGTERM, then stop within --exit-timeout-secs; whether everything stopped in time."""
    import signal

    return_large_blocks_to_the_os()  # the whole process's choice: so here, not in ModelgateServer (tests embed it)
    server = ModelgateServer(settings)
    await server.start()
    # The server and the models loaded at start live until shutdown: frozen, the full collections that the
    # streams' garbage sets off no longer walk them, on the event loop every stream waits on.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("shutting down (at most %g s)", settings.exit_timeout_secs)
    return await server.stop()
