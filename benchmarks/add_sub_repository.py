"""A throwaway model repository holding one copy of the example `add_sub` python model, per benchmark setting.

Each server under test gets a repository of its own, so that a setting (the python backend's
`isolation` model parameter) changes one config file and nothing else. The model code is the
example's, copied unchanged; Triton and modelgate run the very same `model.py`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "model_repository" / "add_sub"
ISOLATION_MODES = ("thread", "process")


def build_repository(parent: Path, name: str, isolation: str | None, source: Path = EXAMPLE_MODEL) -> Path:
    """`parent/name/add_sub`, a copy of `source`; with `isolation`, its config also sets that model parameter.

    Returns the repository folder (`parent/name`). `isolation=None` copies the config verbatim (the Triton peer).
    """
    repository = parent / name
    model_dir = repository / source.name
    shutil.copytree(source, model_dir, ignore=shutil.ignore_patterns("__pycache__"))
    if isolation is not None:
        config = model_dir / "config.pbtxt"
        config.write_text(config.read_text().rstrip("\n") + "\n" + isolation_parameter(isolation))
    return repository


def isolation_parameter(isolation: str) -> str:
    """The `parameters` entry of config.pbtxt that picks where python-backend instances run (issue 15)."""
    if isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_MODES)}, not {isolation!r}")
    return f'parameters {{ key: "isolation" value {{ string_value: "{isolation}" }} }}\n'
