"""Fresh prefills through a FlashAttention-style varlen call (attention/fresh_prefill.py), everything else on the
paged kernel: the logits of every step equal the paged kernel's alone, and the dense call sees exactly the fresh
sequences. A plain-torch stand-in takes torch's `varlen_attn` place on the CPU (torch's needs CUDA).
"""

import inspect
import itertools
import logging
from types import SimpleNamespace

import pytest
import torch

from modelgate.backends.llm.attention import fresh_prefill  # imports no kernel: before the interpreter is set
from modelgate.backends.llm.attention.fresh_prefill import SequenceRun, sequence_runs
from modelgate.backends.llm.attention.varlen_check import TRIAL_LENGTHS, dense_causal_reference
from tests.backends.llm import test_triton_attention as schedules  # sets the Triton interpreter up (CPU)
from tests.backends.llm.hf_checkpoints import save_random_checkpoint

TRIAL = [0, *itertools.accumulate(TRIAL_LENGTHS)]


class ReferenceVarlen:
    """torch's varlen_attn contract in plain torch, recording the sequence bounds of each call.

    `windowed`: the torch >= 2.11 signature (window_size, enable_gqa); otherwise torch 2.10's (is_causal).
    `native_gqa`: fewer K/V heads than query heads are taken without `enable_gqa`, as FlashAttention's kernel
    does; otherwise they are refused unless the flag says so. `kv_heads` records each call's K/V head count."""

    def __init__(self, windowed: bool = True, native_gqa: bool = False):
        self.calls: list[list[int]] = []
        self.kv_heads: list[int] = []
        self.native_gqa = native_gqa
        self.__signature__ = inspect.signature(self._windowed if windowed else self._causal_only)

    def _windowed(
        self, query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False
    ):
        raise NotImplementedError  # only its signature is used

    def _causal_only(self, query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, is_causal=False):
        raise NotImplementedError

    def __call__(
        self,
        query,
        key,
        value,
        cu_seq_q,
        cu_seq_k,
        max_q,
        max_k,
        *,
        scale=None,
        window_size=None,
        is_causal=False,
        enable_gqa=False,
    ):
        bounds = cu_seq_q.tolist()
        assert bounds == cu_seq_k.tolist() and bounds[0] == 0 and bounds[-1] == query.shape[0]
        assert max_q == max_k == max(b - a for a, b in zip(bounds, bounds[1:]))
        if key.shape[1] != query.shape[1] and not (enable_gqa or self.native_gqa):
            raise RuntimeError("number of heads in key/value must equal the number of heads in query")
        assert is_causal or window_size[1] == 0
        self.calls.append(bounds)
        self.kv_heads.append(key.shape[1])
        window = None if window_size is None or window_size[0] < 0 else window_size[0] + 1
        return dense_causal_reference(query, key, value, bounds, scale, window)


def test_sequence_runs_group_contiguous_fresh_and_cached_sequences():
    # fresh (3 of 3), cached (decode at context 9), cached (chunk 4 over 6), fresh (2 of 2), fresh (1 of 1)
    runs = sequence_runs([0, 3, 4, 8, 10, 11], [3, 9, 10, 2, 1])
    assert runs == [SequenceRun(0, 1, True), SequenceRun(1, 3, False), SequenceRun(3, 5, True)]
    assert sequence_runs([0, 1], [5]) == [SequenceRun(0, 1, False)]
    assert sequence_runs([0], []) == []


def _with_varlen(runner, varlen) -> None:
    for layer in runner.model.layers:
        layer.self_attn.attention_impl.varlen_attn = varlen


def _assert_logits_of_the_paged_kernel(runner, paged) -> None:
    """The schedule's logits through `runner` are those through `paged` (the paged kernel alone), to 1e-4."""
    got = schedules._run_schedule(runner, schedules._prompts())
    for index, (ours, theirs) in enumerate(zip(got, schedules._run_schedule(paged, schedules._prompts()))):
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], atol=1e-4, rtol=1e-4, msg=f"step {index} {name}")


@pytest.mark.parametrize("architecture, overrides", schedules.CASES)
def test_fresh_prefills_through_varlen_give_the_paged_kernels_logits(tmp_path, monkeypatch, architecture, overrides):
    monkeypatch.setattr(fresh_prefill, "FLASH_DTYPES", (torch.float32,))  # the stand-in computes in fp32
    directory = save_random_checkpoint(architecture, tmp_path, **overrides)
    prompts = schedules._prompts()
    paged, dense = (schedules._runner(directory, "triton") for _ in range(2))
    _with_varlen(paged, None)
    varlen = ReferenceVarlen()
    _with_varlen(dense, varlen)
    expected = schedules._run_schedule(paged, prompts)
    got = schedules._run_schedule(dense, prompts)
    for index, (ours, theirs) in enumerate(zip(got, expected)):
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], atol=1e-4, rtol=1e-4, msg=f"step {index} {name}")
    # The trial before first use (varlen_check.py), then fresh sequences only, one call per layer for each step
    # that has any: step 0 (a's first chunk, 9 tokens), step 1 (b, 10 tokens, after a's chunk over its cache),
    # step 3 (d's first chunk, 5 tokens, after two decodes), step 4 (c, 7 tokens, before decode, chunk, decode).
    layers = len(dense.model.layers)
    fresh = [[0, 9]] * layers + [[0, 10]] * layers + [[0, 5]] * layers + [[0, 7]] * layers
    assert varlen.calls == [TRIAL] + fresh


def test_a_window_the_varlen_call_cannot_apply_leaves_everything_to_the_paged_kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(fresh_prefill, "FLASH_DTYPES", (torch.float32,))
    directory = save_random_checkpoint("MistralForCausalLM", tmp_path, sliding_window=6)
    prompts = schedules._prompts()
    paged, causal_only = (schedules._runner(directory, "triton") for _ in range(2))
    _with_varlen(paged, None)
    varlen = ReferenceVarlen(windowed=False)
    _with_varlen(causal_only, varlen)
    for ours, theirs in zip(schedules._run_schedule(causal_only, prompts), schedules._run_schedule(paged, prompts)):
        for name in theirs:
            assert torch.equal(ours[name], theirs[name])
    assert varlen.calls == []
    assert causal_only.model.layers[0].self_attn.attention_impl.varlen_attn is None


@pytest.mark.parametrize("native_gqa", [True, False])
def test_a_causal_only_varlen_call_takes_fresh_prefills_without_a_window(tmp_path, monkeypatch, caplog, native_gqa):
    # torch 2.10-2.12's call has no enable_gqa. One that takes 2 K/V heads for 4 query heads gets them as they are;
    # one that refuses them fails its first trial quietly and gets each K/V head repeated, after a second trial.
    monkeypatch.setattr(fresh_prefill, "FLASH_DTYPES", (torch.float32,))
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)  # 4 query heads, 2 K/V heads
    paged, runner = (schedules._runner(directory, "triton") for _ in range(2))
    _with_varlen(paged, None)
    varlen = ReferenceVarlen(windowed=False, native_gqa=native_gqa)
    _with_varlen(runner, varlen)
    with caplog.at_level(logging.INFO, logger="modelgate.backends.llm.attention.varlen_check"):
        _assert_logits_of_the_paged_kernel(runner, paged)
    assert len(varlen.calls) == 1 + 4 * len(runner.model.layers)  # steps 0, 1, 3 and 4 have fresh sequences
    assert set(varlen.kv_heads) == {2 if native_gqa else 4}
    assert ("try K/V heads repeated" in caplog.text) != native_gqa
    assert "stay on the paged kernel" not in caplog.text


class BrokenVarlen(ReferenceVarlen):
    """A varlen call that raises (`fails`), or attends across the sequences' boundaries (ignores cu_seq):
    what a torch whose call differs from the one fresh_prefill.py expects could do."""

    def __init__(self, fails: bool):
        super().__init__()
        self.fails = fails

    def __call__(self, query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **options):
        self.calls.append(cu_seq_q.tolist())
        if self.fails:
            raise RuntimeError("FlashAttention only supports Ampere GPUs or newer")
        bounds = cu_seq_q.tolist()
        return dense_causal_reference(query, key, value, [0, bounds[-1]], options["scale"], window=bounds[-1] * 2)


@pytest.mark.parametrize("fails", [True, False])
def test_a_varlen_call_that_fails_its_trial_costs_speed_not_answers(tmp_path, monkeypatch, caplog, fails):
    monkeypatch.setattr(fresh_prefill, "FLASH_DTYPES", (torch.float32,))
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    prompts = schedules._prompts()
    paged, broken = (schedules._runner(directory, "triton") for _ in range(2))
    _with_varlen(paged, None)
    varlen = BrokenVarlen(fails)
    _with_varlen(broken, varlen)
    with caplog.at_level(logging.WARNING, logger="modelgate.backends.llm.attention.varlen_check"):
        for ours, theirs in zip(schedules._run_schedule(broken, prompts), schedules._run_schedule(paged, prompts)):
            for name in theirs:
                assert torch.equal(ours[name], theirs[name])
    assert varlen.calls == [TRIAL]  # tried once, then never called again
    assert "fresh prefills stay on the paged kernel" in caplog.text
    assert ("Ampere" if fails else "differs from plain torch") in caplog.text


def test_dtypes_flash_attention_does_not_compute_stay_on_the_paged_kernel(tmp_path):
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    runner = schedules._runner(directory, "triton")  # float32
    varlen = ReferenceVarlen()
    _with_varlen(runner, varlen)
    schedules._run_schedule(runner, schedules._prompts())
    assert varlen.calls == []


class ReferenceDense:
    """torch's scaled_dot_product_attention(q, k, v, is_causal=True, scale, enable_gqa) in plain torch, for one
    sequence ([1, heads, n, d]), recording each call's length; `fails`: it raises, as a cuDNN that cannot run."""

    def __init__(self, fails: bool = False):
        self.lengths: list[int] = []
        self.layouts: list[tuple] = []  # each call's (shape, strides) of q, k and v: what a cuDNN graph is built for
        self.fails = fails

    def __call__(self, q, k, v, *, scale, enable_gqa):
        assert q.shape[0] == 1 and enable_gqa == (k.shape[1] != q.shape[1])
        self.lengths.append(q.shape[2])
        self.layouts.append(tuple((tuple(t.shape), t.stride()) for t in (q, k, v)))
        if self.fails:
            raise RuntimeError("No available kernel: cuDNN attention needs sm80 or newer")
        heads_first = [t[0].transpose(0, 1) for t in (q, k, v)]
        return dense_causal_reference(*heads_first, [0, q.shape[2]], scale, None).transpose(0, 1).unsqueeze(0)


def _with_dense(runner, dense) -> None:
    for layer in runner.model.layers:
        layer.self_attn.attention_impl.dense_attn = dense


def test_long_fresh_sequences_go_to_the_dense_call_alone_and_the_logits_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(fresh_prefill, "FLASH_DTYPES", (torch.float32,))
    monkeypatch.setattr(fresh_prefill, "DENSE_MIN_TOKENS", 8)  # the schedule's 9- and 10-token prompts are long
    monkeypatch.setattr(fresh_prefill, "DENSE_BUCKET_TOKENS", 4)  # ... and padded with zero rows to 12 tokens
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)  # 4 query heads, 2 K/V heads
    paged, runner = (schedules._runner(directory, "triton") for _ in range(2))
    _with_varlen(paged, None)
    varlen, dense = ReferenceVarlen(), ReferenceDense()
    _with_varlen(runner, varlen)
    _with_dense(runner, dense)
    _assert_logits_of_the_paged_kernel(runner, paged)
    # The trial (5, 150 and 8 + 3 tokens: the short one in the varlen call, the others alone in the dense one,
    # padded to 152 and 12), then per layer: a (9 tokens) and b (10) dense as 12, d (5) and c (7) in the varlen
    # call. The logits above are those of the unpadded attention.
    layers = len(runner.model.layers)
    assert dense.lengths == [152, 12] + [12] * layers + [12] * layers
    assert varlen.calls == [[0, 5]] + [[0, 5]] * layers + [[0, 7]] * layers


def test_a_dense_call_that_fails_its_trial_leaves_every_fresh_sequence_to_the_varlen_call(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(fresh_prefill, "FLASH_DTYPES", (torch.float32,))
    monkeypatch.setattr(fresh_prefill, "DENSE_MIN_TOKENS", 8)
    monkeypatch.setattr(fresh_prefill, "DENSE_BUCKET_TOKENS", 1)
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    paged, runner = (schedules._runner(directory, "triton") for _ in range(2))
    _with_varlen(paged, None)
    varlen, dense = ReferenceVarlen(), ReferenceDense(fails=True)
    _with_varlen(runner, varlen)
    _with_dense(runner, dense)
    with caplog.at_level(logging.INFO, logger="modelgate.backends.llm.attention.varlen_check"):
        _assert_logits_of_the_paged_kernel(runner, paged)
    assert dense.lengths == [150]  # its trial only
    assert varlen.calls[:2] == [[0, 5], TRIAL] and len(varlen.calls) == 2 + 4 * len(runner.model.layers)
    assert "fresh prefills try without the dense call" in caplog.text and "sm80" in caplog.text
    assert "stay on the paged kernel" not in caplog.text


def test_dense_bucket_lengths_cover_every_long_sequence_up_to_the_bound():
    assert fresh_prefill.dense_bucket_lengths(fresh_prefill.DENSE_MIN_TOKENS - 1) == []
    assert fresh_prefill.dense_bucket_lengths(512) == [512]
    assert fresh_prefill.dense_bucket_lengths(1100) == [512, 768, 1024, 1280]
    # A long context does not make the warm-up longer: sequences past DENSE_MAX_TOKENS stay in the varlen call.
    assert fresh_prefill.dense_bucket_lengths(131072) == fresh_prefill.dense_bucket_lengths(16384)
    assert len(fresh_prefill.dense_bucket_lengths(131072)) == 63


def test_sequences_past_the_dense_bound_stay_with_the_varlen_call(monkeypatch):
    monkeypatch.setattr(fresh_prefill, "DENSE_MIN_TOKENS", 8)
    monkeypatch.setattr(fresh_prefill, "DENSE_MAX_TOKENS", 12)
    bounds = [0, 3, 13, 25, 30]  # 3, 10, 12 and 5 tokens: the middle two within the bounds
    pieces = list(fresh_prefill.long_sequences_apart(bounds, SequenceRun(0, 4, True)))
    assert pieces == [
        (SequenceRun(0, 1, True), False),
        (SequenceRun(1, 2, True), True),
        (SequenceRun(2, 3, True), True),
        (SequenceRun(3, 4, True), False),
    ]
    longer = [0, 13, 16]  # 13 tokens: past the bound, with the short one after it
    assert list(fresh_prefill.long_sequences_apart(longer, SequenceRun(0, 2, True))) == [
        (SequenceRun(0, 2, True), False)
    ]


def test_warmed_buckets_hold_the_layout_of_every_long_sequence_a_step_gives(monkeypatch):
    """A cuDNN graph is built per shape and strides: warm_dense_buckets must call the dense attention with those
    of every sequence `attend` sends it later, whether its length needs padding (9, 17) or not (12)."""
    monkeypatch.setattr(fresh_prefill, "DENSE_MIN_TOKENS", 8)
    monkeypatch.setattr(fresh_prefill, "DENSE_BUCKET_TOKENS", 4)
    dense = ReferenceDense()
    attention = fresh_prefill.FreshPrefillAttention(ReferenceVarlen(), 4, 2, 0.5, None, dense_attn=dense)
    assert attention.warm_dense_buckets(17, 8, torch.float32, torch.device("cpu")) == 4
    warmed = set(dense.layouts)
    assert dense.lengths == [8, 12, 16, 20] and len(warmed) == 4
    bounds = [0, 9, 21, 38, 41]  # 9, 12 and 17 tokens go to the dense call, the last 3 to the varlen call
    qkv = torch.randn(bounds[-1], 4 + 2 + 2, 8, generator=torch.Generator().manual_seed(0))
    q, k, v = qkv.split([4, 2, 2], dim=1)  # strided views, as the engine's qkv projection gives them
    out = torch.empty_like(q)
    attention.attend(q, k, v, torch.tensor(bounds), bounds, SequenceRun(0, 4, True), out)
    assert dense.lengths[4:] == [12, 12, 20]
    assert set(dense.layouts[4:]) <= warmed
    torch.testing.assert_close(out, dense_causal_reference(q, k, v, bounds, 0.5, None))


@pytest.mark.parametrize("fails", [False, True])
def test_the_attention_backend_warms_the_dense_call_after_its_trial(monkeypatch, fails):
    """TritonPagedAttention.warm_up_fresh_prefills (model_runner.warm_up calls it): the trial first, then one call
    per padded length; none where the dense call failed its trial and the varlen call took over."""
    from modelgate.backends.llm.attention.triton_paged import TritonPagedAttention

    monkeypatch.setattr(fresh_prefill, "FLASH_DTYPES", (torch.float32,))
    monkeypatch.setattr(fresh_prefill, "DENSE_MIN_TOKENS", 8)
    monkeypatch.setattr(fresh_prefill, "DENSE_BUCKET_TOKENS", 4)
    attention = TritonPagedAttention(4, 2, 8, None, "cpu")
    dense = ReferenceDense(fails=fails)
    attention.varlen_attn, attention.dense_attn = ReferenceVarlen(), dense
    assert attention.warm_up_fresh_prefills(17, torch.float32, torch.device("cpu")) == (0 if fails else 4)
    # The trial's long sequences came first (150 tokens, padded to 152, ...); a failing call saw its first only.
    assert dense.lengths[0] == 152
    if fails:
        assert dense.lengths == [152]
    else:
        assert dense.lengths[-4:] == [8, 12, 16, 20]


def test_the_cudnn_prefill_attention_parameter_reaches_the_attention(monkeypatch):
    """config.pbtxt's `cudnn_prefill_attention` (EngineConfig) -> RunnerConfig -> make_attention: the Triton
    attention takes cuDNN's dense call where it has a varlen call (CUDA); elsewhere nothing changes."""
    from modelgate.backends.llm.attention import triton_paged
    from modelgate.backends.llm.engine import runner_config
    from modelgate.backends.llm.engine_config import EngineConfig
    from modelgate.backends.llm.runner_config import make_attention

    config = EngineConfig.model_validate({"cudnn_prefill_attention": "true"})
    assert runner_config(config, 256, "cpu").cudnn_prefill_attention is True
    assert runner_config(EngineConfig(), 256, "cpu").cudnn_prefill_attention is False
    with pytest.raises(ValueError, match="cudnn_prefill_attention"):
        EngineConfig.model_validate({"cudnn_prefill_attention": "sometimes"})
    dense = ReferenceDense()
    monkeypatch.setattr(triton_paged, "torch_cudnn_attn", lambda: dense)
    model = SimpleNamespace(num_heads=4, num_kv_heads=2, head_dim=8, sliding_window=None)  # what it reads
    cpu = torch.device("cpu")
    assert make_attention("triton", model, cpu, cudnn_prefill=True).dense_attn is None  # no varlen call here
    monkeypatch.setattr(triton_paged.TritonPagedAttention, "varlen_attn", ReferenceVarlen())  # as on CUDA
    assert make_attention("triton", model, cpu, cudnn_prefill=True).dense_attn is dense
    assert make_attention("triton", model, cpu).dense_attn is None


@pytest.mark.gpu
@pytest.mark.parametrize("kv_cache_dtype", ["auto", "fp8"])
def test_torch_varlen_attn_gives_the_paged_kernels_logits_on_cuda(tmp_path, kv_cache_dtype):
    """The real thing: torch's FlashAttention for fresh prefills, bf16, against the paged kernel alone (which
    reads K/V back from the cache: FP8 there, hence the wider tolerance)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    prompts = schedules._prompts()
    paged, dense = (schedules._runner(directory, "triton", "bfloat16", kv_cache_dtype) for _ in range(2))
    assert dense.model.layers[0].self_attn.attention_impl.varlen_attn is not None  # torch has it here
    _with_varlen(paged, None)
    tolerance = 5e-2 if kv_cache_dtype == "fp8" else 2e-2
    for index, (ours, theirs) in enumerate(
        zip(schedules._run_schedule(dense, prompts), schedules._run_schedule(paged, prompts))
    ):
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], atol=tolerance, rtol=tolerance, msg=f"step {index}")


@pytest.mark.gpu
def test_long_fresh_prefills_through_cudnn_give_the_paged_kernels_logits_on_cuda(tmp_path, monkeypatch):
    """The real thing: torch's cuDNN attention for the schedule's fresh prompts (made long enough for it), bf16,
    against the paged kernel alone."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from modelgate.backends.llm.attention.triton_paged import TritonPagedAttention

    monkeypatch.setattr(TritonPagedAttention, "long_prefills_on_cudnn", True)
    monkeypatch.setattr(fresh_prefill, "DENSE_MIN_TOKENS", 8)  # padded to DENSE_BUCKET_TOKENS, as in serving
    directory = save_random_checkpoint("LlamaForCausalLM", tmp_path)
    prompts = schedules._prompts()
    paged, dense = (schedules._runner(directory, "triton", "bfloat16", "auto") for _ in range(2))
    assert dense.model.layers[0].self_attn.attention_impl.dense_attn is fresh_prefill.cudnn_causal_attention
    _with_varlen(paged, None)
    for index, (ours, theirs) in enumerate(
        zip(schedules._run_schedule(dense, prompts), schedules._run_schedule(paged, prompts))
    ):
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], atol=2e-2, rtol=2e-2, msg=f"step {index}")
    assert dense.model.layers[0].self_attn.attention_impl._fresh.dense_attn is fresh_prefill.cudnn_causal_attention
