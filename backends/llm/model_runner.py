"""The model runner owns the device: the model, the paged KV cache tensors and the sampler.

`execute(scheduler_output)` lays the step's new tokens out back to back, runs the model
once, and samples one token for each request whose step reaches its last known token.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from modelgate.backends.llm.dummy_step import run_dummy_step
from modelgate.backends.llm.memory_budget import BudgetMeter, kv_blocks
from modelgate.backends.llm.models.llama import DecoderForCausalLM
from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.models.weight_loader import checkpoint_has_fp8_weights, load_weights
from modelgate.backends.llm.parallel.runner_hooks import RankShard
from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.runner_config import (
    RunnerConfig,
    check_quantization,
    make_attention,
    resolve_attention_backend,
    resolve_dtype,
)
from modelgate.backends.llm.sampler import PendingSample, Sampler, SamplerOutput
from modelgate.backends.llm.scheduler import ScheduledRequest, SchedulerOutput
from modelgate.backends.llm.step_graphs import StepGraphs, buffer_bytes
from modelgate.backends.llm.step_layout import StepInputs, StepLayout, decode_rows, is_decode_step, to_device

logger = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, model_dir: Path, model_config: DecoderConfig, config: RunnerConfig):
        self.config = config
        # Tensor and pipeline parallelism: this rank's part of the model (parallel/); in one process, all of it
        # and no-ops.
        self.shard = RankShard.of_this_process(model_config)
        self.pipeline = self.shard.pipeline  # None without pipeline stages
        self.model_config = model_config = self.shard.model_config
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and self.device.index is not None:
            # The engine process serves this one device: Triton launches its kernels on the current device and
            # CUDA graphs capture on its stream, so an engine placed on cuda:k makes cuda:k current.
            torch.cuda.set_device(self.device)
        self.budget = BudgetMeter(self.device)  # before anything reaches the GPU
        self.dtype = resolve_dtype(config.dtype, model_config.torch_dtype, config.device)
        self.block_size = config.block_size
        self.attention_backend = resolve_attention_backend(config.attention_backend, self.device)
        check_quantization(config, self.attention_backend)
        self.kv_cache_dtype = torch.float8_e4m3fn if config.kv_cache_dtype == "fp8" else self.dtype
        self.attention = attention = make_attention(
            self.attention_backend, model_config, self.device, config.cudnn_prefill_attention
        )
        with torch.device(self.device):
            self.model = DecoderForCausalLM(
                model_config, attention, self.dtype, config.max_model_len, **self.shard.model_options
            )
        self.quantization = self._load(model_dir)
        self.shard.parallelize(self.model)
        self.model.eval()
        self.num_kv_blocks = config.num_kv_blocks or self.shard.min_over_ranks(self._blocks_that_fit())
        self.kv_caches, self.kv_scales = self._allocate_kv_caches()
        self.sampler = Sampler()
        self.decode_graphs = None
        self.step_graphs = None
        self._graph_pool = None  # one CUDA graph memory pool for every capture (made with the first)
        self.warm_up()
        if self.device.type == "cuda" and self.attention_backend == "triton":
            if config.cuda_graph_batch_sizes:
                self.use_decode_graphs(list(config.cuda_graph_batch_sizes))
            if config.cuda_graph_token_counts:
                self.use_step_graphs(list(config.cuda_graph_token_counts))

    def use_decode_graphs(self, batch_sizes: list[int], replay: bool = True) -> None:
        """Run decode steps of up to max(batch_sizes) sequences through DecodeGraphs (captured now when replay).

        replay=False runs the graphs' padded static-buffer path eagerly (for tests on the CPU).
        """
        from modelgate.backends.llm.cuda_graphs import DecodeGraphs
        from modelgate.kernels.paged_decode_attention import default_decode_config, num_sms, plan_decode_split

        if self.attention_backend != "triton":
            raise ValueError("decode CUDA graphs need attention_backend 'triton'")
        _check_no_pipeline(self.pipeline)
        c = self.model_config
        sms = num_sms(self.device)

        def decode_split_for(batch_size: int):
            # The tile width the kernel will pick for this batch (paged_decode_attention's default config).
            block_n = default_decode_config(c.head_dim, batch_size * c.num_kv_heads, sms).block_n
            return plan_decode_split(batch_size, c.num_kv_heads, self.config.max_model_len, block_n, sms)

        graphs = DecodeGraphs(
            self.model,
            self.kv_caches,
            self.kv_scales,
            batch_sizes=batch_sizes,
            max_model_len=self.config.max_model_len,
            block_size=self.block_size,
            decode_split_for=decode_split_for,
            device=self.device,
            replay=replay,
            pool=self._shared_graph_pool() if replay else None,
        )
        graphs.capture()
        self.decode_graphs = graphs

    def use_step_graphs(self, token_counts: list[int], replay: bool = True) -> None:
        """Run the steps that are not decodes (or exceed the decode graphs), of up to max(token_counts) tokens,
        through StepGraphs: piecewise graphs around an eager attention (captured now when replay).

        replay=False runs the pieces' padded static-buffer path eagerly (for tests on the CPU).
        """
        if self.attention_backend != "triton":
            raise ValueError("piecewise step graphs need attention_backend 'triton'")
        _check_no_pipeline(self.pipeline)
        graphs = StepGraphs(
            self.model,
            self.kv_caches,
            self.kv_scales,
            token_counts=token_counts,
            device=self.device,
            replay=replay,
            pool=self._shared_graph_pool() if replay else None,
        )
        graphs.capture()
        self.step_graphs = graphs

    def _shared_graph_pool(self):
        """The pool every capture shares: graphs replay one at a time on one stream, and what a capture leaves
        alive (its outputs) is never handed to another, so their working memory can overlap."""
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        return self._graph_pool

    def _load(self, model_dir: Path) -> str:
        """Load the weights; with FP8 the attention/MLP linears become Fp8Linear. Returns the quantization."""
        # Imported here: kernels/ is imported only when FP8 is used (and after tests set TRITON_INTERPRET).
        from modelgate.backends.llm.layers.fp8_linear import quantize_linears, use_empty_fp8_linears

        if checkpoint_has_fp8_weights(model_dir):
            logger.info("FP8 checkpoint: its weights and weight scales load as they are")
            use_empty_fp8_linears(self.model)
            load_weights(self.model, model_dir, self.config.show_progress, *self._weight_selection)
            return "fp8"
        load_weights(self.model, model_dir, self.config.show_progress, *self._weight_selection)
        if self.config.quantization == "fp8":
            quantize_linears(self.model)
        return self.config.quantization

    @property
    def _weight_selection(self) -> tuple:
        """load_weights' checkpoint_slice and checkpoint_key: this rank's slices of this stage's tensors."""
        return self.shard.checkpoint_slice, self.shard.checkpoint_key

    def _allocate_kv_caches(self) -> tuple[list[torch.Tensor], list[torch.Tensor | None] | None]:
        """One zeroed cache per layer, and for an FP8 cache one scales tensor per layer (else None)."""
        from modelgate.kernels.reshape_and_cache import allocate_kv_cache

        c = self.model_config
        caches, scales = [], []
        for _ in range(c.num_layers):
            cache, layer_scales = allocate_kv_cache(
                self.num_kv_blocks, self.block_size, c.num_kv_heads, c.head_dim, self.kv_cache_dtype, self.device
            )
            # Zeroed, not empty: unwritten FP8 bytes may be NaN patterns that masked-out lanes still multiply.
            caches.append(cache.zero_())
            scales.append(None if layer_scales is None else layer_scales.fill_(1.0))
        return caches, (scales if self.kv_cache_dtype == torch.float8_e4m3fn else None)

    @property
    def kv_bytes_per_block(self) -> int:
        c = self.model_config
        element_bytes = torch.finfo(self.kv_cache_dtype).bits // 8
        scale_bytes = 4 if self.kv_cache_dtype == torch.float8_e4m3fn else 0  # one fp32 per (token, KV head)
        return 2 * c.num_layers * self.block_size * c.num_kv_heads * (c.head_dim * element_bytes + scale_bytes)

    def execute(self, output: SchedulerOutput) -> SamplerOutput:
        """Run the step and sample: the tokens on the host."""
        return self.launch(output).result()

    @torch.inference_mode()
    def launch(self, output: SchedulerOutput) -> PendingSample:
        """Queue the step's GPU work and sampling; the tokens may still be on their way (PendingSample.result)."""
        scheduled = output.scheduled
        self.shard.send_step(scheduled)  # tensor parallelism: the other ranks run forward_step too
        logits = self.forward_step(scheduled)
        if logits is None:
            return PendingSample(SamplerOutput({}, {}))
        return self.sampler.sample_async(logits, [item.request for item in scheduled if item.samples])

    @torch.inference_mode()
    def forward_step(self, scheduled: list[ScheduledRequest]) -> torch.Tensor | None:
        """The step's forward: float32 logits of its sampled rows [num_sampled, vocab], None when it samples
        none. Every tensor-parallel rank runs this on the same step (parallel/worker_main.py); with pipeline
        stages, each its stage's part (parallel/pipeline_step.py), and only rank 0 gets the logits."""
        if self.pipeline is not None:
            from modelgate.backends.llm.parallel.pipeline_step import forward_step

            return forward_step(self, self.pipeline, scheduled)
        graphs = self.decode_graphs
        if graphs is not None and graphs.supports(len(scheduled)) and is_decode_step(scheduled):
            logits = graphs.run(decode_rows(scheduled, self.block_size))
            sample_rows = [row for row, item in enumerate(scheduled) if item.samples]
            if not sample_rows:
                return None
            if len(sample_rows) < len(scheduled):
                logits = logits.index_select(0, to_device(sample_rows, torch.long, self.device))
            return logits
        return self._forward_layout(StepLayout.of(scheduled, self.block_size))

    def _forward_layout(self, layout: StepLayout, device_tokens: torch.Tensor | None = None) -> torch.Tensor | None:
        """forward_step's way for steps other than the decode graphs': the piecewise step graphs or the eager
        model. device_tokens: the input tokens of layout.device_token_rows, on the device (a step launched
        ahead), written over their placeholders before the forward reads them."""
        fill = None
        if device_tokens is not None:
            fill = (to_device(layout.device_token_rows, torch.long, self.device), device_tokens)
        step_graphs = self.step_graphs
        if step_graphs is not None and step_graphs.supports(layout.num_tokens):
            metadata = layout.metadata(step_graphs.slot_mapping[: layout.num_tokens], self.device)
            hidden = step_graphs.run(layout.token_ids, layout.positions, layout.slots, metadata, fill)
        else:
            inputs = StepInputs.of(layout, self.device)
            if fill is not None:
                inputs.token_ids.index_copy_(0, *fill)
            hidden = self.model(inputs.token_ids, inputs.positions, self.kv_caches, inputs.metadata, self.kv_scales)
        if not layout.sample_rows:
            return None
        return self.model.compute_logits(hidden.index_select(0, layout.sample_index(self.device)))

    def can_launch_ahead(self, previous: SchedulerOutput, pending: PendingSample) -> bool:
        """Whether the decode step after `previous` can be queued before previous's tokens reach the host:
        they are on the device in previous's row order (every sampled row of previous), and the step fits the
        decode graphs. The sampler needs nothing from the host that the step ahead does not have yet: it
        chooses every token on the device, penalties and min_tokens counting previous's tokens there."""
        graphs, tokens = self.decode_graphs, pending.device_tokens
        if graphs is None or tokens is None or tokens.shape[0] != len(previous.scheduled):
            return False
        return graphs.supports(len(previous.scheduled))

    def admits_ahead(self, request: LLMRequest) -> bool:
        """Whether a waiting request may join a step launched ahead (Scheduler.schedule_ahead's `admits`): its
        prompt is on the host and its token is chosen on the device, as every token is; not with pipeline
        stages, whose steps run eagerly."""
        return self.pipeline is None

    @torch.inference_mode()
    def launch_ahead(self, output: SchedulerOutput, previous: SchedulerOutput, pending: PendingSample) -> PendingSample:
        """Queue `output` (Scheduler.schedule_ahead of previous; can_launch_ahead said yes) behind previous: the
        tokens of its decodes are previous's sampled ones, read on the device; requests admitted behind them
        bring their prompts from the host. Returns its own pending tokens."""
        scheduled = output.scheduled
        tokens = pending.device_tokens
        row_of = {id(item.request): row for row, item in enumerate(previous.scheduled)}
        decodes = [item for item in scheduled if item.token_on_device]
        rows = [row_of[id(item.request)] for item in decodes]
        if rows != list(range(len(previous.scheduled))):  # some requests finish with previous: their rows go
            index = torch.tensor(rows, dtype=torch.long, pin_memory=tokens.is_cuda)
            tokens = tokens.index_select(0, index.to(tokens.device, non_blocking=True))
        if len(decodes) == len(scheduled):
            logits = self.decode_graphs.run(decode_rows(scheduled, self.block_size, known_tokens=False), tokens)
        else:
            logits = self._forward_layout(StepLayout.of(scheduled, self.block_size), tokens)
            if logits is None:  # only prompt chunks that sample nothing (a decode row always samples)
                return PendingSample(SamplerOutput({}, {}))
        sampled = [item for item in scheduled if item.samples]
        # A decode's input token is previous's, still on the device: it already counts for min_tokens.
        outputs_before = [item.request.num_output_tokens + item.token_on_device for item in sampled]
        return self.sampler.sample_async(logits, [item.request for item in sampled], outputs_before)

    def _prepare(self, scheduled: list[ScheduledRequest]) -> StepInputs:
        """The step's inputs as the eager forward takes them (tensors on the device)."""
        return StepInputs.of(StepLayout.of(scheduled, self.block_size), self.device)

    def _blocks_that_fit(self) -> int:
        """KV blocks that fit in the engine's memory budget (or gpu_memory_utilization of the GPU), after the
        weights, the activations' peak of the largest step and the CUDA graphs' memory (a decode step at the
        largest graph batch size)."""
        if self.device.type != "cuda":
            raise ValueError("on the CPU, num_kv_blocks (a KV token budget) must be configured")
        free = self.budget.free_for_kv(self.config.memory_budget_bytes, self.config.gpu_memory_utilization)
        step_peak = self._activation_peak_bytes(self.config.max_num_batched_tokens, self.config.max_num_seqs)
        graph_sizes, token_counts = self.config.cuda_graph_batch_sizes, self.config.cuda_graph_token_counts
        # The graphs share one pool (_shared_graph_pool): it grows to the larger of their peaks.
        decode_peak = self._activation_peak_bytes(max(graph_sizes), max(graph_sizes)) if graph_sizes else 0
        pieces_peak = 0
        if token_counts:
            largest = max(token_counts)
            pieces_peak = self._activation_peak_bytes(largest, 1) + buffer_bytes(self.model_config, self.dtype, largest)
        graphs_peak = max(decode_peak, pieces_peak)
        return kv_blocks(free, step_peak, graphs_peak, self.kv_bytes_per_block, self.block_size)

    @torch.inference_mode()
    def _activation_peak_bytes(self, num_tokens: int, num_sampled: int) -> int:
        """Peak bytes a step of num_tokens tokens (one sequence) allocates beyond the weights, logits of
        num_sampled rows included (dummy_step.py)."""
        device = self.device
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run_dummy_step(self, num_tokens, num_sampled)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        torch.cuda.empty_cache()
        return peak

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Compile the Triton kernels for the shapes eager steps take (token counts of 1, multiples of 16 and
        others, in every M bucket of the FP8 GEMM's tile table; one fresh prefill, and decodes before a fresh
        prefill as in a mixed step) now, so that no request waits on the JIT. Triton keeps what it compiles on
        disk: a later start only loads it."""
        if self.device.type != "cuda":
            return
        started = time.perf_counter()
        largest, max_seqs = self.config.max_num_batched_tokens, self.config.max_num_seqs
        counts = {1, 2, 16, 17, 32, 33, 64, 65, 256, 257, 4096, 4097, largest - 1, largest}
        for count in sorted(c for c in counts if 0 < c <= largest):
            run_dummy_step(self, count, min(count, max_seqs))
            num_decodes = min(count - 1, max_seqs - 1, 3)
            if num_decodes > 0:
                run_dummy_step(self, count, num_decodes + 1, num_decodes)
        # The dense attention of long fresh prefills (attention/fresh_prefill.py): its graphs, one per padded length.
        torch.cuda.synchronize(self.device)
        steps_done = time.perf_counter()
        warm_dense = getattr(self.attention, "warm_up_fresh_prefills", None)
        dense_lengths = (
            0 if warm_dense is None else warm_dense(min(largest, self.config.max_model_len), self.dtype, self.device)
        )
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        finished = time.perf_counter()
        logger.info(
            "warmed up eager step shapes in %.1f s (and %d dense attention lengths in %.1f s)",
            steps_done - started,
            dense_lengths,
            finished - steps_done,
        )


def _check_no_pipeline(pipeline) -> None:
    """CUDA graphs replay a whole forward on one device; a pipeline stage's forward waits on its neighbours'
    point-to-point transfers between micro-batches, which these graphs do not capture (the engine turns them
    off with pipeline_parallel_size > 1, engine.py)."""
    if pipeline is not None:
        raise ValueError("CUDA graphs are not supported with pipeline_parallel_size > 1")
