"""A repository's plan: its packing onto GPUs, each GPU-placed LLM's fit, and every problem in one list."""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.clients.size.llm_fit import LlmFit, LlmSettingsError, fit_llm
from modelgate.clients.size.packing import Packing
from modelgate.clients.size.repository_models import ModelVersion
from modelgate.core.memory_rules import LLM_BACKEND


@dataclass(frozen=True)
class RepositoryPlan:
    models: list[ModelVersion]
    packing: Packing
    llms: list[LlmFit]
    problems: list[str]  # every refusal, then every LLM that does not work at this isl/osl; empty: all fits
    isl: int
    osl: int
    overhead_bytes: int


def plan_repository(models: list[ModelVersion], packing: Packing, isl: int, osl: int, overhead_bytes: int = 0):
    """The LLMs' fits beside the packing (LLMs on the CPU size their cache by num_kv_blocks: not carved from a GPU)."""
    problems = [refusal.message for refusal in packing.refusals]
    fits: list[LlmFit] = []
    for model in models:
        if model.backend != LLM_BACKEND or model.error is not None:
            continue
        for placement in packing.placements_of(model.name, model.version):
            if placement.kind != "GPU":
                continue
            who = f"model '{model.name}' version {model.version} ({placement.instance}) on {placement.device}"
            try:
                fit = fit_llm(placement, model.config, model.version_dir, isl, osl, overhead_bytes)
            except LlmSettingsError as exc:
                problems.append(f"{who}: {exc}")
                continue
            fits.append(fit)
            if fit.problem is not None:
                problems.append(f"{who}: {fit.problem} ({placement.source})")
    return RepositoryPlan(models, packing, fits, problems, isl, osl, overhead_bytes)
