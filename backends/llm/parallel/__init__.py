"""Tensor parallelism for the LLM engine: one process per rank, the scheduler on rank 0 (see state.py)."""
