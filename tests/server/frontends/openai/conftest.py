"""The OpenAI routes are tested on the tiny LLM that the LLM serving tests serve (their fixtures, one server
for this package)."""

from tests.backends.llm.serving.fixtures import checkpoint, oai, reference, server  # noqa: F401  (fixtures)
