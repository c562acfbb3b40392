"""Engine settings, from the model's config.pbtxt `parameters` (all strings there)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# cuda_graph_max_num_tokens when unset: prefill and mixed steps of up to this many tokens replay step graphs.
# H100, Llama-3-8B-shaped FP8, one request served (session 29): at 4096 a 2,048-token prompt's first token came in
# 40.8 ms against 58.6-60.4 with eager steps above 1024, and the 35 token counts captured in 2.8 s. Eager steps
# above about 3,000 tokens keep the GPU busy longer than their launches take, so graphs gain nothing there.
DEFAULT_GRAPH_TOKENS = 4096


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = "auto"  # "auto": cuda:<instance gpu> when a GPU is there, else cpu
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_num_seqs: int = Field(64, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)  # None: max(2048, max_model_len)
    max_model_len: int | None = Field(None, ge=2)  # None: the model's max_position_embeddings
    block_size: int = Field(16, ge=1, le=256)
    num_kv_blocks: int | None = Field(None, ge=1)  # required on the CPU (a KV token budget)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    # All the engine process may hold on its GPU (weights, KV cache, activations, graphs, CUDA context): set by
    # the server's memory ledger, never by a config. None: gpu_memory_utilization of what the GPU has free.
    memory_budget_bytes: int | None = Field(None, ge=1)
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    show_progress: bool = True
    # "auto": the Triton kernels on a CUDA device, plain torch on the CPU ("triton" on the CPU: tests only,
    # under TRITON_INTERPRET=1)
    attention_backend: Literal["auto", "torch", "triton"] = "auto"
    # Fresh prompts of 512-16,384 tokens through cuDNN's attention (torch SDPA) instead of FlashAttention's
    # variable-length call, with one cuDNN graph per 256-token bucket built at load (attention/fresh_prefill.py);
    # the triton backend on a CUDA device only. Off by default until served runs at varied lengths measure it.
    cudnn_prefill_attention: bool = False
    # "fp8": attention and MLP weights quantized to FP8 e4m3 after loading (per-channel weight scales, dynamic
    # per-token activation scales); embeddings, norms and lm_head stay unquantized. FP8 checkpoints (with
    # weight_scale tensors) load as FP8 whatever this says.
    quantization: Literal["none", "fp8"] = "none"
    # "fp8": float8_e4m3fn paged KV cache with per-(token, KV head) scales; needs the triton attention backend.
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    # Decode steps of up to this many sequences replay CUDA graphs (captured at load, at batch sizes 1, 2, 4, 8
    # and multiples of 16; a step pads to the next size); larger ones run eagerly. None: max_num_seqs, every
    # decode batch the scheduler can form (a fixed 256 left steps of 257-512 sequences eager: their inter-token
    # latency doubled at max_num_seqs 512 on the H100). CUDA with the triton attention backend only.
    # enforce_eager (vLLM's name) turns graphs off.
    cuda_graph_max_batch_size: int | None = Field(None, ge=0)
    # The other steps (prefills, prefill chunks, decodes mixed with them) of up to this many tokens replay
    # piecewise CUDA graphs: everything but the attention, captured at 16, 32, 64, 128, 256 and multiples of 128
    # tokens (a step pads to the next count), the attention eager between them (capped at
    # max_num_batched_tokens). None: DEFAULT_GRAPH_TOKENS. 0: those steps run eagerly. Same conditions as the
    # decode graphs. H100, Llama-3-8B-shaped FP8, one request: TTFT at ISL 128 / 512 / 1024 went from 42.1 / 47.6 /
    # 46.8 ms eager to 11.3 / 14.7 / 20.3 ms (benchmarks/llm_step_graphs_h100.sh).
    cuda_graph_max_num_tokens: int | None = Field(None, ge=0)
    enforce_eager: bool = False
    # Detokenize and check stop strings of a step's tokens while the next step runs on the GPU. Each step's
    # outputs then come out one step later, and a request a stop string ends computes one token more (dropped).
    overlap_output_processing: bool = True
    # Queue the next decode step on the GPU before this one's tokens reach the host, when the next step surely
    # is a decode of the same requests (decode graphs; vLLM's async scheduling): the sampled tokens feed it on
    # the device, where every token is chosen (sampler.py). A request that stops on a token computes one more
    # (dropped).
    launch_decode_ahead: bool = True
    # With launch_decode_ahead, waiting requests join the step queued ahead behind its decodes (their prompts
    # come from the host), instead of making it wait for the host: under a steady stream of arrivals, most
    # steps then are queued ahead.
    admit_waiting_ahead: bool = True
    # Split the model over this many processes (ranks), one GPU each (rank r on cuda:<device index + r>), linked
    # by torch.distributed (NCCL; gloo on the CPU): attention heads, KV cache, MLP and vocabulary split,
    # all-reduces after o_proj and down_proj (backends/llm/parallel/). The model's heads, KV heads (or the
    # ranks a multiple of them) and intermediate size must divide by it. launch_decode_ahead is off with it.
    tensor_parallel_size: int = Field(1, ge=1)
    # Split the model's decoder layers over this many pipeline stages, each tensor_parallel_size ranks (world:
    # tp × pp processes, rank r = stage × tp + tensor-parallel rank; backends/llm/parallel/layout.py): stage s
    # holds a contiguous run of layers and their KV cache, the first the embedding, the last the final norm and
    # the LM head; hidden states go stage to stage by point-to-point sends, a step's sequences split into up to
    # this many micro-batches that overlap across stages. At most the model's num_hidden_layers. For models
    # that must span more GPUs than tensor parallelism splits well; on one node tensor parallelism is the default
    # choice. CUDA graphs are off with it (explicit cuda_graph_* settings are refused); launch_decode_ahead is
    # off too, as with tensor parallelism.
    pipeline_parallel_size: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _nothing_unsupported_with_pipeline_stages(self) -> EngineConfig:
        """Settings that pipeline stages cannot honour are refused, not silently dropped."""
        if self.pipeline_parallel_size == 1:
            return self
        asked = [name for name in _NOT_WITH_PIPELINE_STAGES if getattr(self, name)]
        if asked:
            reasons = "; ".join(f"{name}: {_NOT_WITH_PIPELINE_STAGES[name]}" for name in asked)
            raise ValueError(
                f"not supported with pipeline_parallel_size {self.pipeline_parallel_size}: {reasons}; allowed: "
                f"leave {' and '.join(asked)} unset (or 0 / false)"
            )
        return self


# What pipeline stages cannot do when asked for (their defaults, None and 0, ask for nothing: the engine then
# turns the graphs off, saying so), and why. launch_decode_ahead is not here: it is on by default, and off with
# any parallelism (engine.py), as tensor parallelism always had it; an explicit true cannot be told from the
# default once the config has crossed to the engine process.
_NOT_WITH_PIPELINE_STAGES = {
    "cuda_graph_max_batch_size": "CUDA graphs do not capture a stage's waits on its neighbours' transfers",
    "cuda_graph_max_num_tokens": "CUDA graphs do not capture a stage's waits on its neighbours' transfers",
}
