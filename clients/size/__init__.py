"""`modelgate size`: memory arithmetic for LLM deployments, sizing from measured traffic, and packing plans for
model repositories."""
