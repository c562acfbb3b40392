"""How the kernel schedules a stub process: the `stub_scheduling` model parameter.

- `batch` (the default): Linux's SCHED_BATCH. A request that arrives does not preempt the server at once to run
  the stub; the stub runs when the server waits or its time slice ends, and then takes every request that arrived
  meanwhile in one go. Where the server and the stub share a busy core this saves two process switches per request
  (`add_sub` over HTTP at concurrency 16, both on one core of a 2-core VM: 3,445 req/s and 5.9k switches/s as
  `normal`, 4,169 req/s and 1.1k switches/s as `batch`). On an idle core the stub runs at once either way.
- `normal`: the default policy of the server's processes, for a model that must run the moment a request
  comes even on a saturated machine.

The policy applies to the stub's threads, those the model starts included (threads inherit it).
"""

from __future__ import annotations

import logging
import os

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError

logger = logging.getLogger(__name__)

POLICIES = ("batch", "normal")
PARAMETER = "stub_scheduling"


def stub_scheduling(config: ModelConfig, source: str) -> str:
    """The policy the model's config asks for; ConfigError for another value."""
    parameter = config.parameters.get(PARAMETER)
    value = "batch" if parameter is None else parameter.string_value
    if value not in POLICIES:
        raise ConfigError(
            source, f"parameters.{PARAMETER}", f"'{value}' is not allowed; allowed: {', '.join(POLICIES)}"
        )
    return value


def apply_to_this_thread(policy: str) -> None:
    """Called by the stub's main thread before it starts any other. Where the system has no SCHED_BATCH or
    refuses it, the stub keeps the normal policy (said in the log): it only runs a little less efficiently."""
    if policy != "batch":
        return
    if not hasattr(os, "SCHED_BATCH"):
        logger.info("this system has no SCHED_BATCH: the stub keeps the normal scheduling policy")
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        logger.warning("could not set SCHED_BATCH (%s): the stub keeps the normal scheduling policy", exc)
