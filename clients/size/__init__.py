"""`modelgate size`: memory arithmetic for LLM deployments, and sizing from measured traffic."""
