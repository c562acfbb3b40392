"""FP8 fusion in the Llama model: norms and SiLU-and-mul emit per-token FP8 for the FP8 GEMMs after them.

The fused path (input_layernorm -> FP8 -> qkv_proj, post_attention_layernorm -> FP8 -> gate_up_proj,
silu_and_mul -> FP8 -> down_proj) must give the logits of the unfused FP8 path (bf16/fp32 rows, then
quantize_per_token inside Fp8Linear): both feed the same GEMM the same FP8 values, so under the interpreter
the logits are equal. On a GPU the bound is 1e-3 relative: the plain and FP8 variants of a kernel are compiled
separately and might order an fp32 reduction differently, flipping the rounding of an activation now and then.

At one token an FP8 gate_up_proj also applies SiLU-and-mul in its GEMV's epilogue and down_proj reads the product
unquantized: the one-token decode's logits must be those of the same model with that fusion off and act_fn
writing rows in the model's dtype (the same GEMV sums, the same roundings), within the same bound.

At one token the layer's two RMSNorms are deferred into the GEMVs of qkv_proj and gate_up_proj, which normalize
their input row themselves (unquantized): the logits must be those of the norms' kernels writing rows in the
model's dtype for the same GEMVs, within the same bound.

Without a GPU the kernels run under the Triton interpreter: TRITON_INTERPRET is set before anything imports
kernels/ (see test_fp8_engine.py).
"""

import torch

from tests.backends.llm.triton_interpreter import interpret_kernels_without_cuda  # noqa: E402

interpret_kernels_without_cuda()

import pytest  # noqa: E402

from modelgate.backends.llm.kv_cache_manager import KVCacheManager  # noqa: E402
from modelgate.backends.llm.layers.fp8_linear import Fp8Linear  # noqa: E402
from modelgate.backends.llm.model_runner import ModelRunner, RunnerConfig  # noqa: E402
from modelgate.backends.llm.models.model_config import DecoderConfig  # noqa: E402
from modelgate.backends.llm.request import LLMRequest  # noqa: E402
from modelgate.backends.llm.sampling_params import SamplingParams  # noqa: E402
from modelgate.backends.llm.scheduler import ScheduledRequest  # noqa: E402
from modelgate.kernels.fp8_quant import Fp8Rows, quantize_per_token  # noqa: E402
from tests.backends.llm.hf_checkpoints import save_random_checkpoint  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NUM_BLOCKS, BLOCK_SIZE = 16, 4
PROMPT_LENS = (9, 5)
NUM_DECODES = 2
MAX_RELATIVE_DIFFERENCE = 0.0 if DEVICE == "cpu" else 1e-3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # hidden 64, intermediate 128, head_dim 16: FP8 dots need K >= 32 on a GPU.
    return save_random_checkpoint("LlamaForCausalLM", tmp_path_factory.mktemp("fusion"), intermediate_size=128)


def _runner(directory, dtype: str, backend: str = "triton", quantization: str = "fp8", num_blocks=NUM_BLOCKS):
    config = DecoderConfig.from_file(directory / "config.json")
    return ModelRunner(
        directory,
        config,
        RunnerConfig(
            device=DEVICE,
            dtype=dtype,
            num_kv_blocks=num_blocks,
            block_size=BLOCK_SIZE,
            max_model_len=num_blocks * BLOCK_SIZE,
            show_progress=False,
            attention_backend=backend,
            quantization=quantization,
        ),
    )


def _fusion_flags(model) -> list[bool]:
    return [
        flag
        for layer in model.layers
        for flag in (
            layer.input_layernorm.quantize_output,
            layer.post_attention_layernorm.quantize_output,
            layer.mlp.act_fn.quantize_output,
            getattr(layer.mlp.gate_up_proj, "fuse_silu_and_mul", False),
        )
    ]


def _all_logits(runner: ModelRunner, prompt_lens=PROMPT_LENS, num_blocks=NUM_BLOCKS) -> torch.Tensor:
    """float32 logits of every position: one prefill step of all but the last NUM_DECODES tokens of each
    prompt, then NUM_DECODES decode steps (teacher forcing)."""
    generator = torch.Generator().manual_seed(7)
    prompts = [torch.randint(0, 211, (n,), generator=generator).tolist() for n in prompt_lens]
    kv = KVCacheManager(num_blocks, BLOCK_SIZE, enable_prefix_caching=False)
    requests = [LLMRequest(f"r{i}", tokens, SamplingParams()) for i, tokens in enumerate(prompts)]
    logits = []
    for step in range(NUM_DECODES + 1):
        items = []
        for request in requests:
            count = request.num_prompt_tokens - NUM_DECODES if step == 0 else 1
            assert kv.allocate_slots(request, count)
            items.append(
                ScheduledRequest(request, request.num_computed_tokens, count, kv.block_ids(request.request_id))
            )
        inputs = runner._prepare(items)
        with torch.inference_mode():
            hidden = runner.model(
                inputs.token_ids, inputs.positions, runner.kv_caches, inputs.metadata, runner.kv_scales
            )
            logits.append(runner.model.compute_logits(hidden).float().cpu())
        for item in items:
            item.request.num_computed_tokens = item.num_computed_tokens + item.num_new_tokens
    return torch.cat(logits)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_fp8_path_gives_the_unfused_logits(checkpoint, dtype):
    runner = _runner(checkpoint, dtype)
    model = runner.model
    assert all(_fusion_flags(model)), "quantizing the linears turns the fusion on where kernels run"
    fused = _all_logits(runner)
    model.set_fp8_fusion(False)
    assert not any(_fusion_flags(model))
    unfused = _all_logits(runner)
    relative = ((fused - unfused).norm() / unfused.norm()).item()
    print(
        f"{dtype}: fused vs unfused FP8 logits, relative difference {relative:.2e}, "
        f"max |difference| {(fused - unfused).abs().max().item():.2e}"
    )
    assert relative <= MAX_RELATIVE_DIFFERENCE


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_silu_epilogue_at_one_token_gives_the_unfused_logits(checkpoint, dtype, monkeypatch):
    # The several-token GEMM keeps SiLU-and-mul out of its epilogue here: the prefill's act_fn is the count below.
    monkeypatch.setattr(Fp8Linear, "silu_in_gemm", False)
    runner = _runner(checkpoint, dtype)
    mlps = [layer.mlp for layer in runner.model.layers]
    assert all(mlp.gate_up_proj.fuse_silu_and_mul for mlp in mlps)
    activations = []
    hooks = [mlp.act_fn.register_forward_hook(lambda *_: activations.append(1)) for mlp in mlps]
    fused = _all_logits(runner, prompt_lens=(9,))  # one sequence: its decode steps have one token
    assert len(activations) == len(mlps), "act_fn runs in the prefill only: the decodes fuse it"
    for mlp in mlps:  # the same GEMVs, then act_fn on their [1, 2I] rows, and down_proj reading its output
        mlp.set_silu_fusion(False)
        mlp.act_fn.quantize_output = False
    unfused = _all_logits(runner, prompt_lens=(9,))
    assert len(activations) == 4 * len(mlps)
    for hook in hooks:
        hook.remove()
    relative = ((fused - unfused).norm() / unfused.norm()).item()
    print(f"{dtype}: one-token SiLU epilogue vs act_fn, relative difference {relative:.2e}")
    assert relative <= MAX_RELATIVE_DIFFERENCE


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_silu_epilogue_at_several_tokens_gives_the_unfused_logits(checkpoint, dtype, monkeypatch):
    """A prefill past the decode sizes (85 tokens, the cp.async GEMM) and two-token decodes (the TMA GEMM):
    gate_up_proj's GEMM applies SiLU-and-mul and quantizes (kernels/fp8_gemm_silu.py) and act_fn never runs;
    the logits are those of the GEMM, act_fn's kernel and its quantization run one after another."""
    import modelgate.backends.llm.layers.fp8_linear as fp8_linear_module

    calls = []
    fused_gemm = fp8_linear_module.fp8_linear_silu
    monkeypatch.setattr(
        fp8_linear_module, "fp8_linear_silu", lambda x, *rest: calls.append(x.shape[0]) or fused_gemm(x, *rest)
    )
    runner = _runner(checkpoint, dtype, num_blocks=24)
    mlps = [layer.mlp for layer in runner.model.layers]
    assert all(mlp.gate_up_proj.silu_output_fp8 for mlp in mlps)
    assert Fp8Linear.silu_in_gemm  # on by default
    for mlp in mlps:
        mlp.gate_up_proj.silu_in_gemm = True
    activations = []
    hooks = [mlp.act_fn.register_forward_hook(lambda *_: activations.append(1)) for mlp in mlps]
    fused = _all_logits(runner, prompt_lens=(80, 9), num_blocks=24)  # a prefill step of 78 + 7 tokens
    layers = len(mlps)
    assert calls == [85] * layers + [2] * 2 * layers and activations == []
    for mlp in mlps:
        mlp.gate_up_proj.silu_in_gemm = False
    unfused = _all_logits(runner, prompt_lens=(80, 9), num_blocks=24)
    assert len(calls) == 3 * layers and len(activations) == 3 * layers, "act_fn at every step without the fusion"
    for hook in hooks:
        hook.remove()
    relative = ((fused - unfused).norm() / unfused.norm()).item()
    print(f"{dtype}: SiLU-and-mul in the GEMM's epilogue vs act_fn, relative difference {relative:.2e}")
    assert relative <= MAX_RELATIVE_DIFFERENCE


def test_gemms_cublas_takes_skip_the_silu_epilogue(checkpoint, monkeypatch):
    """Where fp8_linear hands gate_up_proj's GEMM to cuBLAS (here: every GEMM of more than 80 rows, standing in
    for SCALED_MM_MIN_M on a GPU), the plain GEMM and act_fn run instead of the fused kernel; smaller steps keep
    the fusion. The logits are those of the fusion off."""
    import modelgate.backends.llm.layers.fp8_linear as fp8_linear_module

    asked, fused = [], []
    fused_gemm = fp8_linear_module.fp8_linear_silu
    monkeypatch.setattr(
        fp8_linear_module, "takes_scaled_mm", lambda x, *rest: asked.append(x.shape[0]) or x.shape[0] > 80
    )
    monkeypatch.setattr(
        fp8_linear_module, "fp8_linear_silu", lambda x, *rest: fused.append(x.shape[0]) or fused_gemm(x, *rest)
    )
    runner = _runner(checkpoint, "float32", num_blocks=24)
    layers = len(runner.model.layers)
    logits = _all_logits(runner, prompt_lens=(80, 9), num_blocks=24)  # a prefill step of 85 tokens, then decodes
    assert asked == [85] * layers + [2] * 2 * layers
    assert fused == [2] * 2 * layers  # the decodes keep the epilogue
    monkeypatch.setattr(Fp8Linear, "silu_in_gemm", False)
    unfused = _all_logits(runner, prompt_lens=(80, 9), num_blocks=24)
    assert ((logits - unfused).norm() / unfused.norm()).item() <= MAX_RELATIVE_DIFFERENCE


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_norms_deferred_into_the_gemv_at_one_token(checkpoint, dtype):
    runner = _runner(checkpoint, dtype)
    layers = runner.model.layers
    assert all(layer.defers_norms and layer.self_attn.o_proj.prefetch_weights for layer in layers)
    norm_calls = []
    hooks = [
        norm.register_forward_hook(lambda *_: norm_calls.append(1))
        for layer in layers
        for norm in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    fused = _all_logits(runner, prompt_lens=(9,))  # one sequence: its decode steps have one token
    assert len(norm_calls) == 2 * len(layers), "the norms run in the prefill only: the decodes defer them"
    for layer in layers:  # the norms' kernels write rows in the model's dtype, read by the same GEMVs
        layer.defers_norms = False
        layer.input_layernorm.quantize_output = layer.post_attention_layernorm.quantize_output = False
    unfused = _all_logits(runner, prompt_lens=(9,))
    assert len(norm_calls) == 2 * len(layers) * (2 + NUM_DECODES)
    for hook in hooks:
        hook.remove()
    relative = ((fused - unfused).norm() / unfused.norm()).item()
    print(f"{dtype}: norms in the GEMV vs norm kernels, relative difference {relative:.2e}")
    assert relative <= MAX_RELATIVE_DIFFERENCE
    runner.model.set_fp8_fusion(False)
    assert not any(layer.defers_norms or layer.self_attn.o_proj.prefetch_weights for layer in layers)


def test_pending_norm_outside_the_gemv_runs_the_norm(checkpoint):
    """A deferred norm that reaches a linear which cannot fuse it (several tokens, or no kernels) is computed
    first: same output and new residual as the norm called directly."""
    from modelgate.backends.llm.layers.norms import PendingNorm

    model = _runner(checkpoint, "float32").model
    layer = model.layers[0]
    qkv = layer.self_attn.qkv_proj
    generator = torch.Generator().manual_seed(3)
    hidden, residual = (torch.randn(3, 64, generator=generator).to(DEVICE) for _ in range(2))
    with torch.inference_mode():
        pending = PendingNorm.of(layer.input_layernorm, hidden, residual.clone())
        out = qkv(pending)
        normed, expected_residual = layer.input_layernorm(hidden, residual.clone())
        expected = qkv(normed)
    assert torch.equal(pending.new_residual, expected_residual)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_no_fusion_without_fp8_kernels_on_both_sides(checkpoint):
    # Unquantized linears: nothing to quantize for.
    unquantized = _runner(checkpoint, "float32", quantization="none").model
    assert not any(_fusion_flags(unquantized)) and not any(layer.defers_norms for layer in unquantized.layers)
    if DEVICE == "cpu":
        # The torch attention backend keeps the CPU model on torch code (no norm/activation kernels), while
        # Fp8Linear still runs its GEMM kernel under the interpreter: the producers cannot quantize.
        model = _runner(checkpoint, "float32", backend="torch").model
        assert model.layers[0].mlp.down_proj.accepts_fp8_input and not any(_fusion_flags(model))
    # A consumer that cannot take FP8 rows (its kernels off) keeps its producer's output unquantized.
    model = _runner(checkpoint, "float32").model
    model.layers[0].mlp.down_proj.use_kernels = False
    model.set_fp8_fusion()
    assert not model.layers[0].mlp.act_fn.quantize_output and model.layers[0].input_layernorm.quantize_output


def test_fp8_linear_takes_quantized_rows(checkpoint):
    model = _runner(checkpoint, "float32").model
    down = model.layers[0].mlp.down_proj
    assert isinstance(down, Fp8Linear)
    x = torch.randn(5, down.weight.shape[1], generator=torch.Generator().manual_seed(1)).to(DEVICE)
    with torch.inference_mode():
        from_rows = down(Fp8Rows(*quantize_per_token(x)))
        from_activations = down(x)
        down.use_kernels = False  # the torch reference path takes Fp8Rows too
        reference = down(Fp8Rows(*quantize_per_token(x)))
    assert from_rows.dtype == torch.float32 and from_rows.shape == (5, down.weight.shape[0])
    torch.testing.assert_close(from_rows, from_activations, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(reference, from_rows, rtol=1e-5, atol=1e-5)
