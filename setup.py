"""Maps the top-level folders into the one `modelgate` namespace (metadata lives in pyproject.toml).

`server/`, `backends/`, `kernels/` and `clients/` become `modelgate.server` ... and `modelgate/` holds the
root (`python -m modelgate`, the command, the `core` floor). The four folders have no `__init__.py` on
purpose: a checkout on `sys.path` (`python -m pytest` from the repository root) must not shadow installed
packages named `kernels`, `server`, ... — a folder without `__init__.py` loses to a regular package.
"""

from setuptools import find_namespace_packages, setup

FLOORS = ("server", "backends", "kernels", "clients")
_NOT_CODE = ["*__pycache__*", "*.egg-info*"]

packages = find_namespace_packages(include=["modelgate", "modelgate.*"], exclude=_NOT_CODE)
for floor in FLOORS:
    found = find_namespace_packages(include=[floor, f"{floor}.*"], exclude=_NOT_CODE)
    packages += [f"modelgate.{name}" for name in found]

setup(
    packages=packages,
    package_dir={"modelgate": "modelgate", **{f"modelgate.{floor}": floor for floor in FLOORS}},
)
