"""Tensor parallelism for the LLM engine: one process per rank, the scheduler on rank 0 (see state.py)."""

# The engine process exits with this code when one of its tensor-parallel ranks died (workers.py); the
# supervisor names it in the model's down reason. Here, so that reading it imports nothing heavy.
RANK_FAILED_EXIT_CODE = 75
