"""The engine: scheduler + model runner + output processing, one `step()` at a time.

Single-threaded; the engine process drives it in a busy loop. The GPU work is queued asynchronously: a step's
output processing runs while it computes (overlap_output_processing), and a decode step can be launched before
the previous step's tokens are on the host (launch_decode_ahead, see step()).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import EngineStats, RequestOutput
from modelgate.backends.llm.kv_cache_manager import KVCacheManager
from modelgate.backends.llm.model_runner import ModelRunner, RunnerConfig
from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.output_processor import OutputProcessor
from modelgate.backends.llm.parallel.layout import ParallelLayout
from modelgate.backends.llm.request import LLMRequest, RequestStatus
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import Scheduler, SchedulerConfig
from modelgate.backends.llm.step_counts import StepCounts
from modelgate.backends.llm.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def runner_config(config: EngineConfig, max_model_len: int, device: str) -> RunnerConfig:
    """The model runner's settings; every tensor-parallel rank builds its runner from the same ones."""
    batched = config.max_num_batched_tokens or max(2048, max_model_len)
    return RunnerConfig(
        device=device,
        dtype=config.dtype,
        block_size=config.block_size,
        max_model_len=max_model_len,
        num_kv_blocks=config.num_kv_blocks,
        gpu_memory_utilization=config.gpu_memory_utilization,
        memory_budget_bytes=config.memory_budget_bytes,
        show_progress=config.show_progress,
        attention_backend=config.attention_backend,
        cudnn_prefill_attention=config.cudnn_prefill_attention,
        quantization=config.quantization,
        kv_cache_dtype=config.kv_cache_dtype,
        cuda_graph_batch_sizes=tuple(LLMEngine._graph_batch_sizes(config)),
        cuda_graph_token_counts=tuple(LLMEngine._graph_token_counts(config, batched)),
        max_num_batched_tokens=batched,
        max_num_seqs=config.max_num_seqs,
    )


def resolve_max_model_len(config: EngineConfig, model_config: DecoderConfig) -> int:
    if config.max_model_len is None:
        return model_config.max_position_embeddings
    return min(config.max_model_len, model_config.max_position_embeddings)


class LLMEngine:
    def __init__(self, model_dir: Path, config: EngineConfig):
        self.config = config
        self.model_config = DecoderConfig.from_file(Path(model_dir) / "config.json")
        self.tokenizer = TextTokenizer(model_dir)
        self.max_model_len = resolve_max_model_len(config, self.model_config)
        batched = config.max_num_batched_tokens or max(2048, self.max_model_len)
        settings = runner_config(config, self.max_model_len, resolve_device(config.device))
        if config.pipeline_parallel_size > 1 and settings.device.startswith("cuda") and not config.enforce_eager:
            logger.warning(
                "pipeline_parallel_size %d: CUDA graphs are off (a stage's forward waits on its neighbours' "
                "transfers between micro-batches, which the graphs do not capture); every step runs eagerly",
                config.pipeline_parallel_size,
            )
        # tensor_parallel_size × pipeline_parallel_size > 1: this process is rank 0 of a group whose other ranks
        # start here.
        self.workers = None
        layout = ParallelLayout(config.tensor_parallel_size, config.pipeline_parallel_size)
        if layout.world_size > 1:
            from modelgate.backends.llm.parallel.workers import start_workers

            self.workers, settings = start_workers(Path(model_dir), layout, self.model_config, settings)
            if config.launch_decode_ahead:
                logger.info("launch_decode_ahead is off with %d ranks: they would need its tokens", layout.world_size)
        self.runner = ModelRunner(Path(model_dir), self.model_config, settings)
        self.kv_cache = KVCacheManager(self.runner.num_kv_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(config.max_num_seqs, batched, self.max_model_len, config.enable_chunked_prefill),
            self.kv_cache,
        )
        self.outputs = OutputProcessor(self.tokenizer)
        self._pending_outputs: list = []  # requests whose new tokens are not processed yet
        # (SchedulerOutput, PendingSample, when its scheduling began) of a decode step launched ahead
        self._ahead: tuple | None = None
        self.step_counts = StepCounts()  # cumulative, for metrics: how the steps ran
        tokenizer_eos = self.tokenizer.eos_token_id
        self.eos_token_ids = tuple(sorted(set(self.model_config.eos_token_ids) | ({tokenizer_eos} - {None})))

    @staticmethod
    def _graph_batch_sizes(config: EngineConfig) -> list[int]:
        from modelgate.backends.llm.cuda_graphs import capture_sizes

        if config.enforce_eager or config.pipeline_parallel_size > 1:
            return []
        limit = config.cuda_graph_max_batch_size
        return capture_sizes(config.max_num_seqs if limit is None else min(limit, config.max_num_seqs))

    @staticmethod
    def _graph_token_counts(config: EngineConfig, max_num_batched_tokens: int) -> list[int]:
        from modelgate.backends.llm.engine_config import DEFAULT_GRAPH_TOKENS
        from modelgate.backends.llm.step_graphs import token_counts

        if config.enforce_eager or config.pipeline_parallel_size > 1:
            return []
        limit = config.cuda_graph_max_num_tokens
        return token_counts(min(DEFAULT_GRAPH_TOKENS if limit is None else limit, max_num_batched_tokens))

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished or bool(self._pending_outputs) or self._ahead is not None

    def add_request(self, request_id: str, prompt_token_ids: list[int], sampling: SamplingParams) -> None:
        """Queue a request; ValueError if it cannot fit the context (the server checks this first)."""
        if not prompt_token_ids or len(prompt_token_ids) + sampling.max_tokens > self.max_model_len:
            raise ValueError(
                f"request '{request_id}': {len(prompt_token_ids)} prompt tokens + max_tokens {sampling.max_tokens} "
                f"do not fit max_model_len {self.max_model_len}"
            )
        request = LLMRequest(request_id, list(prompt_token_ids), sampling, eos_token_ids=self.eos_token_ids)
        self.scheduler.add_request(request)
        self.outputs.add(request)

    def abort(self, request_id: str) -> RequestOutput | None:
        request = self.scheduler.abort(request_id)
        if request is None:
            return None
        self.runner.sampler.forget(request_id)
        self._pending_outputs = [r for r in self._pending_outputs if r is not request]  # its final output is this
        output, _ = self.outputs.process(request)
        return output

    def step(self) -> list[RequestOutput]:
        """Run one step; the outputs of the requests that got tokens (with overlap_output_processing: those of
        the step before, processed while this step ran on the GPU).

        With launch_decode_ahead, the next step, when it surely is a decode of the same requests, is queued on
        the GPU before this one's tokens are read back (they feed it on the device), and the next call takes
        it instead of scheduling: the GPU then never waits for the host between decode steps."""
        try:
            return self._step()
        except Exception as exc:
            self._ahead = None  # the engine process aborts everything after a failed step: start afresh
            if self.workers is not None:  # the ranks may be out of step now: no later collective can be trusted
                self.workers.fail(f"a step failed on rank 0: {type(exc).__name__}: {exc}")
            raise

    def _step(self) -> list[RequestOutput]:
        if self._ahead is not None:
            scheduled, pending_sample, started_at = self._ahead
            self._ahead = None
            self.step_counts.launched_ahead += 1
        else:
            started_at = time.perf_counter()
            scheduled = self.scheduler.schedule()
            if scheduled.is_empty:
                return self._process_outputs(self._pending_outputs)
            pending_sample = self.runner.launch(scheduled)
        is_decode = self.step_counts.count(scheduled)
        if self.config.launch_decode_ahead and self.workers is None:  # TP: the workers would need its tokens
            self._ahead = self._launch_ahead(scheduled, pending_sample)
        # With a step queued ahead, the GPU has work while this one's outputs are processed: they go out now.
        # Otherwise (overlap_output_processing) they wait for the next step, processed while it runs.
        defers_outputs = self.config.overlap_output_processing and self._ahead is None
        outputs = []
        if defers_outputs:
            # Stop strings found here finish requests that this step already computes: the scheduler drops
            # their tokens (update_from_output skips finished requests) and nothing reuses their blocks before
            # the next schedule(), after the step has finished.
            outputs = self._process_outputs(self._pending_outputs)
        sampled = pending_sample.result()
        self.step_counts.finished(scheduled, is_decode, started_at, time.perf_counter())
        result = self.scheduler.update_from_output(scheduled, sampled.token_ids, sampled.logprobs)
        if defers_outputs:
            self._pending_outputs = result.new_token_requests
            return outputs
        # Those a step before this one deferred, then this step's; once each (an output covers all new tokens).
        return self._process_outputs(list(dict.fromkeys(self._pending_outputs + result.new_token_requests)))

    def _launch_ahead(self, scheduled, pending_sample) -> tuple | None:
        if not self.runner.can_launch_ahead(scheduled, pending_sample):
            return None
        admits = self.runner.admits_ahead if self.config.admit_waiting_ahead else None
        started_at = time.perf_counter()
        ahead = self.scheduler.schedule_ahead(scheduled, admits)
        if ahead is None:
            return None
        return ahead, self.runner.launch_ahead(ahead, scheduled, pending_sample), started_at

    def _process_outputs(self, requests: list) -> list[RequestOutput]:
        """Detokenize and stop-string-check the requests that got tokens; returns their outputs."""
        self._pending_outputs = []
        outputs = []
        for request in requests:
            output, stopped = self.outputs.process(request)
            if stopped and not request.is_finished:
                self.scheduler.finish(request.request_id, RequestStatus.FINISHED_STOPPED)
            if output.finished:
                self.runner.sampler.forget(request.request_id)
            outputs.append(output)
        return outputs

    def stats(self) -> EngineStats:
        """Gauges and counters for metrics, read after a step."""
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            kv_cache_usage=self.kv_cache.usage,
            num_preemptions=self.scheduler.num_preemptions,
            prefix_cache_queries=self.kv_cache.stats.num_queries,
            prefix_cache_hits=self.kv_cache.stats.num_hits,
            num_steps=self.step_counts.steps,
            num_decode_steps=self.step_counts.decode_steps,
            num_steps_launched_ahead=self.step_counts.launched_ahead,
            decode_step_seconds=self.step_counts.decode_seconds,
            decode_step_tokens=self.step_counts.decode_tokens,
            prefill_step_seconds=self.step_counts.prefill_seconds,
            prefill_step_tokens=self.step_counts.prefill_tokens,
        )
