"""The LLM backend: an engine process with in-flight batching over a paged KV cache."""
