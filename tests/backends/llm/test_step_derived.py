"""A step's layers share what attention works out from its sequences (attention/step_derived.py): the paged runs'
launch pieces, bounds and table views (triton_paged.py) and the fresh runs' pieces and varlen bounds
(fresh_prefill.py) are derived for the first layer that asks and kept in AttentionMetadata.derived."""

import torch

from tests.backends.llm.triton_interpreter import interpret_kernels_without_cuda  # noqa: E402

interpret_kernels_without_cuda()

import modelgate.backends.llm.attention.triton_paged as triton_paged  # noqa: E402
from modelgate.backends.llm.attention import fresh_prefill  # noqa: E402
from modelgate.backends.llm.attention.fresh_prefill import SequenceRun  # noqa: E402
from modelgate.backends.llm.attention.metadata import AttentionMetadata  # noqa: E402
from modelgate.backends.llm.attention.step_derived import once_per_step  # noqa: E402
from modelgate.backends.llm.attention.varlen_check import dense_causal_reference  # noqa: E402
from tests.backends.llm.test_fresh_prefill import ReferenceDense, ReferenceVarlen  # noqa: E402


def test_once_per_step_keeps_what_it_derived_for_the_step_only():
    calls = []

    def derive(value):
        calls.append(value)
        return [value]

    derived = {}
    first = once_per_step(derived, "key", derive, 1)
    assert once_per_step(derived, "key", derive, 2) is first and calls == [1]  # kept: not derived again
    assert once_per_step(derived, "other", derive, 3) == [3]
    assert once_per_step(None, "key", derive, 4) == [4] and once_per_step(None, "key", derive, 5) == [5]
    assert calls == [1, 3, 4, 5]  # without a step's dict, derived every time


def test_a_runs_pieces_and_bounds_are_derived_once_per_step():
    """Every layer of a step asks for the same run's pieces, the bounds of its launches and their views of the
    step's tables: each is derived once per step (metadata.derived)."""

    def step_metadata():
        empty = torch.zeros(0, dtype=torch.int32)
        query_start, context_lens = [0, 1, 6, 7], [9, 30, 20]
        tensor = torch.tensor
        block_tables = torch.zeros(3, 2, dtype=torch.int32)
        return AttentionMetadata(
            empty, tensor(query_start), tensor(context_lens), block_tables, query_start, context_lens, 30, False
        )

    calls = []

    def counted(derive):
        def derive_and_count(run, source):
            calls.append((derive.__name__, run))
            return derive(run, source)

        derive_and_count.__name__ = derive.__name__  # the cache's key, as for the real one
        return derive_and_count

    tile_parts = counted(triton_paged.tile_parts)
    longest_query, longest_context = counted(triton_paged.longest_query), counted(triton_paged.longest_context)
    first, second = step_metadata(), step_metadata()
    whole, tail = SequenceRun(0, 3, False), SequenceRun(2, 3, False)
    pieces = [triton_paged._per_step(first, tile_parts, whole, first.query_start_cpu) for _layer in range(4)]
    assert pieces[0] == [SequenceRun(0, 1, False), SequenceRun(1, 2, False), SequenceRun(2, 3, False)]
    assert all(p is pieces[0] for p in pieces)
    for _layer in range(4):
        assert triton_paged._per_step(first, longest_query, whole, first.query_start_cpu) == 5
        assert triton_paged._per_step(first, longest_context, whole, first.context_lens_cpu) == 30
        assert triton_paged._per_step(first, longest_context, tail, first.context_lens_cpu) == 20
        assert triton_paged._per_step(first, longest_query, tail, first.query_start_cpu) == 1
    run_tables = counted(triton_paged.run_tables)
    tables = [triton_paged._per_step(first, run_tables, tail, first) for _layer in range(4)]
    assert all(t is tables[0] for t in tables)
    block_tables, query_start, context_lens = tables[0]
    assert (block_tables.shape[0], query_start.shape[0], context_lens.shape[0]) == (1, 2, 1)
    assert block_tables.data_ptr() == first.block_tables[2:].data_ptr()  # views of the step's tensors
    triton_paged._per_step(second, tile_parts, whole, second.query_start_cpu)  # the next step
    assert calls == [
        ("tile_parts", whole),
        ("longest_query", whole),
        ("longest_context", whole),
        ("longest_context", tail),
        ("longest_query", tail),
        ("run_tables", tail),
        ("tile_parts", whole),
    ]


def test_a_steps_layers_share_its_pieces_and_varlen_bounds(monkeypatch):
    """Every layer of a step attends the same fresh run: its pieces and each varlen call's bounds (rebased to the
    run's first row: a device op) are worked out for the first layer and kept in the step's `derived`."""
    monkeypatch.setattr(fresh_prefill, "DENSE_MIN_TOKENS", 8)
    worked_out = []

    def counted(derive):
        def derive_and_count(*arguments):
            worked_out.append(derive.__name__)
            return derive(*arguments)

        return derive_and_count

    for derive in (fresh_prefill._varlen_bounds, fresh_prefill.long_sequences_apart):
        monkeypatch.setattr(fresh_prefill, derive.__name__, counted(derive))
    varlen = ReferenceVarlen()
    attention = fresh_prefill.FreshPrefillAttention(varlen, 4, 2, 0.5, None, dense_attn=ReferenceDense())
    bounds = [0, 2, 5, 14, 17, 19]  # the run is sequences 1-4: 3 tokens, 9 (dense alone), 3, 2
    qkv = torch.randn(bounds[-1], 4 + 2 + 2, 8, generator=torch.Generator().manual_seed(0))
    q, k, v = qkv.split([4, 2, 2], dim=1)
    derived = {}
    for _layer in range(3):
        out = torch.zeros_like(q)
        attention.attend(q, k, v, torch.tensor(bounds), bounds, SequenceRun(1, 5, True), out, derived)
        run_rows = [0, *(b - bounds[1] for b in bounds[2:])]
        expected = dense_causal_reference(q[bounds[1] :], k[bounds[1] :], v[bounds[1] :], run_rows, 0.5, None)
        torch.testing.assert_close(out[bounds[1] :], expected)
    assert varlen.calls == [[0, 3], [0, 3, 5]] * 3  # the short pieces' bounds, from 0
    assert sorted(worked_out) == ["_varlen_bounds", "_varlen_bounds", "long_sequences_apart"]
