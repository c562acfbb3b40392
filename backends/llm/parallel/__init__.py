"""Tensor and pipeline parallelism for the LLM engine: one process per rank, the scheduler on rank 0 (see
state.py; ranks laid out as layout.py says)."""

# The engine process exits with this code when one of its parallel ranks died (workers.py); the
# supervisor names it in the model's down reason. Here, so that reading it imports nothing heavy.
RANK_FAILED_EXIT_CODE = 75

# Set by the engine process until it is ready (engine_process.py): a rank that dies during the load is then
# reported to the server as the load's error, naming the rank and what it said, before the engine exits.
report_start_failure = None  # Callable[[str], None] | None
