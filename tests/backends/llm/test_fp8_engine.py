"""FP8 weights (quantization "fp8"), the FP8 KV cache (kv_cache_dtype "fp8") and FP8 checkpoints in the engine.

The measure on the random 2-layer model (hidden 64, intermediate 128, head_dim 16: dims multiples of 32, as
fp8 dots need K >= 32 on a GPU): over every position of a few prompts (chunked prefill + decode steps),
relative error ||logits - reference|| / ||reference|| < 0.1 and top-1 agreement >= 90% against the
unquantized model. Greedy generation with the engine agrees with the unquantized engine on the first tokens
for most prompts.

Without a GPU the kernels run under the Triton interpreter: TRITON_INTERPRET is set before anything imports
kernels/ and kernel modules imported earlier without it are dropped (see test_triton_attention.py).
"""

import torch

from tests.backends.llm.triton_interpreter import interpret_kernels_without_cuda  # noqa: E402

interpret_kernels_without_cuda()

import pytest  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from modelgate.backends.llm.engine import LLMEngine  # noqa: E402
from modelgate.backends.llm.engine_config import EngineConfig  # noqa: E402
from modelgate.backends.llm.kv_cache_manager import KVCacheManager  # noqa: E402
from modelgate.backends.llm.layers.fp8_linear import Fp8Linear  # noqa: E402
from modelgate.backends.llm.layers.linear import FusedLinear  # noqa: E402
from modelgate.backends.llm.model_runner import ModelRunner, RunnerConfig  # noqa: E402
from modelgate.backends.llm.models.model_config import DecoderConfig  # noqa: E402
from modelgate.backends.llm.request import LLMRequest  # noqa: E402
from modelgate.backends.llm.sampling_params import SamplingParams  # noqa: E402
from modelgate.backends.llm.scheduler import ScheduledRequest  # noqa: E402
from tests.backends.llm.hf_checkpoints import save_random_checkpoint  # noqa: E402
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint  # noqa: E402

CUDA = torch.cuda.is_available()
NUM_BLOCKS, BLOCK_SIZE = 32, 4
PROMPT_LENS = (19, 11, 6)
NUM_DECODES = 3  # the last tokens of each prompt go through decode steps (teacher forcing)
MAX_RELATIVE_ERROR, MIN_TOP1_AGREEMENT = 0.1, 0.9
FP8_LINEARS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_random_checkpoint("LlamaForCausalLM", tmp_path_factory.mktemp("fp8"), intermediate_size=128)


# The float32 tests run where the kernels run: on the GPU when there is one, else under the interpreter.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _runner(directory, device=DEVICE, dtype="float32", backend="triton", **settings) -> ModelRunner:
    config = DecoderConfig.from_file(directory / "config.json")
    return ModelRunner(
        directory,
        config,
        RunnerConfig(
            device=device,
            dtype=dtype,
            num_kv_blocks=NUM_BLOCKS,
            block_size=BLOCK_SIZE,
            max_model_len=64,
            show_progress=False,
            attention_backend=backend,
            **settings,
        ),
    )


def _prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(5)
    return [torch.randint(0, 211, (n,), generator=generator).tolist() for n in PROMPT_LENS]


def _all_logits(runner: ModelRunner, prompts: list[list[int]]) -> torch.Tensor:
    """float32 logits of every position of every prompt [sum of lengths, vocab]: one batched prefill step of
    all but the last NUM_DECODES tokens, then NUM_DECODES batched decode steps."""
    kv = KVCacheManager(NUM_BLOCKS, BLOCK_SIZE, enable_prefix_caching=False)
    requests = [LLMRequest(f"r{i}", tokens, SamplingParams()) for i, tokens in enumerate(prompts)]
    rows = {request.request_id: [] for request in requests}
    for step in range(NUM_DECODES + 1):
        items = []
        for request in requests:
            start = request.num_computed_tokens
            count = request.num_prompt_tokens - NUM_DECODES if step == 0 else 1
            assert kv.allocate_slots(request, count)
            items.append(ScheduledRequest(request, start, count, kv.block_ids(request.request_id)))
        inputs = runner._prepare(items)
        with torch.inference_mode():
            hidden = runner.model(
                inputs.token_ids, inputs.positions, runner.kv_caches, inputs.metadata, runner.kv_scales
            )
            logits = runner.model.compute_logits(hidden).float().cpu()
        starts = inputs.metadata.query_start_cpu
        for i, item in enumerate(items):
            rows[item.request.request_id].append(logits[starts[i] : starts[i + 1]])
            item.request.num_computed_tokens = item.num_computed_tokens + item.num_new_tokens
    return torch.cat([torch.cat(rows[r.request_id]) for r in requests])


def _agreement(got: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(relative error of the logits, top-1 agreement over all positions)."""
    relative = ((got - expected).norm() / expected.norm()).item()
    top1 = (got.argmax(-1) == expected.argmax(-1)).float().mean().item()
    return relative, top1


@pytest.fixture(scope="module")
def reference_logits(checkpoint):
    return _all_logits(_runner(checkpoint, backend="torch"), _prompts())


@pytest.mark.parametrize("quantization, kv_cache_dtype", [("fp8", "auto"), ("none", "fp8"), ("fp8", "fp8")])
def test_fp8_logits_close_to_unquantized(checkpoint, reference_logits, quantization, kv_cache_dtype):
    runner = _runner(checkpoint, quantization=quantization, kv_cache_dtype=kv_cache_dtype)
    got = _all_logits(runner, _prompts())
    relative, top1 = _agreement(got, reference_logits)
    print(
        f"quantization={quantization} kv_cache_dtype={kv_cache_dtype}: relative error {relative:.4f}, "
        f"top-1 agreement {top1:.3f} over {got.shape[0]} positions"
    )
    assert relative < MAX_RELATIVE_ERROR and top1 >= MIN_TOP1_AGREEMENT
    assert relative > 0  # something was quantized
    if kv_cache_dtype == "fp8":
        assert all(c.dtype == torch.float8_e4m3fn for c in runner.kv_caches)
        assert len(runner.kv_scales) == len(runner.kv_caches)
        scales = runner.kv_scales[0]
        assert scales.shape == (2, NUM_BLOCKS, BLOCK_SIZE, 2) and scales.dtype == torch.float32
    else:
        assert runner.kv_scales is None and runner.kv_caches[0].dtype == torch.float32


def test_fp8_weights_replace_attention_and_mlp_linears_only(checkpoint):
    runner = _runner(checkpoint, backend="torch", quantization="fp8")
    model = runner.model
    for layer in model.layers:
        for path in FP8_LINEARS:
            linear = layer.get_submodule(path)
            assert isinstance(linear, Fp8Linear)
            assert linear.weight.dtype == torch.float8_e4m3fn and linear.weight_scale.dtype == torch.float32
            assert linear.weight_scale.shape == (linear.weight.shape[0],) and (linear.weight_scale > 0).all()
    assert not any(isinstance(m, FusedLinear) for m in model.modules())  # the originals are gone
    assert model.embed_tokens.weight.dtype == torch.float32 and model.lm_head_weight.dtype == torch.float32
    assert model.norm.weight.dtype == torch.float32
    # Without runnable kernels (a CPU without the interpreter) Fp8Linear uses the torch reference: same result.
    down = model.layers[0].mlp.down_proj
    x = torch.randn(5, down.weight.shape[1], generator=torch.Generator().manual_seed(1)).to(down.weight.device)
    with torch.inference_mode():
        kernel = down(x)
        down.use_kernels = False
        torch.testing.assert_close(down(x), kernel, atol=1e-5, rtol=1e-5)
        down.use_kernels = True
    reference = _all_logits(_runner(checkpoint, backend="torch"), _prompts())
    relative, top1 = _agreement(_all_logits(runner, _prompts()), reference)
    assert relative < MAX_RELATIVE_ERROR and top1 >= MIN_TOP1_AGREEMENT


def _save_fp8_checkpoint(source, directory):
    """`source` with every attention/MLP projection as float8_e4m3fn + weight_scale: q_proj per-tensor (shape
    []), k/v per-channel [N, 1], the rest per-channel [N]; plus ignored static input_scale tensors."""
    import shutil

    directory.mkdir()
    for path in source.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, directory / path.name)
    tensors = {}
    for path in source.glob("*.safetensors"):
        tensors.update(load_file(path))
    out = {}
    for name, tensor in tensors.items():
        if not name.endswith("proj.weight"):
            out[name] = tensor
            continue
        prefix = name[: -len(".weight")]
        if name.endswith("q_proj.weight"):
            scale = tensor.abs().amax() / 448.0
            out[name] = (tensor / scale).to(torch.float8_e4m3fn)
            out[prefix + ".weight_scale"] = scale.reshape(())
        else:
            scale = tensor.abs().amax(dim=1, keepdim=True) / 448.0
            out[name] = (tensor / scale).to(torch.float8_e4m3fn)
            kv = name.endswith(("k_proj.weight", "v_proj.weight"))
            out[prefix + ".weight_scale"] = scale if kv else scale.reshape(-1)
        out[prefix + ".input_scale"] = torch.tensor(1.0)
    save_file(out, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory, out


def test_fp8_checkpoint_loads_as_it_is(checkpoint, reference_logits, tmp_path):
    directory, tensors = _save_fp8_checkpoint(checkpoint, tmp_path / "fp8_checkpoint")
    runner = _runner(directory, quantization="none")  # an FP8 checkpoint is FP8 whatever the setting
    assert runner.quantization == "fp8"
    qkv = runner.model.layers[1].self_attn.qkv_proj
    assert isinstance(qkv, Fp8Linear)
    q_rows, k_rows = qkv.part_slice(0), qkv.part_slice(1)
    q_weight = tensors["model.layers.1.self_attn.q_proj.weight"]
    assert torch.equal(qkv.weight.data[q_rows].cpu().view(torch.uint8), q_weight.view(torch.uint8))
    q_scale = tensors["model.layers.1.self_attn.q_proj.weight_scale"]
    assert torch.equal(qkv.weight_scale.data[q_rows].cpu(), q_scale.expand(q_weight.shape[0]))
    k_scale = tensors["model.layers.1.self_attn.k_proj.weight_scale"]
    assert torch.equal(qkv.weight_scale.data[k_rows].cpu(), k_scale.reshape(-1))
    relative, top1 = _agreement(_all_logits(runner, _prompts()), reference_logits)
    assert relative < MAX_RELATIVE_ERROR and top1 >= MIN_TOP1_AGREEMENT


def test_fp8_checkpoint_with_block_scales_is_refused(checkpoint, tmp_path):
    directory, tensors = _save_fp8_checkpoint(checkpoint, tmp_path / "blocks")
    tensors["model.layers.0.mlp.down_proj.weight_scale"] = torch.ones(2, 2)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="block-wise"):
        _runner(directory, backend="torch")


def test_fp8_settings_are_validated(checkpoint):
    assert EngineConfig().quantization == "none" and EngineConfig().kv_cache_dtype == "auto"
    with pytest.raises(ValueError):
        EngineConfig(quantization="int4")
    with pytest.raises(ValueError):
        EngineConfig(kv_cache_dtype="fp16")
    with pytest.raises(ValueError, match="kv_cache_dtype 'fp8' needs attention_backend 'triton'"):
        _runner(checkpoint, backend="torch", kv_cache_dtype="fp8")
    if not CUDA:  # "auto" resolves to torch on the CPU
        with pytest.raises(ValueError, match="needs attention_backend 'triton'"):
            _runner(checkpoint, backend="auto", kv_cache_dtype="fp8")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_fp8"), intermediate_size=128)


def _greedy(directory, device: str, dtype: str, **settings) -> dict[str, list[int]]:
    options = dict(device=device, dtype=dtype, num_kv_blocks=64, block_size=4, max_model_len=128, show_progress=False)
    options.update(settings)
    engine = LLMEngine(directory, EngineConfig(**options))
    words = ["quick brown fox", "lazy dog", "stitch in time saves", "apple a day", "café naïve", "日本語 テキスト"]
    greedy = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    for i, text in enumerate(words):
        engine.add_request(f"p{i}", engine.tokenizer.encode(text), greedy)
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished:
        for output in engine.step():
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
    return tokens


def _check_greedy_agreement(directory, device: str, dtype: str, reference_backend: str):
    reference = _greedy(directory, device, dtype, attention_backend=reference_backend)
    fp8 = _greedy(directory, device, dtype, attention_backend="triton", quantization="fp8", kv_cache_dtype="fp8")
    first = sum(fp8[r][0] == reference[r][0] for r in reference) / len(reference)
    first_three = sum(fp8[r][:3] == reference[r][:3] for r in reference) / len(reference)
    all_six = sum(fp8[r] == reference[r] for r in reference) / len(reference)
    print(
        f"greedy FP8 vs unquantized on {device} {dtype}: first token agrees for {first:.0%} of prompts, "
        f"first 3 tokens for {first_three:.0%}, all 6 for {all_six:.0%}"
    )
    assert first >= 0.8 and first_three >= 0.5


def test_fp8_engine_greedy_agrees_with_unquantized(tiny):
    _check_greedy_agreement(tiny, DEVICE, "float32", "torch")


@pytest.mark.gpu
def test_fp8_on_cuda_bf16(checkpoint, tiny):
    reference = _all_logits(_runner(checkpoint, device="cuda", dtype="bfloat16"), _prompts())
    for quantization, kv_cache_dtype in [("fp8", "auto"), ("none", "fp8"), ("fp8", "fp8")]:
        runner = _runner(
            checkpoint, device="cuda", dtype="bfloat16", quantization=quantization, kv_cache_dtype=kv_cache_dtype
        )
        relative, top1 = _agreement(_all_logits(runner, _prompts()), reference)
        print(f"cuda bf16 {quantization}/{kv_cache_dtype}: relative error {relative:.4f}, top-1 {top1:.3f}")
        assert relative < MAX_RELATIVE_ERROR and top1 >= MIN_TOP1_AGREEMENT
    _check_greedy_agreement(tiny, "cuda", "bfloat16", "triton")
