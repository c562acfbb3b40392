"""Tensor datatypes and their wire encodings (Triton / KServe v2)."""
