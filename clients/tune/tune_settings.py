"""Settings of `modelgate tune`: the model, the traffic, the targets, the search and its budget."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from modelgate.clients.bench.llm_settings import LengthSettings, LoadSettings
from modelgate.clients.tune.choose import Targets


class TuneSettings(BaseModel):
    """`search`: grid axes, name -> values; `candidates`: explicit points, name -> value; both empty: the
    default space (search_space.py). `device`: cpu or cuda:N, where the candidates' instances go; None: where
    the model's config puts them. `time_budget_s` bounds this invocation (0: measure nothing, choose from the
    log); the coarse phase stops at (1 - `refine_share`) of it when there is something to refine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: Path
    model_version: str | None = None  # the version folder served; None: the highest numbered
    output_dir: Path
    lengths: LengthSettings
    load: LoadSettings
    targets: Targets = Targets()
    search: dict[str, list[str]] = Field(default_factory=dict)
    candidates: list[dict[str, str]] = Field(default_factory=list)
    device: str | None = Field(None, pattern=r"^(cpu|cuda:\d+)$")
    time_budget_s: float = Field(600.0, ge=0.0)
    refine_rounds: int = Field(2, ge=0)
    refine_share: float = Field(0.3, ge=0.0, lt=1.0)
    server_start_timeout_s: float = Field(900.0, gt=0.0)
    plots: bool = True
