"""The model runner owns the device: the model, the paged KV cache tensors and the sampler.

`execute(scheduler_output)` lays the step's new tokens out back to back, runs the model
once, and samples one token for each request whose step reaches its last known token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from backends.llm.attention.metadata import AttentionMetadata
from backends.llm.attention.torch_paged import TorchPagedAttention
from backends.llm.models.llama import DecoderForCausalLM
from backends.llm.models.model_config import DecoderConfig
from backends.llm.models.weight_loader import load_weights
from backends.llm.sampler import Sampler, SamplerOutput
from backends.llm.scheduler import ScheduledRequest, SchedulerOutput

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class RunnerConfig:
    device: str = "cpu"
    dtype: str = "auto"  # "auto": the checkpoint's dtype on a GPU, float32 on the CPU
    block_size: int = 16
    max_model_len: int = 2048
    num_kv_blocks: int | None = None  # None: from gpu_memory_utilization on a GPU
    gpu_memory_utilization: float = 0.9
    show_progress: bool = True
    # "auto": "triton" (kernels/) on a CUDA device, "torch" (the plain-torch reference) elsewhere.
    # "triton" on the CPU runs the kernels under TRITON_INTERPRET=1 only: that is for tests.
    attention_backend: Literal["auto", "torch", "triton"] = "auto"


def resolve_attention_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if name not in ("torch", "triton"):
        raise ValueError(f"attention_backend '{name}' is not supported; allowed: auto, torch, triton")
    return name


def make_attention(backend: str, model_config: DecoderConfig, device: torch.device):
    """The attention implementation every layer shares; the Triton one is imported only when chosen."""
    c = model_config
    if backend == "triton":
        from backends.llm.attention.triton_paged import TritonPagedAttention

        return TritonPagedAttention(c.num_heads, c.num_kv_heads, c.head_dim, c.sliding_window, device)
    return TorchPagedAttention(c.num_heads, c.num_kv_heads, c.head_dim, c.sliding_window)


def resolve_dtype(name: str, checkpoint_dtype: str, device: str) -> torch.dtype:
    if name == "auto":
        if device == "cpu":
            return torch.float32
        return _DTYPES.get(checkpoint_dtype, torch.bfloat16)
    if name not in _DTYPES:
        raise ValueError(f"dtype '{name}' is not supported; allowed: auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


class ModelRunner:
    def __init__(self, model_dir: Path, model_config: DecoderConfig, config: RunnerConfig):
        self.config = config
        self.model_config = model_config
        self.device = torch.device(config.device)
        self.dtype = resolve_dtype(config.dtype, model_config.torch_dtype, config.device)
        self.block_size = config.block_size
        self.attention_backend = resolve_attention_backend(config.attention_backend, self.device)
        attention = make_attention(self.attention_backend, model_config, self.device)
        with torch.device(self.device):
            self.model = DecoderForCausalLM(model_config, attention, self.dtype, config.max_model_len)
        load_weights(self.model, model_dir, show_progress=config.show_progress)
        self.model.eval()
        self.num_kv_blocks = config.num_kv_blocks or self._blocks_that_fit()
        shape = (2, self.num_kv_blocks, self.block_size, model_config.num_kv_heads, model_config.head_dim)
        self.kv_caches = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(model_config.num_layers)]
        self.sampler = Sampler()

    @property
    def kv_bytes_per_block(self) -> int:
        c = self.model_config
        return 2 * c.num_layers * self.block_size * c.num_kv_heads * c.head_dim * torch.finfo(self.dtype).bits // 8

    @torch.inference_mode()
    def execute(self, output: SchedulerOutput) -> SamplerOutput:
        inputs = self._prepare(output.scheduled)
        hidden = self.model(inputs.token_ids, inputs.positions, self.kv_caches, inputs.metadata)
        if not inputs.sample_rows:
            return SamplerOutput({}, {})
        logits = self.model.compute_logits(hidden[inputs.sample_rows])
        sampled = [item.request for item in output.scheduled if item.samples]
        return self.sampler.sample(logits, sampled)

    def _prepare(self, scheduled: list[ScheduledRequest]) -> "_StepInputs":
        token_ids, positions, slots, query_start, context_lens, sample_rows = [], [], [], [0], [], []
        block_size = self.block_size
        for item in scheduled:
            start, end = item.num_computed_tokens, item.num_computed_tokens + item.num_new_tokens
            token_ids.extend(_token_slice(item.request, start, end))
            positions.extend(range(start, end))
            slots.extend(item.block_ids[p // block_size] * block_size + p % block_size for p in range(start, end))
            query_start.append(len(token_ids))
            context_lens.append(end)
            if item.samples:
                sample_rows.append(len(token_ids) - 1)
        width = max(len(item.block_ids) for item in scheduled)
        tables = [item.block_ids + [0] * (width - len(item.block_ids)) for item in scheduled]
        device = self.device
        metadata = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
            query_start=torch.tensor(query_start, dtype=torch.int32, device=device),
            context_lens=torch.tensor(context_lens, dtype=torch.int32, device=device),
            block_tables=torch.tensor(tables, dtype=torch.int32, device=device),
            query_start_cpu=query_start,
            context_lens_cpu=context_lens,
            max_context_len=max(context_lens),
            is_decode_only=all(item.num_new_tokens == 1 for item in scheduled),
        )
        return _StepInputs(
            torch.tensor(token_ids, dtype=torch.long, device=device),
            torch.tensor(positions, dtype=torch.long, device=device),
            metadata,
            sample_rows,
        )

    def _blocks_that_fit(self) -> int:
        if self.device.type != "cuda":
            raise ValueError("on the CPU, num_kv_blocks (a KV token budget) must be configured")
        free, total = torch.cuda.mem_get_info(self.device)
        budget = free - (1 - self.config.gpu_memory_utilization) * total
        blocks = int(budget // self.kv_bytes_per_block)
        if blocks < 1:
            raise ValueError("no GPU memory left for the KV cache; raise gpu_memory_utilization")
        logger.info("KV cache: %d blocks of %d tokens (%.1f GiB)", blocks, self.block_size,
                    blocks * self.kv_bytes_per_block / 2**30)
        return blocks


@dataclass
class _StepInputs:
    token_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    metadata: AttentionMetadata
    sample_rows: list[int]


def _token_slice(request, start: int, end: int) -> list[int]:
    """Tokens [start, end) of prompt + output without building the whole list for a decode."""
    num_prompt = request.num_prompt_tokens
    if start >= num_prompt:
        return request.output_token_ids[start - num_prompt : end - num_prompt]
    if end <= num_prompt:
        return request.prompt_token_ids[start:end]
    return request.prompt_token_ids[start:] + request.output_token_ids[: end - num_prompt]
