"""One step through this rank's pipeline stage, its sequences split into micro-batches that overlap.

Every rank runs this on the same step (the one rank 0 broadcast). For each micro-batch in turn a stage takes
its input (the tokens on the first stage; the previous stage's hidden states and residual elsewhere), runs its
layers and hands the result on without waiting (pipeline.py): while stage s + 1 works on micro-batch m, stage
s already works on m + 1. The last stage applies the final norm and the LM head to each micro-batch's sampled
rows, and once the last is done its tensor-parallel rank 0 sends them all, in scheduled order, to rank 0,
which receives them once all its own sends are issued: exactly the logits the single-process forward would
sample from. (Rank 0 samples only when the whole step is there, so sending the logits micro-batch by
micro-batch would gain nothing.)

Not pipelined across steps: rank 0 samples a step's tokens before it schedules the next, so the stages idle
at the ends of each step (fill and drain); the micro-batches shorten that idle time to 1 / micro-batches of
a stage's share of the step instead of all of it.
"""

from __future__ import annotations

import torch

from modelgate.backends.llm.parallel.micro_batches import split_micro_batches
from modelgate.backends.llm.parallel.pipeline import PipelineStage, Transfers
from modelgate.backends.llm.scheduler import ScheduledRequest
from modelgate.backends.llm.step_layout import StepInputs, StepLayout


@torch.inference_mode()
def forward_step(runner, stage: PipelineStage, scheduled: list[ScheduledRequest]) -> torch.Tensor | None:
    """On rank 0: float32 logits of the step's sampled rows [num_sampled, vocab] (None when it samples none);
    on the other ranks None, once their part of the step is done and sent."""
    batches = split_micro_batches(scheduled, stage.state.num_stages)
    layouts = [StepLayout.of(batch, runner.block_size) for batch in batches]
    sends = Transfers()
    logits = [_run_micro_batch(runner, stage, layout, sends) for layout in layouts]
    logits = [rows for rows in logits if rows is not None]
    num_sampled = sum(len(layout.sample_rows) for layout in layouts)
    # The logits go back once, after the last micro-batch: then every receive of hidden states on the last stage
    # comes before its one send, the order pipeline.py needs.
    if stage.sends_logits and logits:
        stage.send_logits(torch.cat(logits), sends)
    received = None
    if stage.state.is_driver and num_sampled:
        received = stage.receive_logits(num_sampled, runner.model.config.vocab_size, runner.device)
    sends.wait()
    return received


def _run_micro_batch(runner, stage: PipelineStage, layout: StepLayout, sends: Transfers) -> torch.Tensor | None:
    """Run one micro-batch through this stage and hand it on; on the last stage, its sampled rows' logits."""
    inputs = StepInputs.of(layout, runner.device)
    intermediate = None
    if not stage.is_first:
        hidden_size = runner.model_config.hidden_size
        intermediate = stage.receive_hidden(layout.num_tokens, hidden_size, runner.dtype, runner.device)
    output = runner.model(
        inputs.token_ids, inputs.positions, runner.kv_caches, inputs.metadata, runner.kv_scales, intermediate
    )
    if not stage.is_last:
        hidden, residual = output
        stage.send_hidden(hidden, residual, sends)
        return None
    if not layout.sample_rows:
        return None
    # Every tensor-parallel rank of the last stage computes the logits (their gather is a collective).
    return runner.model.compute_logits(output.index_select(0, layout.sample_index(runner.device)))
