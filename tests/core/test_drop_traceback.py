"""drop_traceback: an error kept as a value or answered keeps no frames, so a request it refused is freed by
reference counting (no cycle through the frame that holds both)."""

import gc
import weakref

from modelgate.core.errors import InvalidArgumentError, drop_traceback


class Body:
    """Stands for a request body: weakly referenceable, so the test can see when it is freed."""


def _refuse(body: Body) -> None:
    raise InvalidArgumentError("too large")


def _respond(body: Body) -> dict:
    """As a backend does: the refusal becomes the response's error, and this frame holds the response."""
    response = {"error": None}
    try:
        _refuse(body)
    except InvalidArgumentError as exc:
        response["error"] = drop_traceback(exc)
    return response


def _respond_keeping_the_traceback(body: Body) -> dict:
    response = {"error": None}
    try:
        _refuse(body)
    except InvalidArgumentError as exc:
        response["error"] = exc
    return response


def _freed_without_the_collector(respond) -> bool:
    gc.disable()
    try:
        body = Body()
        freed = weakref.ref(body)
        response = respond(body)
        del body, response
        return freed() is None
    finally:
        gc.enable()


def test_a_kept_error_without_its_traceback_frees_the_request():
    assert _freed_without_the_collector(_respond)


def test_a_kept_error_with_its_traceback_holds_the_request_in_a_cycle():
    """What drop_traceback is for: the error's frames hold the response that holds the error."""
    assert not _freed_without_the_collector(_respond_keeping_the_traceback)
    gc.collect()


def test_chained_errors_lose_their_tracebacks_too():
    try:
        try:
            raise ValueError("cause")
        except ValueError as cause:
            raise InvalidArgumentError("refused") from cause
    except InvalidArgumentError as exc:
        error = drop_traceback(exc)
    assert error.__traceback__ is None
    assert error.__cause__.__traceback__ is None and isinstance(error.__cause__, ValueError)
    assert error.message == "refused"
