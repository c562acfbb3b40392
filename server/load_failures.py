"""How a load fails, in Triton's words: version strings, repository polls, failed versions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from modelgate.core.errors import (
    InvalidArgumentError,
    InvalidModelError,
    InvalidVersionError,
    ModelgateError,
    ModelLoadError,
    RepositoryPollError,
    load_failure_message,
)
from modelgate.server.memory.ledger import InsufficientMemoryError


def parse_version(version: str) -> int:
    try:
        number = int(version)
    except ValueError:
        raise InvalidVersionError(version) from None
    if number < 0:
        raise InvalidVersionError(version)
    return number


@contextmanager
def polling(name: str) -> Iterator[None]:
    """Failures while finding and reading a model (Triton's repository poll) as RepositoryPollError."""
    try:
        yield
    except RepositoryPollError:
        raise
    except InvalidArgumentError as exc:
        raise InvalidModelError(name, exc.message) from None
    except ModelgateError as exc:
        raise RepositoryPollError(name, exc.message) from None


def load_error(name: str, failure: tuple[int, str], refusal: InsufficientMemoryError | None, note: str = ""):
    """The error for a load whose version `failure` = (version, reason) failed; a memory refusal keeps its class
    (UNAVAILABLE: it may fit later), every other failure is Triton's ModelLoadError."""
    if refusal is None:
        return ModelLoadError(name, failure[0], failure[1], note)
    return InsufficientMemoryError(load_failure_message(name, failure[0], failure[1], note), refusal.device)
