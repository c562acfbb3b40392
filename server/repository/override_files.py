"""Model files sent with a load request (`file:<version>/<name>` parameters) as a model folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

from modelgate.core.errors import InternalError, InvalidArgumentError


def write_override_model_dir(model_name: str, files: dict[str, bytes]) -> Path:
    """A fresh temporary folder named `model_name` holding `files`; paths must stay inside it.

    A file the filesystem refuses (a name longer than it allows, no space left) is an InternalError naming the
    parameter, as Triton answers it, and nothing written is left behind.
    """
    targets = {relative: (_safe_relative(relative), content) for relative, content in files.items()}
    root = Path(tempfile.mkdtemp(prefix="modelgate-override-"))
    model_dir = root / model_name
    try:
        _make_model_dir(model_dir)
        for relative, (path, content) in targets.items():
            _write(model_dir, relative, path, content)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return model_dir


def _make_model_dir(model_dir: Path) -> None:
    try:
        model_dir.mkdir()
    except OSError as exc:
        raise InternalError(f"the folder for model '{model_dir.name}' cannot be made: {exc.strerror or exc}") from None


def _write(model_dir: Path, relative: str, path: PurePosixPath, content: bytes) -> None:
    target = model_dir / path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    except OSError as exc:  # its text would name the server's temporary folder: say what the client sent
        shown = relative if len(relative) <= 64 else f"{relative[:61]}..."
        raise InternalError(f"load parameter 'file:{shown}' cannot be written: {exc.strerror or exc}") from None


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
