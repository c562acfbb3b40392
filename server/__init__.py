"""modelgate: a Python inference server speaking Triton's and KServe v2's protocols."""

__version__ = "0.1.0"
