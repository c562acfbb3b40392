"""A python model's own Python environment: Triton's `EXECUTION_ENV_PATH`, or an interpreter named directly.

Two model parameters, for process isolation only (a thread runs in the server's interpreter):

- `EXECUTION_ENV_PATH`: a venv or conda environment, as a folder or as a tar archive of one (conda-pack's
  `.tar.gz`, or `.tgz` / `.tar`). `$$TRITON_MODEL_DIRECTORY` stands for the model's folder, as in Triton; a
  relative path is taken from the model's folder. An archive is unpacked once into
  `<cache>/python_envs/<sha256 of the archive>` (cache: `$MODELGATE_CACHE_DIR`, else `~/.cache/modelgate`), which
  every model and server using the same archive shares. The stub runs the environment's `bin/python3` (or
  `bin/python`).
- `python_interpreter`: a python executable, as a path or a command found on PATH.

The interpreter must be the server's Python (major.minor and ABI flags): the stub imports the server's modelgate
and, after the environment's own packages, the server's site-packages, whose compiled extensions are built for
the server's Python. Every problem is a ConfigError at load naming the parameter and the path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import site
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError
from modelgate.core.path_parameters import EXECUTION_ENV_PATH, PYTHON_INTERPRETER

# Both name files to run: core.path_parameters registers them, so only the repository's config file may set them.
ENV_PATH = EXECUTION_ENV_PATH
INTERPRETER = PYTHON_INTERPRETER
ENV_PARAMETERS = (ENV_PATH, INTERPRETER)
MODEL_DIRECTORY = "$$TRITON_MODEL_DIRECTORY"
PROBE_TIMEOUT_S = 60.0

# What must match between the server and the stub's interpreter: compiled extensions are built per minor version
# and ABI (e.g. 3.13t, free-threaded, cannot load 3.13's).
_VERSION_PROBE = (
    "import sys; print('%d.%d%s' % (sys.version_info[0], sys.version_info[1], getattr(sys, 'abiflags', '')))"
)


class EnvironmentProblem(Exception):
    """Why a model's environment cannot be used; becomes a ConfigError naming the parameter."""


@dataclass(frozen=True)
class StubInterpreter:
    """The python a model's stub runs under instead of the server's.

    `site_dirs` are the server's site-packages folders, which the stub's bootstrap adds after the interpreter's
    own: the environment's packages win, and modelgate and what the environment lacks come from the server.
    """

    executable: str
    site_dirs: tuple[str, ...]


def stub_interpreter(config: ModelConfig, model_dir: Path) -> StubInterpreter | None:
    """The interpreter the model's parameters ask for, checked and ready to run; None: the server's own."""
    parameters = config.parameters
    named = [name for name in ENV_PARAMETERS if name in parameters]
    if not named:
        return None
    source = f"{model_dir}/config"
    if len(named) > 1:
        raise ConfigError(source, f"parameters.{INTERPRETER}", f"set either {ENV_PATH} or {INTERPRETER}, not both")
    value = parameters[named[0]].string_value
    try:
        executable = _env_python(value, model_dir) if named[0] == ENV_PATH else _named_python(value, model_dir)
        check_python_version(executable)
    except EnvironmentProblem as exc:
        raise ConfigError(source, f"parameters.{named[0]}", str(exc)) from None
    return StubInterpreter(executable, server_site_dirs())


def server_site_dirs() -> tuple[str, ...]:
    """The server's site-packages folders (the user's first, where enabled), in the order it searches them."""
    folders = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    folders += site.getsitepackages()
    return tuple(folder for folder in folders if os.path.isdir(folder))


# --- the parameters -------------------------------------------------------------------------------------------


def model_path(value: str, model_dir: Path) -> Path:
    """A path from a parameter: `$$TRITON_MODEL_DIRECTORY` is the model's folder, relative paths start there."""
    if not value.strip():
        raise EnvironmentProblem("is empty: expected a path")
    path = Path(value.replace(MODEL_DIRECTORY, str(model_dir))).expanduser()
    return (Path(model_dir) / path).absolute()


def _env_python(value: str, model_dir: Path) -> str:
    path = model_path(value, model_dir)
    if not path.exists():
        raise EnvironmentProblem(f"'{path}' does not exist: expected an environment folder or a .tar.gz archive")
    env_dir = path if path.is_dir() else unpacked(path)
    where = f"'{path}'" if env_dir == path else f"'{path}' (unpacked into '{env_dir}')"
    for name in ("bin/python3", "bin/python"):
        if _is_executable(env_dir / name):
            return str(env_dir / name)
    raise EnvironmentProblem(f"{where} has no bin/python3 or bin/python: expected a venv or conda environment")


def _named_python(value: str, model_dir: Path) -> str:
    if "/" not in value and MODEL_DIRECTORY not in value and value.strip():
        found = shutil.which(value)
        if found is None:
            raise EnvironmentProblem(f"'{value}' is not a command found on PATH")
        return found
    path = model_path(value, model_dir)
    if not path.exists():
        raise EnvironmentProblem(f"'{path}' does not exist: expected a python executable")
    if not _is_executable(path):
        raise EnvironmentProblem(f"'{path}' is not an executable file: expected a python executable")
    return str(path)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# --- the interpreter's version ---------------------------------------------------------------------------------


def check_python_version(executable: str) -> None:
    """Raise unless `executable` is the server's Python (major.minor and ABI flags)."""
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}{getattr(sys, 'abiflags', '')}"
    theirs = python_version(executable)
    if theirs != ours:
        raise EnvironmentProblem(
            f"'{executable}' is Python {theirs}, the server runs Python {ours}: the model's process imports the "
            f"server's compiled packages, so its environment needs Python {ours}"
        )


def python_version(executable: str) -> str:
    """What `executable` says it is, e.g. `3.11` or `3.13t`."""
    try:
        probe = subprocess.run(
            [executable, "-c", _VERSION_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"cannot run '{executable}': {exc}") from None
    if probe.returncode != 0:
        last_line = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        raise EnvironmentProblem(f"'{executable}' does not run as python: {last_line}")
    return probe.stdout.strip()


# --- archives, unpacked once ------------------------------------------------------------------------------------


def env_cache_dir() -> Path:
    """Where archives are unpacked: `$MODELGATE_CACHE_DIR/python_envs`, else `~/.cache/modelgate/python_envs`."""
    cache = os.environ.get("MODELGATE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "modelgate"
    return Path(cache).expanduser() / "python_envs"


def unpacked(archive: Path, cache_dir: Path | None = None) -> Path:
    """The folder holding `archive`'s contents, unpacked now unless an earlier load (of any model) did.

    Unpacked into a scratch folder beside the target and renamed into place, so two loads at once never see a
    half-unpacked environment: the second rename fails and that load uses the first one's folder.
    """
    cache_dir = cache_dir or env_cache_dir()
    target = cache_dir / archive_digest(archive)
    if target.is_dir():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    except OSError as exc:
        raise EnvironmentProblem(f"cannot unpack '{archive}' into '{cache_dir}': {exc}") from None
    try:
        _extract(archive, scratch)
        os.chmod(scratch, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        _move_into_place(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # gone already when the rename succeeded
    return target


def archive_digest(archive: Path) -> str:
    """The sha256 of the archive's contents (read once per version of the file in this process)."""
    try:
        stat = archive.stat()
        return _sha256(str(archive.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read '{archive}': {exc}") from None


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Keyed by size and mtime too, so a file replaced in place is read again."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(archive: Path, into: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise EnvironmentProblem(
            f"unpacking '{archive}' safely needs tarfile's filters (Python 3.10.12 or later): unpack it yourself and "
            "name the folder instead"
        )
    try:
        with tarfile.open(archive, "r:*") as tar:
            # "data": refuse `..` and links leading outside `into` (absolute ones too) and devices, strip a leading
            # `/` from names, drop setuid bits.
            tar.extractall(into, filter="data")
    except tarfile.FilterError as exc:
        raise EnvironmentProblem(
            f"'{archive}' has a member that would land outside the environment, refused: {exc} "
            "(pack environments with conda-pack, or a venv made with `python -m venv --copies`)"
        ) from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        reason = " ".join(str(exc).split())  # tarfile lists each compression it tried on a line of its own
        raise EnvironmentProblem(
            f"cannot unpack '{archive}' (expected a .tar.gz, .tgz or .tar archive): {reason}"
        ) from None


def _move_into_place(scratch: Path, target: Path) -> None:
    try:
        os.rename(scratch, target)
    except OSError as exc:
        if not target.is_dir():  # not a load that won the race: a real failure
            raise EnvironmentProblem(f"cannot move the unpacked environment to '{target}': {exc}") from None
