"""A torch profile of a window of the engine's steps while it serves, for whoever starts the server to find where
a served run's GPU time goes (which kernels, in which kinds of step), not only what one engine benchmark shows.

Off unless the environment of the server (which the engine process inherits) names a folder:

    MODELGATE_ENGINE_PROFILE=/tmp/profiles MODELGATE_ENGINE_PROFILE_STEPS=500:100 modelgate serve ...

profiles the engine's steps 500 to 599 (counted as its `modelgate_llm_engine_steps` metric counts them; default
200:50) and
then writes `engine-<pid>-steps<START>-<END>.txt` there: the ops and kernels by self device time (CUDA kernels on
a GPU, CPU ops otherwise) and the window's steps by kind (decode steps and steps with prompt tokens: their count,
time and tokens, as the engine's step metrics count them). An operator's setting, like the server's other
environment: a request can neither turn it on nor choose the folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PROFILE_DIR = "MODELGATE_ENGINE_PROFILE"
PROFILE_STEPS = "MODELGATE_ENGINE_PROFILE_STEPS"
DEFAULT_STEPS = (200, 50)
TABLE_ROWS = 40


class StepProfiler:
    """Call `before_step()` and `after_step()` around each of the engine's steps."""

    def __init__(self, folder: Path, first_step: int, num_steps: int, step_counts):
        """`step_counts`: the engine's StepCounts, read at the window's ends."""
        if first_step < 0 or num_steps < 1:
            raise ValueError(f"{PROFILE_STEPS} needs START >= 0 and COUNT >= 1, got {first_step}:{num_steps}")
        self.folder = folder
        self.first_step = first_step
        self.num_steps = num_steps
        self._step_counts = step_counts
        self._profile: torch.profiler.profile | None = None
        self._counts_before = None
        self.written: Path | None = None

    @classmethod
    def from_environment(cls, step_counts, environ=os.environ) -> StepProfiler | None:
        """The profiler the environment asks for, or None; ValueError naming the variable for a bad value."""
        folder = environ.get(PROFILE_DIR)
        if not folder:
            return None
        first_step, num_steps = DEFAULT_STEPS
        if steps := environ.get(PROFILE_STEPS):
            start, separator, count = steps.partition(":")
            try:
                first_step, num_steps = int(start), int(count) if separator else num_steps
            except ValueError:
                raise ValueError(f"{PROFILE_STEPS} must be START:COUNT (two integers), got {steps!r}") from None
        return cls(Path(folder), first_step, num_steps, step_counts)

    @property
    def is_done(self) -> bool:
        return self.written is not None

    def before_step(self) -> None:
        if self._profile is None and not self.is_done and self._step_counts.steps >= self.first_step:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._counts_before = self._step_counts.copy()
            self._profile = torch.profiler.profile(activities=activities)
            self._profile.__enter__()

    def after_step(self) -> None:
        if self._profile is not None and self._step_counts.since(self._counts_before).steps >= self.num_steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the window's kernels finish inside it
            profile, self._profile = self._profile, None
            profile.__exit__(None, None, None)
            self._write(profile)

    def _write(self, profile: torch.profiler.profile) -> None:
        first = self._counts_before.steps
        end = self._step_counts.steps
        path = self.folder / f"engine-{os.getpid()}-steps{first}-{end - 1}.txt"
        device_sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        table = profile.key_averages().table(sort_by=device_sort, row_limit=TABLE_ROWS)
        steps = self._step_counts.since(self._counts_before)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(f"engine steps {first} to {end - 1}: {steps}\n\n{table}\n")
        except OSError as exc:  # a profile that cannot be written never stops the engine
            logger.error("could not write the engine profile to %s: %s", path, exc)
            self.written = self.folder
            return
        self.written = path
        logger.info("wrote the profile of engine steps %d to %d to %s", first, end - 1, path)
