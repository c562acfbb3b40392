"""Triton's rate limiter (`--rate-limit execution_count`): instances start executions only while the resources
their `instance_group.rate_limiter` names are free, across every model of the server."""
