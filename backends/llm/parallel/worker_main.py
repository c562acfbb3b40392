"""A worker process (rank 1..N-1): its shard of its pipeline stage's part of the model, running rank 0's steps.

It builds the same ModelRunner as rank 0 (rank 0's RunnerConfig, its own device, its shard and stage),
then loops: receive the step rank 0 broadcasts, run `forward_step` on it (the collectives inside meet rank
0's), until rank 0 says stop. It samples nothing and keeps no scheduler: block tables come with each step.

It never outlives rank 0: a thread blocks on the pipe from rank 0, which only ever closes (rank 0 sends
nothing on it), and ends this process the moment it does, even in the middle of a collective. A load error
goes up that pipe before the process exits, for rank 0 to report.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path


def worker_main(
    rank: int,
    layout,  # ParallelLayout
    store_port: int,
    model_dir: str,
    settings,  # RunnerConfig: rank 0's, with this rank's device
    parent: Connection,
) -> None:
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s engine rank {rank}: %(message)s")
    threading.Thread(target=_exit_with_parent, args=(parent,), name="llm-tp-parent", daemon=True).start()
    try:
        tp, runner = _start(rank, layout, store_port, Path(model_dir), settings)
    except Exception as exc:
        logging.getLogger(__name__).error("rank %d failed to start:\n%s", rank, traceback.format_exc())
        parent.send(f"{type(exc).__name__}: {exc}")
        os._exit(1)
    _serve(tp, runner)


def _start(rank: int, layout, store_port: int, model_dir: Path, settings):
    import torch

    from modelgate.backends.llm.model_runner import ModelRunner
    from modelgate.backends.llm.models.model_config import DecoderConfig
    from modelgate.backends.llm.parallel import state
    from modelgate.backends.llm.parallel.state import STORE_HOST

    if settings.device == "cpu":  # the ranks share the host's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // layout.world_size))
    tp = state.initialize(rank, layout, STORE_HOST, store_port, torch.device(settings.device))
    model_config = DecoderConfig.from_file(model_dir / "config.json")
    return tp, ModelRunner(model_dir, model_config, settings)


def _serve(tp, runner) -> None:
    from modelgate.backends.llm.parallel import state
    from modelgate.backends.llm.parallel.step_channel import receive_step

    while (scheduled := receive_step(tp)) is not None:
        runner.forward_step(scheduled)
    state.shutdown()
    logging.shutdown()
    os._exit(0)  # nothing left to save: skip the interpreter's teardown of torch (seconds, for nothing)


def _exit_with_parent(parent: Connection) -> None:
    try:
        parent.recv()
    except (EOFError, OSError):
        pass
    os._exit(0)
