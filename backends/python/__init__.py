"""Python backend compatible with Triton's python backend (`model.py` with `TritonPythonModel`)."""
