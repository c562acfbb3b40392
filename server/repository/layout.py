"""The model repository folders on disk: which models and versions exist, safely.

A model is a sub-folder of a repository root; its versions are sub-folders with numeric
names. Model names are checked before any path is built so that no name (from a request
or a load call) can reach a path outside the repository.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from modelgate.core.errors import InvalidArgumentError, NotFoundError

_VALID_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def check_model_name(name: str) -> None:
    """Raise InvalidArgumentError unless `name` is a plain folder name (no separators, no '..')."""
    if not name or not _VALID_NAME.fullmatch(name) or ".." in name:
        raise InvalidArgumentError(
            f"invalid model name '{name}': allowed are letters, digits, '_', '-' and '.', "
            "not starting with '.' or '-' and without '..' or path separators"
        )


@dataclass(frozen=True)
class ModelLocation:
    name: str
    path: Path  # the model's folder, inside `root`
    root: Path


class RepositoryLayout:
    """The model folders found under one or more repository roots."""

    def __init__(self, roots: list[Path]):
        self.roots = [Path(r).resolve() for r in roots]

    def scan(self) -> tuple[dict[str, ModelLocation], dict[str, str]]:
        """(models by name, errors by name): a name in two roots is an error, as in Triton."""
        found: dict[str, ModelLocation] = {}
        duplicated: dict[str, str] = {}
        for root in self.roots:
            for entry in sorted(_subdirectories(root)):
                if _VALID_NAME.fullmatch(entry.name) is None or ".." in entry.name:
                    continue
                if entry.name in found:
                    duplicated[entry.name] = (
                        f"model '{entry.name}' appears in more than one repository: {found[entry.name].root} and {root}"
                    )
                    continue
                found[entry.name] = ModelLocation(entry.name, entry.resolve(), root)
        for name in duplicated:
            found.pop(name, None)
        return found, duplicated

    def locate(self, name: str) -> ModelLocation:
        """The model's folder; NotFoundError if no root has it."""
        check_model_name(name)
        models, errors = self.scan()
        if name in errors:
            raise InvalidArgumentError(errors[name])
        if name not in models:
            raise NotFoundError(f"model '{name}' is not in the model repository")
        location = models[name]
        if not location.path.is_relative_to(location.root):
            raise InvalidArgumentError(f"model '{name}' resolves outside the model repository")
        return location


def fingerprint(model_dir: Path) -> str:
    """A digest of every file's path, size and mtime under `model_dir`, for change polling."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(model_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            try:
                stat = path.stat()
            except OSError:
                continue
            relative = path.relative_to(model_dir)
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _subdirectories(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
