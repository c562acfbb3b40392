"""modelgate's version, as installed (pyproject.toml is where it is set), and the name server metadata reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    MODELGATE_VERSION = version("modelgate")
except PackageNotFoundError:  # a checkout used without installing it
    MODELGATE_VERSION = "0+unknown"

# Server metadata's `name` unless --server-name says otherwise.
DEFAULT_SERVER_NAME = "modelgate"
