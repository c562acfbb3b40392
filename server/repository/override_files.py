"""Model files sent with a load request (`file:<version>/<name>` parameters) as a model folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

from modelgate.core.errors import InvalidArgumentError


def write_override_model_dir(model_name: str, files: dict[str, bytes]) -> Path:
    """A fresh temporary folder named `model_name` holding `files`; paths must stay inside it."""
    targets = {_safe_relative(relative): content for relative, content in files.items()}
    root = Path(tempfile.mkdtemp(prefix="modelgate-override-"))
    model_dir = root / model_name
    model_dir.mkdir()
    for relative, content in targets.items():
        target = model_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return model_dir


def remove_override_model_dir(model_dir: Path | None) -> None:
    """Delete a folder made by write_override_model_dir (with its temporary parent)."""
    if model_dir is not None:
        shutil.rmtree(model_dir.parent, ignore_errors=True)


def _safe_relative(relative: str) -> PurePosixPath:
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts or "\\" in relative:
        raise InvalidArgumentError(
            f"load parameter 'file:{relative}': file paths must be relative like '1/model.py', without '..'"
        )
    return path
