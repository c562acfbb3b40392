"""The one error hierarchy of modelgate.

Every error a client can see is a `ModelgateError`. Each class fixes, once, the HTTP status
(as Triton's HTTP server maps its error codes), the gRPC status code name and the Triton
error code name. Frontends never choose a status themselves: they read it from the error.
"""

from __future__ import annotations


class ModelgateError(Exception):
    """Base of all client-visible errors; `message` is what the client reads."""

    http_status: int = 400
    grpc_code: str = "INVALID_ARGUMENT"
    triton_code: str = "INVALID_ARG"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgumentError(ModelgateError):
    """The request (or a configuration) is malformed or does not fit the model."""


class ConfigError(InvalidArgumentError):
    """A model configuration is invalid; the message names file, field and what is allowed."""

    def __init__(self, source: str, field: str, problem: str):
        super().__init__(f"{source}: field '{field}': {problem}")
        self.source = source
        self.field = field


class NotFoundError(ModelgateError):
    """A model, version, input or route that does not exist."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    triton_code = "NOT_FOUND"


class UnavailableError(ModelgateError):
    """The target exists but cannot serve now (not ready, loading, queue full)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    triton_code = "UNAVAILABLE"


class UnsupportedError(ModelgateError):
    """The operation is not supported in this mode or by this model."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"
    triton_code = "UNSUPPORTED"


class ResponseCountError(UnsupportedError):
    """A decoupled model sent other than one response to a request made through a one-response API.

    The defaults keep `type(error)(message)` working (the ensemble scheduler re-raises step errors so).
    """

    def __init__(self, message: str, model_name: str = "", num_responses: int = 0):
        super().__init__(message)
        self.model_name = model_name
        self.num_responses = num_responses


class PermissionDeniedError(ModelgateError):
    """The server's flags do not allow this operation (e.g. model files sent with a load request).

    403 as Triton answers a restricted HTTP API; PERMISSION_DENIED on gRPC rather than Triton's UNAVAILABLE for
    restricted protocols, because clients and retry policies treat UNAVAILABLE as "try again".
    """

    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    triton_code = "UNSUPPORTED"  # Triton's error codes have no permission code; a BLS call never sees this


class AlreadyExistsError(ModelgateError):
    grpc_code = "ALREADY_EXISTS"
    triton_code = "ALREADY_EXISTS"


class CancelledError(ModelgateError):
    grpc_code = "CANCELLED"
    triton_code = "CANCELLED"


class InternalError(ModelgateError):
    """A bug or an unexpected failure inside the server."""

    http_status = 500
    grpc_code = "INTERNAL"
    triton_code = "INTERNAL"


class UnknownModelError(NotFoundError):
    """No model, or no such version of it, is known: Triton's words (`Request for unknown model: 'X' is not
    found`, `... 'X' version 3 is not found`), which clients, Triton's own examples among them, match on."""

    def __init__(self, model_name: str, version: int | None = None, detail: str = ""):
        target = f"'{model_name}'" if version is None else f"'{model_name}' version {version}"
        super().__init__(f"Request for unknown model: {target} is not found" + (f"; {detail}" if detail else ""))
        self.model_name = model_name


class ModelNotReadyError(UnavailableError):
    """The model is known but the version asked for does not serve now, in Triton's words (`Request for unknown
    model: 'X' has no available versions`, `... 'X' version 3 is not at ready state`), then why."""

    def __init__(self, model_name: str, version: int | None, reason: str):
        state = "has no available versions" if version is None else f"version {version} is not at ready state"
        super().__init__(f"Request for unknown model: '{model_name}' {state}: {reason}")
        self.model_name = model_name


class InvalidVersionError(InvalidArgumentError):
    """A version in a request that is not a number >= 0, in Triton's words."""

    def __init__(self, version_text: str):
        if version_text.lstrip("-").isdigit():
            opening = f"invalid model version specified '{version_text}'"
        else:
            opening = f"failed to get model version from specified version string '{version_text}'"
        super().__init__(f"{opening}: version should be an integral value >= 0")


class RepositoryPollError(InternalError):
    """A load that found no usable model: the name is in no repository, its config (or a load request's override)
    is invalid, or the files sent with the request cannot be written. Triton answers these INTERNAL with
    `failed to load 'X', failed to poll from model repository`; `detail` says what was wrong."""

    def __init__(self, model_name: str, detail: str):
        super().__init__(f"failed to load '{model_name}', failed to poll from model repository: {detail}")
        self.model_name = model_name
        self.detail = detail


class InvalidModelError(RepositoryPollError):
    """A poll failure caused by an invalid config, load request override or file path. Worded as Triton's but
    INVALID_ARGUMENT (400) where Triton answers INTERNAL: the client's bad input is not a server fault (Triton's
    own example notes INVALID_ARGUMENT as the fitting code, TRI-958)."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    triton_code = "INVALID_ARG"


class ModelLoadError(InvalidArgumentError):
    """A version of a model whose config was read failed to load (its initialize raised, its file is broken).
    Triton answers INVALID_ARG with `load failed for model 'X': version 1 is at UNAVAILABLE state: why`."""

    def __init__(self, model_name: str, version: int, reason: str, note: str = ""):
        message = f"load failed for model '{model_name}': version {version} is at UNAVAILABLE state: {reason}"
        super().__init__(message + (f"; {note}" if note else ""))
        self.model_name = model_name


def load_failure_message(model_name: str, version: int, reason: str, note: str = "") -> str:
    """The text of a ModelLoadError, for the errors that carry it with another class (a memory refusal)."""
    return ModelLoadError(model_name, version, reason, note).message


class ModelExecutionError(ModelgateError):
    """A model's own code failed for a request (it raised, or returned an error).

    Mapped to 400 like Triton's python backend errors of old, so that a broken model never
    looks like a broken server to load balancers watching for 5xx.
    """


_BY_TRITON_CODE: dict[str, type[ModelgateError]] = {
    "INVALID_ARG": InvalidArgumentError,
    "NOT_FOUND": NotFoundError,
    "UNAVAILABLE": UnavailableError,
    "UNSUPPORTED": UnsupportedError,
    "ALREADY_EXISTS": AlreadyExistsError,
    "CANCELLED": CancelledError,
}


def error_from_triton_code(code_name: str, message: str) -> ModelgateError:
    """The error class for a Triton error code name; UNKNOWN/INTERNAL become ModelExecutionError."""
    return _BY_TRITON_CODE.get(code_name, ModelExecutionError)(message)


def drop_traceback(error: BaseException) -> BaseException:
    """`error` with its traceback, and those of the errors it chains (cause, context), dropped; returns `error`.

    For an error that is answered to a client or kept as a value on a response: neither needs its traceback,
    and keeping one keeps every frame it passed through with their locals, the request and its body among
    them. Those frames often refer back to the error (`response.error = exc` in the frame that caught it, a
    handler's `raise response.error`): a cycle that only the cyclic garbage collector frees, so without this
    a refused 10 MB prompt stayed allocated until a full collection came, and RSS grew by tens of MB a request.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        chained = pending.pop()
        if chained is None or id(chained) in seen:
            continue
        seen.add(id(chained))
        chained.__traceback__ = None
        pending += [chained.__cause__, chained.__context__]
    return error
