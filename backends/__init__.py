"""Backends: one package per model format, all behind the contract in backends/base.py."""
