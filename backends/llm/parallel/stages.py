"""How a model's decoder layers split over pipeline stages, from its config alone.

Stage s holds a contiguous range of layers; when the layers do not divide evenly the earlier stages take one
more, because the last stage also carries the final norm and the LM head. The first stage holds the token
embedding; the last the final norm and the LM head (and the embedding too when the LM head is tied to it).

A stage's model is the ordinary DecoderForCausalLM built with `local_config` (its layers only, numbered from
0) and told whether it is first and last; `checkpoint_key` maps the weight loader's keys onto it and drops
the tensors of other stages, so that each stage reads only its layers from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from modelgate.backends.llm.models.model_config import DecoderConfig

_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.+)$")


class PipelineParallelError(ValueError):
    """The model cannot be split into this many stages; the message names the field and what is allowed."""


@dataclass(frozen=True)
class StageLayers:
    """Layers [start, end) of a model of config `full` at pipeline stage `stage` of `num_stages`."""

    full: DecoderConfig
    stage: int
    num_stages: int

    @property
    def start(self) -> int:
        return _boundary(self.full.num_layers, self.num_stages, self.stage)

    @property
    def end(self) -> int:
        return _boundary(self.full.num_layers, self.num_stages, self.stage + 1)

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.num_stages - 1

    @property
    def has_embedding(self) -> bool:
        return self.is_first or (self.is_last and self.full.tie_word_embeddings)

    def local_config(self, config: DecoderConfig) -> DecoderConfig:
        """`config` (the whole model's, or a tensor-parallel shard's) with this stage's layers only."""
        return dataclasses.replace(config, num_layers=self.end - self.start)

    def checkpoint_key(self, key: str) -> str | None:
        """The weight loader's key `key` (`layers.<i>.<...>`, `embed_tokens.weight`, `norm.weight`,
        `lm_head_weight`) as this stage's model names it; None: another stage's tensor, not read here."""
        match = _LAYER_KEY.match(key)
        if match is not None:
            layer = int(match.group(1))
            return f"layers.{layer - self.start}.{match.group(2)}" if self.start <= layer < self.end else None
        if key.startswith("embed_tokens."):
            return key if self.has_embedding else None
        if key.startswith("norm.") or key == "lm_head_weight":
            return key if self.is_last else None
        return key  # not a tensor the model has: the loader reports it as such


def _boundary(num_layers: int, num_stages: int, stage: int) -> int:
    """The first layer of `stage` (num_layers for stage == num_stages); earlier stages take the remainder."""
    base, extra = divmod(num_layers, num_stages)
    return stage * base + min(stage, extra)


def check_stages(config: DecoderConfig, num_stages: int) -> None:
    """PipelineParallelError unless every one of `num_stages` stages gets at least one layer."""
    if num_stages > config.num_layers:
        raise PipelineParallelError(
            f"pipeline_parallel_size {num_stages} cannot split this model: it has num_hidden_layers "
            f"{config.num_layers} and every stage needs at least one; allowed: 1 to {config.num_layers}"
        )
