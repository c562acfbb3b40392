"""Frontends: wire protocols in front of the dataplane (HTTP/REST now; gRPC and OpenAI later)."""
