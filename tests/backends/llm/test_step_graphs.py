"""Piecewise step graphs (backends/llm/step_graphs.py): prefills, chunks and mixed steps through the padded
static-buffer pieces give the eager engine's tokens.

On the CPU the pieces run eagerly (`replay=False`) under the Triton interpreter: padding rows (slot -1, token 0
at position 0), the buffers that carry qkv, residual and attention output across pieces, and the eager
attention between them are what is checked. On a GPU (`-m gpu`) the pieces are captured and replayed.
"""

import torch

from tests.backends.llm.triton_interpreter import interpret_kernels_without_cuda  # noqa: E402

interpret_kernels_without_cuda()

import pytest  # noqa: E402

from modelgate.backends.llm.engine import LLMEngine  # noqa: E402
from modelgate.backends.llm.engine_config import DEFAULT_GRAPH_TOKENS, EngineConfig  # noqa: E402
from modelgate.backends.llm.step_graphs import token_counts  # noqa: E402
from tests.backends.llm.greedy import greedy_tokens  # noqa: E402
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# Prompts of different lengths; with max_num_batched_tokens 24 the long one is chunked and the later steps mix
# decodes with prefill chunks.
PROMPTS = {
    "the quick brown fox jumps over the lazy dog and keeps running far away": 4,
    "lazy dog": 3,
    "a stitch in time saves nine, they say": 5,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("steps"), intermediate_size=128, max_position_embeddings=256)


def _engine(directory, device=DEVICE, **settings) -> LLMEngine:
    options = dict(
        device=device,
        dtype="float32",
        num_kv_blocks=64,
        block_size=4,
        max_model_len=128,
        max_num_batched_tokens=24,
        show_progress=False,
        attention_backend="triton",
        enforce_eager=True,
        enable_prefix_caching=False,
    )
    options.update(settings)
    return LLMEngine(directory, EngineConfig(**options))


def _greedy(engine: LLMEngine, prompts=PROMPTS) -> dict[str, list[int]]:
    return greedy_tokens(engine, prompts)


def _count_graph_steps(engine: LLMEngine) -> list[tuple[int, bool, bool]]:
    """Record (tokens, decode only, some sequence extends a cached context by several tokens) of every step
    that goes through the step graphs."""
    graphs, steps = engine.runner.step_graphs, []
    run = graphs.run

    def counting_run(token_ids, positions, slots, metadata, device_tokens=None):
        starts, contexts = metadata.query_start_cpu, metadata.context_lens_cpu
        queries = [end - begin for begin, end in zip(starts, starts[1:])]
        extends = any(1 < query < context for query, context in zip(queries, contexts))
        steps.append((len(token_ids), metadata.is_decode_only, extends))
        return run(token_ids, positions, slots, metadata, device_tokens)

    graphs.run = counting_run
    return steps


def test_token_counts():
    assert token_counts(0) == []
    assert token_counts(10) == [10]
    assert token_counts(24) == [16, 24]
    assert token_counts(300) == [16, 32, 64, 128, 256, 300]
    assert token_counts(1024)[-5:] == [512, 640, 768, 896, 1024]


def test_graph_token_counts_follow_the_engine_config():
    assert LLMEngine._graph_token_counts(EngineConfig(), 8192)[-1] == DEFAULT_GRAPH_TOKENS == 4096
    assert LLMEngine._graph_token_counts(EngineConfig(), 2048)[-1] == 2048  # capped at the step budget
    assert LLMEngine._graph_token_counts(EngineConfig(), 300)[-1] == 300
    assert LLMEngine._graph_token_counts(EngineConfig(cuda_graph_max_num_tokens=0), 2048) == []
    assert LLMEngine._graph_token_counts(EngineConfig(pipeline_parallel_size=2), 2048) == []  # default: no refusal
    assert LLMEngine._graph_token_counts(EngineConfig(cuda_graph_max_num_tokens=1024), 2048)[-1] == 1024
    assert LLMEngine._graph_token_counts(EngineConfig(cuda_graph_max_num_tokens=1024), 300)[-1] == 300
    assert LLMEngine._graph_token_counts(EngineConfig(cuda_graph_max_num_tokens=64), 2048)[-1] == 64
    settings = dict(cuda_graph_max_num_tokens=64, enforce_eager=True)
    assert LLMEngine._graph_token_counts(EngineConfig(**settings), 2048) == []


def test_padded_pieces_give_the_eager_tokens(tiny):
    """Prefills, a chunked prefill and mixed steps pad to 16 or 24 tokens; decode steps (no decode graphs here)
    take the pieces too, with the decode kernel between them."""
    expected = _greedy(_engine(tiny))
    engine = _engine(tiny)
    engine.runner.use_step_graphs([16, 24], replay=CUDA)
    steps = _count_graph_steps(engine)
    assert _greedy(engine) == expected
    sizes = {size for size, _, _ in steps}
    assert any(size < 16 for size in sizes) and any(16 < size <= 24 for size in sizes)  # both counts padded to
    assert any(decode_only for _, decode_only, _ in steps) and any(not decode_only for _, decode_only, _ in steps)
    assert any(extends for _, _, extends in steps)  # the long prompt's second chunk
    assert engine.kv_cache.num_requests_holding_blocks() == 0


def test_pieces_with_the_session_26_switches_give_the_eager_tokens(tiny, monkeypatch):
    """FP8 through the padded pieces with a mixed step's decodes on the decode kernel (off by default) and
    SiLU-and-mul in the gate | up GEMM (on by default): the tokens of the eager engine with both off."""
    import modelgate.backends.llm.layers.fp8_linear as fp8_linear_module
    from modelgate.backends.llm.attention.triton_paged import TritonPagedAttention
    from modelgate.backends.llm.layers.fp8_linear import Fp8Linear

    monkeypatch.setattr(Fp8Linear, "silu_in_gemm", False)
    expected = _greedy(_engine(tiny, quantization="fp8"))
    monkeypatch.setattr(TritonPagedAttention, "decodes_in_mixed_steps", True)
    monkeypatch.setattr(Fp8Linear, "silu_in_gemm", True)
    calls = {"fused gemm": 0, "mixed decodes": 0}
    fused_gemm, decode_part = fp8_linear_module.fp8_linear_silu, TritonPagedAttention._decode_part

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(fp8_linear_module, "fp8_linear_silu", counted("fused gemm", fused_gemm))
    monkeypatch.setattr(TritonPagedAttention, "_decode_part", counted("mixed decodes", decode_part))
    engine = _engine(tiny, quantization="fp8")
    engine.runner.use_step_graphs([16, 24], replay=CUDA)
    steps = _count_graph_steps(engine)
    assert _greedy(engine) == expected
    assert calls["fused gemm"] > 0 and calls["mixed decodes"] > 0, calls
    assert any(not decode_only for _, decode_only, _ in steps)
    assert engine.kv_cache.num_requests_holding_blocks() == 0


def test_prefix_cache_hits_attend_through_the_paged_kernel_between_pieces(tiny):
    """A prompt whose prefix is cached computes only its tail: the pieces write the tail's K/V and the paged
    kernel reads the cached prefix between them."""
    shared = "the quick brown fox jumps over the lazy dog and keeps running far away"
    first, second = {shared: 2}, {shared + " again and again": 3}
    reference = _engine(tiny, enable_prefix_caching=True, max_num_batched_tokens=64)
    expected = [_greedy(reference, first), _greedy(reference, second)]
    engine = _engine(tiny, enable_prefix_caching=True, max_num_batched_tokens=64)
    engine.runner.use_step_graphs([16, 64], replay=CUDA)
    steps = _count_graph_steps(engine)
    assert _greedy(engine, first) == expected[0]
    steps.clear()
    assert _greedy(engine, second) == expected[1]
    prompt_tokens = len(engine.tokenizer.encode(shared + " again and again"))
    assert steps[0][2] and steps[0][0] < prompt_tokens  # only the tail, over the cached prefix


def test_steps_larger_than_the_pieces_run_eagerly(tiny):
    expected = _greedy(_engine(tiny))
    engine = _engine(tiny)
    engine.runner.use_step_graphs([16], replay=CUDA)
    steps = _count_graph_steps(engine)
    assert _greedy(engine) == expected
    assert steps and max(size for size, _, _ in steps) <= 16


@pytest.mark.parametrize("use", ["use_decode_graphs", "use_step_graphs"])
def test_graphs_need_the_triton_backend(tiny, use):
    engine = _engine(tiny, attention_backend="torch")
    with pytest.raises(ValueError, match="attention_backend 'triton'"):
        getattr(engine.runner, use)([16])


@pytest.mark.gpu
@pytest.mark.parametrize("quantization, kv_cache_dtype", [("none", "auto"), ("fp8", "fp8")])
def test_captured_graphs_on_cuda_give_the_eager_tokens(tiny, quantization, kv_cache_dtype):
    """Both kinds captured at load and replayed: decode steps through the decode graphs, prefills and mixed
    steps through the pieces."""
    settings = dict(device="cuda", dtype="bfloat16", quantization=quantization, kv_cache_dtype=kv_cache_dtype)
    expected = _greedy(_engine(tiny, **settings))
    graphs = {"enforce_eager": False, "max_num_seqs": 8, "cuda_graph_max_num_tokens": 24}
    engine = _engine(tiny, **settings, **graphs)
    runner = engine.runner
    assert runner.step_graphs is not None and runner.step_graphs.replay and runner.decode_graphs.replay
    steps, decodes = _count_graph_steps(engine), []
    decode_run = runner.decode_graphs.run
    runner.decode_graphs.run = lambda rows, tokens=None: decodes.append(rows.num_seqs) or decode_run(rows, tokens)
    assert _greedy(engine) == expected
    assert any(not decode_only for _, decode_only, _ in steps) and decodes
