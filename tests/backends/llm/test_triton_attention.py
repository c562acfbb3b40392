"""TritonPagedAttention (kernels/) gives the logits of TorchPagedAttention and of transformers, step by step.

Without a GPU the kernels run under the Triton interpreter: TRITON_INTERPRET is read when a @triton.jit
function is defined, so it is set here before anything imports kernels/ (as tests/kernels/conftest.py does);
kernel modules another test imported earlier without it are dropped, so that this run imports them afresh.
"""

import torch

from tests.backends.llm.triton_interpreter import interpret_kernels_without_cuda  # noqa: E402

interpret_kernels_without_cuda()

import pytest  # noqa: E402

import modelgate.backends.llm.attention.triton_paged as triton_paged  # noqa: E402
from modelgate.backends.llm.attention.torch_paged import TorchPagedAttention  # noqa: E402
from modelgate.backends.llm.attention.triton_paged import TritonPagedAttention  # noqa: E402
from modelgate.backends.llm.engine_config import EngineConfig  # noqa: E402
from modelgate.backends.llm.kv_cache_manager import KVCacheManager  # noqa: E402
from modelgate.backends.llm.model_runner import ModelRunner, RunnerConfig  # noqa: E402
from modelgate.backends.llm.models.model_config import DecoderConfig  # noqa: E402
from modelgate.backends.llm.request import LLMRequest  # noqa: E402
from modelgate.backends.llm.sampling_params import SamplingParams  # noqa: E402
from modelgate.backends.llm.scheduler import ScheduledRequest  # noqa: E402
from tests.backends.llm.hf_checkpoints import hf_model, save_random_checkpoint  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NUM_BLOCKS, BLOCK_SIZE = 48, 4
PROMPT_LENS = {"a": 21, "b": 14, "c": 7, "d": 12}
# Each step: (request, first new token, end). A: chunked prefill (the second chunk over its cached prefix);
# B: a fresh prefill; decode-only steps; mixed steps: decodes of A and B beside D's fresh first chunk, then C's
# fresh prefill before decode, chunk (D's second, over its cached prefix), decode; decodes.
# Decodes feed the prompt's next token (teacher forcing), so every position can be checked against transformers.
SCHEDULE = [
    [("a", 0, 9)],
    [("a", 9, 16), ("b", 0, 10)],
    [("a", 16, 17), ("b", 10, 11)],
    [("a", 17, 18), ("b", 11, 12), ("d", 0, 5)],
    [("c", 0, 7), ("a", 18, 19), ("d", 5, 12), ("b", 12, 13)],
    [("a", 19, 20), ("b", 13, 14), ("c", 6, 7)],
    [("a", 20, 21)],
]
CASES = [
    ("LlamaForCausalLM", {}),  # 4 query heads over 2 KV heads (GQA), head_dim 16
    ("MistralForCausalLM", {"sliding_window": 6}),
]


def _runner(directory, backend: str, dtype: str = "float32", kv_cache_dtype: str = "auto") -> ModelRunner:
    config = DecoderConfig.from_file(directory / "config.json")
    settings = RunnerConfig(
        device=DEVICE,
        dtype=dtype,
        num_kv_blocks=NUM_BLOCKS,
        block_size=BLOCK_SIZE,
        max_model_len=64,
        show_progress=False,
        attention_backend=backend,
        kv_cache_dtype=kv_cache_dtype,
    )
    return ModelRunner(directory, config, settings)


def _prompts() -> dict[str, list[int]]:
    generator = torch.Generator().manual_seed(3)
    return {name: torch.randint(0, 211, (n,), generator=generator).tolist() for name, n in PROMPT_LENS.items()}


def _run_schedule(runner: ModelRunner, prompts: dict[str, list[int]]) -> list[dict[str, torch.Tensor]]:
    """Logits of every new token of every step, by request: [{name: [num_new, vocab]}]."""
    kv = KVCacheManager(NUM_BLOCKS, BLOCK_SIZE, enable_prefix_caching=False)
    requests = {name: LLMRequest(name, tokens, SamplingParams()) for name, tokens in prompts.items()}
    steps = []
    for step in SCHEDULE:
        items = []
        for name, start, end in step:
            request = requests[name]
            if start == request.num_computed_tokens:  # C's row 6 is recomputed once; no new slots for it
                assert kv.allocate_slots(request, end - start)
            items.append(ScheduledRequest(request, start, end - start, kv.block_ids(name)))
        inputs = runner._prepare(items)
        assert inputs.metadata.is_decode_only == all(end - start == 1 for _, start, end in step)
        with torch.inference_mode():
            hidden = runner.model(
                inputs.token_ids, inputs.positions, runner.kv_caches, inputs.metadata, runner.kv_scales
            )
            logits = runner.model.compute_logits(hidden).cpu()
        bounds = inputs.metadata.query_start_cpu
        steps.append({name: logits[bounds[i] : bounds[i + 1]] for i, (name, _, _) in enumerate(step)})
        for name, _, end in step:
            requests[name].num_computed_tokens = max(requests[name].num_computed_tokens, end)
    return steps


@pytest.mark.parametrize("architecture, overrides", CASES)
def test_triton_attention_logits_equal_torch_and_transformers(tmp_path, architecture, overrides):
    directory = save_random_checkpoint(architecture, tmp_path, **overrides)
    prompts = _prompts()
    triton_runner = _runner(directory, "triton")
    assert isinstance(triton_runner.model.layers[0].self_attn.attention_impl, TritonPagedAttention)
    ours = _run_schedule(triton_runner, prompts)
    reference = _run_schedule(_runner(directory, "torch"), prompts)
    for index, (got, expected) in enumerate(zip(ours, reference)):
        for name in expected:
            torch.testing.assert_close(
                got[name],
                expected[name],
                atol=1e-4,
                rtol=1e-4,
                msg=lambda m, i=index, n=name: f"step {i}, request {n}: {m}",
            )
    model = hf_model(directory)
    for name, tokens in prompts.items():
        with torch.no_grad():
            expected = model(torch.tensor([tokens])).logits[0]
        rows = {}
        for step, logits in zip(SCHEDULE, ours):
            for request, start, end in step:
                if request == name:
                    rows.update({start + j: logits[name][j] for j in range(end - start)})
        got = torch.stack([rows[p] for p in range(len(tokens))])
        torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4, msg=lambda m, n=name: f"request {n}: {m}")


def _count_launches(runner: ModelRunner, monkeypatch) -> dict[str, int]:
    """Calls of the separate rotary kernel and of the fused rotary KV write while `runner` runs."""
    counts = {"rotary": 0, "fused": 0}
    rotary_kernel, fused_write = runner.model.rotary.kernel, triton_paged.rotary_reshape_and_cache

    def rotary(*args):
        counts["rotary"] += 1
        return rotary_kernel(*args)

    def fused(*args):
        counts["fused"] += 1
        return fused_write(*args)

    runner.model.rotary.kernel = rotary
    monkeypatch.setattr(triton_paged, "rotary_reshape_and_cache", fused)
    return counts


@pytest.mark.parametrize("dtype, kv_cache_dtype", [("float32", "auto"), ("bfloat16", "auto"), ("bfloat16", "fp8")])
def test_fused_rotary_kv_write_gives_the_unfused_logits_bit_for_bit(tmp_path, monkeypatch, dtype, kv_cache_dtype):
    """The Triton attention rotates q and k in its KV write (one launch per layer instead of two): logits and
    cache equal those of the rotary kernel followed by reshape_and_cache, exactly, through every kind of step."""
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    prompts = _prompts()
    fused, unfused = (_runner(directory, "triton", dtype, kv_cache_dtype) for _ in range(2))
    for layer in fused.model.layers + unfused.model.layers:
        layer.self_attn.attention_impl.varlen_attn = None  # fresh prefills on the paged kernel too (CUDA)
    for layer in unfused.model.layers:
        layer.self_attn.attention_impl.fuses_rotary = False
    fused_counts = _count_launches(fused, monkeypatch)
    fused_steps = _run_schedule(fused, prompts)
    unfused_counts = _count_launches(unfused, monkeypatch)
    unfused_steps = _run_schedule(unfused, prompts)
    layer_steps = len(SCHEDULE) * len(fused.model.layers)
    assert fused_counts == {"rotary": 0, "fused": layer_steps}
    assert unfused_counts == {"rotary": layer_steps, "fused": 0}
    for index, (got, expected) in enumerate(zip(fused_steps, unfused_steps)):
        for name in expected:
            assert torch.equal(got[name], expected[name]), f"step {index}, request {name}"
    for got, expected in zip(fused.kv_caches, unfused.kv_caches):
        assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))
    for got, expected in zip(fused.kv_scales or [], unfused.kv_scales or []):
        assert torch.equal(got, expected)


def test_attention_backend_selection(tmp_path):
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    config = DecoderConfig.from_file(directory / "config.json")
    runner = ModelRunner(
        directory, config, RunnerConfig(num_kv_blocks=4, block_size=4, max_model_len=32, show_progress=False)
    )
    expected = "triton" if runner.device.type == "cuda" else "torch"  # "auto"
    assert runner.attention_backend == expected
    if expected == "torch":
        assert isinstance(runner.model.layers[0].self_attn.attention_impl, TorchPagedAttention)
    assert EngineConfig(attention_backend="triton").attention_backend == "triton"
    assert EngineConfig().attention_backend == "auto"
    with pytest.raises(ValueError):
        EngineConfig(attention_backend="flash")


def test_mixed_steps_send_their_decodes_to_the_decode_kernel(tmp_path, monkeypatch):
    """In a step that mixes prefills and decodes, each contiguous run of one-token decodes is one decode-kernel
    launch and every longer run a prefill-kernel launch; the logits match the prefill kernel taking all."""
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    prompts = _prompts()
    launches: list[tuple[str, int]] = []  # (kernel, query rows), with ("step", index) before each step's
    decode_kernel, prefill_kernel = triton_paged.paged_decode_attention, triton_paged.prefill_attention

    def decode(q, *args, **kwargs):
        launches.append(("decode", q.shape[0]))
        return decode_kernel(q, *args, **kwargs)

    def prefill(q, kv_cache, block_tables, query_start, *args, **kwargs):
        launches.append(("prefill", int(query_start[-1] - query_start[0])))
        return prefill_kernel(q, kv_cache, block_tables, query_start, *args, **kwargs)

    def layer_launches(runner: ModelRunner) -> list[list[tuple[str, int]]]:
        """Each step's launches in one layer (every layer makes the same)."""
        prepare = runner._prepare

        def marked(items):
            launches.append(("step", len(items)))
            return prepare(items)

        runner._prepare = marked
        launches.clear()
        steps.append(_run_schedule(runner, prompts))
        cut = [i for i, (kind, _) in enumerate(launches) if kind == "step"] + [len(launches)]
        per_step = [launches[begin + 1 : end] for begin, end in zip(cut, cut[1:])]
        layers = len(runner.model.layers)
        for step in per_step:
            assert len(step) % layers == 0 and step == step[: len(step) // layers] * layers
        return [step[: len(step) // layers] for step in per_step]

    monkeypatch.setattr(triton_paged, "paged_decode_attention", decode)
    monkeypatch.setattr(triton_paged, "prefill_attention", prefill)
    split, whole = (_runner(directory, "triton", "bfloat16", "fp8") for _ in range(2))
    for layer in split.model.layers + whole.model.layers:
        layer.self_attn.attention_impl.varlen_attn = None  # fresh prefills on the paged kernel too (CUDA)
    assert not TritonPagedAttention.decodes_in_mixed_steps  # off by default (until measured on a GPU)
    for layer in split.model.layers:
        layer.self_attn.attention_impl.decodes_in_mixed_steps = True
    steps: list[list[dict[str, torch.Tensor]]] = []
    split_launches, whole_launches = layer_launches(split), layer_launches(whole)
    common = {0: [("prefill", 9)], 1: [("prefill", 17)], 2: [("decode", 2)], 5: [("decode", 3)], 6: [("decode", 1)]}
    assert split_launches == [
        *[common[i] for i in range(3)],
        [("decode", 2), ("prefill", 5)],  # A and B decode beside D's fresh first chunk
        [("prefill", 7), ("decode", 1), ("prefill", 7), ("decode", 1)],  # C fresh, A, D's chunk, B
        common[5],
        common[6],
    ]
    # Without the switch the decodes still launch apart from the chunks, on the prefill kernel's short-query tile
    assert whole_launches == [
        *[common[i] for i in range(3)],
        [("prefill", 2), ("prefill", 5)],
        [("prefill", 7), ("prefill", 1), ("prefill", 7), ("prefill", 1)],
        common[5],
        common[6],
    ]
    for index, (got, expected) in enumerate(zip(*steps)):
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], atol=2e-2, rtol=2e-2, msg=f"step {index} {name}")


@pytest.mark.parametrize(
    "lengths, short_tokens, expected",
    [
        ([1, 1, 5, 1], 1, [(0, 2), (2, 3), (3, 4)]),  # decodes, a chunk, a decode: three launches
        ([1, 1, 1], 1, [(0, 3)]),  # one piece: one launch
        ([9, 7], 1, [(0, 2)]),
        ([1, 5, 1, 5, 1], 1, [(0, 5)]),  # five pieces: past MAX_TILE_PARTS, one launch
        ([2, 1, 5], 2, [(0, 2), (2, 3)]),  # queries of up to SHORT_QUERY_TOKENS count as short
        ([1, 1, 5, 1], 0, [(0, 4)]),  # the short-query tile off: one launch
    ],
)
def test_tile_parts_cut_short_queries_from_chunks(monkeypatch, lengths, short_tokens, expected):
    import modelgate.kernels.prefill_attention as prefill_module
    from modelgate.backends.llm.attention.fresh_prefill import SequenceRun

    monkeypatch.setattr(prefill_module, "SHORT_QUERY_TOKENS", short_tokens)
    assert triton_paged.MAX_TILE_PARTS == 4
    query_start = [0]
    for length in lengths:
        query_start.append(query_start[-1] + length)
    # the run starts one sequence in, as a cached run after a fresh one does
    parts = triton_paged.tile_parts(SequenceRun(1, 1 + len(lengths), False), [0, *[1 + s for s in query_start]])
    assert [(part.first - 1, part.end - 1) for part in parts] == expected
    assert not any(part.is_fresh for part in parts)
