"""Rank 0's side of tensor and pipeline parallelism: start the worker processes (ranks 1..N-1, N = tp × pp,
laid out as layout.py says), watch them, stop them.

The engine process is rank 0. It checks that the model splits, opens the TCPStore the ranks meet at, spawns
one worker per other rank (multiprocessing "spawn": a fresh interpreter, never a fork of this one), and
joins the process group with them.

A rank that dies (exit, signal, OOM killer) takes the whole engine down, the way a crashed single-process
engine goes: a thread waiting on the workers' process sentinels kills the other workers and ends this
process with RANK_FAILED_EXIT_CODE, whose closed pipe the server's supervisor sees (engine_supervisor.py:
the model's in-flight requests fail naming the model, the model is UNAVAILABLE, then the engine, with all
its ranks, starts again). Watching processes rather than relying on collective timeouts means no wait: a
rank dead in the middle of an NCCL all-reduce would otherwise hold the others until the timeout.
Workers watch this process in turn (worker_main.py), so none outlives it.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import wait
from pathlib import Path

import torch

from modelgate.backends.llm import parallel
from modelgate.backends.llm.model_runner import RunnerConfig
from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.parallel import RANK_FAILED_EXIT_CODE, state
from modelgate.backends.llm.parallel.layout import ParallelLayout
from modelgate.backends.llm.parallel.sharding import check_splittable
from modelgate.backends.llm.parallel.stages import check_stages
from modelgate.backends.llm.parallel.state import STORE_HOST

logger = logging.getLogger(__name__)

STOP_WAIT_S = 10.0


def rank_device(device: str, rank: int) -> str:
    """Rank r's device: cuda:<index + r> from "cuda"/"cuda:<index>" ("auto" resolved before), or the CPU."""
    if not device.startswith("cuda"):
        return device
    _, _, index = device.partition(":")
    return f"cuda:{int(index or 0) + rank}"


def start_workers(
    model_dir: Path, layout: ParallelLayout, model_config: DecoderConfig, settings: RunnerConfig
) -> tuple[WorkerGroup, RunnerConfig]:
    """Start ranks 1..N-1 and join the group as rank 0; returns the group and rank 0's runner settings.

    Every rank's runner gets `settings` with its own device. TensorParallelError (a load error) when the model
    does not split over tensor_parallel_size ranks, or the machine has fewer GPUs than ranks;
    PipelineParallelError when it has fewer layers than pipeline_parallel_size."""
    check_splittable(model_config, layout.tensor_parallel_size)
    check_stages(model_config, layout.pipeline_parallel_size)
    world_size = layout.world_size
    device = settings.device
    _check_devices(device, layout)
    # NVLink multicast (NVLS) stays off: the machines this runs on require it. Spawned workers inherit it.
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    store = torch.distributed.TCPStore(
        STORE_HOST, 0, world_size, is_master=True, timeout=state.DEVICE_TIMEOUT, wait_for_workers=False
    )
    group = WorkerGroup(model_dir, layout, settings, store.port)
    try:
        state.initialize(0, layout, STORE_HOST, store.port, torch.device(rank_device(device, 0)), store=store)
    except Exception:
        group.stop()
        raise
    return group, dataclasses.replace(settings, device=rank_device(device, 0))


def _check_devices(device: str, layout: ParallelLayout) -> None:
    from modelgate.backends.llm.parallel.sharding import TensorParallelError

    if device.startswith("cuda"):
        last = int(rank_device(device, layout.world_size - 1).partition(":")[2])
        if last >= torch.cuda.device_count():
            raise TensorParallelError(
                f"tensor_parallel_size {layout.tensor_parallel_size} × pipeline_parallel_size "
                f"{layout.pipeline_parallel_size} on {device} needs cuda:{last}; this machine has "
                f"{torch.cuda.device_count()} GPUs"
            )


class WorkerGroup:
    """The worker processes of ranks 1..N-1, and the thread that ends this process when one dies."""

    def __init__(self, model_dir: Path, layout: ParallelLayout, settings: RunnerConfig, store_port: int):
        from modelgate.backends.llm.parallel.worker_main import worker_main

        context = multiprocessing.get_context("spawn")
        # The engine process is started daemonic (the server kills it on exit), and multiprocessing refuses
        # children to daemonic processes lest they be orphaned. These children cannot be: each watches this
        # process and exits when it goes (worker_main.py), and this one kills them when they must stop.
        multiprocessing.current_process().daemon = False
        self._closing = False
        self._name = _parallelism(layout)
        self.processes, self._pipes = [], []
        for rank in range(1, layout.world_size):
            ours, theirs = context.Pipe()
            rank_settings = dataclasses.replace(settings, device=rank_device(settings.device, rank))
            process = context.Process(
                target=worker_main,
                args=(rank, layout, store_port, str(model_dir), rank_settings, theirs),
                name=f"modelgate-llm-tp-rank{rank}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.processes.append(process)
            self._pipes.append(ours)
        self._watcher = threading.Thread(target=self._watch, name="llm-tp-watcher", daemon=True)
        self._watcher.start()
        atexit.register(self.stop)

    def fail(self, reason: str) -> None:
        """End the engine process now, taking the workers with it (the server sees it exit)."""
        logger.error("%s: %s; stopping the engine and its %d workers", self._name, reason, len(self.processes))
        self._closing = True
        report = parallel.report_start_failure
        if report is not None:  # still loading: the load fails with this reason
            _quietly(report, f"{self._name}: {reason}")
        for process in self.processes:
            if process.is_alive():
                process.kill()
        logging.shutdown()
        os._exit(RANK_FAILED_EXIT_CODE)

    def stop(self) -> None:
        """Tell the workers to stop (a stop step), kill those still there after STOP_WAIT_S."""
        if self._closing:
            return
        self._closing = True
        tp = state.current()
        if tp is not None:
            from modelgate.backends.llm.parallel.step_channel import send_stop

            # On a thread: a broadcast to a worker that is gone may wait; the joins below bound it.
            sender = threading.Thread(target=_quietly, args=(send_stop, tp), daemon=True)
            sender.start()
        for process in self.processes:
            process.join(STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join(STOP_WAIT_S)
        if tp is not None:
            sender.join(STOP_WAIT_S)
            if not sender.is_alive():  # else the group is stuck in it: leave it to the process's end
                state.shutdown()

    def _watch(self) -> None:
        ended = wait([process.sentinel for process in self.processes])
        if self._closing:
            return
        dead = [(rank, p) for rank, p in enumerate(self.processes, start=1) if p.sentinel in ended]
        for _, process in dead:
            process.join(1.0)  # reaped, so that its exit code can be told
        self.fail("; ".join(f"rank {rank} exited ({_how(p.exitcode)}){self._said(rank)}" for rank, p in dead))

    def _said(self, rank: int) -> str:
        """What the worker of `rank` sent before it died (its load error), if anything."""
        pipe = self._pipes[rank - 1]
        try:
            return f": {pipe.recv()}" if pipe.poll() else ""
        except (EOFError, OSError):
            return ""


def _parallelism(layout: ParallelLayout) -> str:
    """What the ranks are, for the messages that name a dead one."""
    if layout.pipeline_parallel_size == 1:
        return "tensor parallelism"
    if layout.tensor_parallel_size == 1:
        return "pipeline parallelism"
    return "tensor and pipeline parallelism"


def _how(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        return f"killed by signal {-exit_code}"
    return f"exit code {exit_code}"


def _quietly(function, *args) -> None:
    try:
        function(*args)
    except Exception:  # the workers are being stopped anyway
        pass
