"""The LLM serving tests' server and reference engine (fixtures.py), one each for this package."""

from tests.backends.llm.serving.fixtures import checkpoint, reference, server  # noqa: F401  (fixtures)
