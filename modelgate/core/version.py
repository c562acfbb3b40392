"""modelgate's version, as installed (pyproject.toml is where it is set)."""

from importlib.metadata import PackageNotFoundError, version

try:
    MODELGATE_VERSION = version("modelgate")
except PackageNotFoundError:  # a checkout used without installing it
    MODELGATE_VERSION = "0+unknown"
