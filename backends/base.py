"""The backend contract.

A `Backend` turns a model's configuration and a version folder into `ModelInstance`s.
The model manager loads `instance_group` count instances per version; the scheduler gives
each batch of requests to one free instance, always on that instance's own thread, so an
instance never runs two `execute` calls at once and never runs on the event loop.

Invariants of `ModelInstance.execute(requests)`:
- it returns exactly one `InferResponse` per request, in the same order;
- a failure that concerns one request is that response's `error`; an exception escaping
  `execute` fails every request of the batch (the scheduler turns it into errors);
- output arrays are numpy arrays whose shape is the declared shape of the output.

For a decoupled model, responses travel on each request's `response_stream` instead; the
returned list is then either empty (nothing failed up front) or one response per request,
where a response carrying an error ends that request's stream with it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.backend_names import platforms_of
from modelgate.core.errors import ConfigError, UnavailableError
from modelgate.core.inference_types import InferRequest, InferResponse

# Runs a request on another model of the same server (Triton's BLS) and blocks until its response; it raises
# ModelgateError for a request the server refuses. Call it from an instance's own thread, never the event loop.
ModelCaller = Callable[[InferRequest], InferResponse]

# How an instance that stops serving on its own (its process died) tells the server why, from any thread;
# None once it serves again.
HealthReport = Callable[[str | None], None]


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a backend needs to create one instance of one model version."""

    model_name: str
    model_version: int
    instance_name: str  # e.g. "add_sub_0_0", as Triton names instances
    kind: str  # "CPU" or "GPU"
    device_id: int
    model_dir: Path
    version_dir: Path
    config: ModelConfig
    # Lent by the server at load: how this instance calls other models. None outside a server (unit tests).
    call_model: ModelCaller | None = field(default=None, compare=False, repr=False)
    # Lent by the server at load: where the instance reports that it stopped or serves again. None: nobody listens.
    report_health: HealthReport | None = field(default=None, compare=False, repr=False)
    # Lent by the server at load: the event loop that calls `submit`. An instance whose model runs elsewhere may
    # read its answers there (quick work only: nothing that waits). None: no server, or one that lends none.
    event_loop: asyncio.AbstractEventLoop | None = field(default=None, compare=False, repr=False)
    # Set by the server's memory ledger for instances that size themselves to what they are given (an LLM's KV
    # cache): all the bytes the instance may hold on its device. None: no budget, the backend decides.
    memory_budget_bytes: int | None = None


@dataclass
class ComputeTimings:
    """Nanoseconds spent preparing inputs, running the model and extracting outputs."""

    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


@dataclass
class ExecuteResult:
    responses: list[InferResponse]
    timings: ComputeTimings = field(default_factory=ComputeTimings)


class InstanceLoadError(Exception):
    """A load failure whose message is complete as it stands (e.g. what a model's own process reported);
    other exceptions are reported as `<type>: <message>`."""


def load_failure_reason(exc: BaseException) -> str:
    """How a failure to load (or auto-complete) a model reads in its state's reason."""
    return str(exc) if isinstance(exc, InstanceLoadError) else f"{type(exc).__name__}: {exc}"


class ModelInstance(ABC):
    """One loaded copy of a model version; see the module docstring for the invariants."""

    # How many batches a scheduler that forms no batches itself may hand this instance before the first is
    # answered. Above 1 only for an instance whose model runs elsewhere and executes them one at a time, in the
    # order given (a stub process): the next batch then waits there, ready, instead of in the server.
    pipeline_depth: int = 1

    @abstractmethod
    def execute(self, requests: list[InferRequest]) -> ExecuteResult: ...

    def submit(self, requests: list[InferRequest]) -> Future | None:
        """Optional, for an instance whose model runs elsewhere (another process): start the batch without
        blocking, from the event loop, and return a concurrent Future of its ExecuteResult, which must always
        complete (never raise); or None to have `execute` run on the instance's thread as usual. Same
        invariants as `execute`; it is never called while an execute of the same instance is running, and while
        `pipeline_depth` batches are unanswered. The Future may be an asyncio one of the calling loop."""
        return None

    def unload(self) -> None:
        """Release the instance's resources; called once, on the instance's thread."""

    @property
    def shared_address(self) -> str | None:
        """Where a frontend worker attaches to the process that does this instance's work (Backend.attach_instance),
        while that process runs and this process shares it (core/process_sharing.py); None otherwise."""
        return None

    @property
    def is_serving(self) -> bool:
        """False while the instance cannot take requests (the process doing its work is down or restarting)."""
        return True


class Backend(ABC):
    """A model format. Stateless: per-model state lives in the instances it creates."""

    name: str = ""

    def auto_complete_config(self, config: ModelConfig, model_dir: Path, version_dir: Path | None) -> ModelConfig:
        """Fill what the model itself knows (inputs, outputs, max_batch_size); default: nothing."""
        return config

    def default_model_filename(self) -> str:
        return ""

    @abstractmethod
    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
        """Create one instance; raise (any exception) with a message the user can act on."""

    def attach_instance(self, spec: InstanceSpec, address: str) -> ModelInstance:
        """In a frontend worker: an instance that sends its requests to the process another instance published
        at `address` (its `shared_address`), rather than doing the work itself. Only backends whose instances
        publish an address implement it."""
        raise NotImplementedError(f"the {self.name or type(self).__name__} backend has no instances to attach to")


_BACKENDS: dict[str, Callable[[], Backend]] = {}
_PLATFORMS: dict[str, str] = {}
_CREATED: dict[str, Backend] = {}


def register_backend(name: str, factory: Callable[[], Backend], platforms: tuple[str, ...] = ()) -> None:
    """Make `factory` the backend for `backend: name` and for each of `platforms`."""
    _BACKENDS[name] = factory
    for platform in platforms:
        _PLATFORMS[platform] = name


def backend_for_config(config: ModelConfig, source: str) -> Backend:
    """The backend named by the config's `backend`, or else by its `platform`."""
    _register_builtin_backends()
    name = config.backend or _PLATFORMS.get(config.platform, "")
    if name not in _BACKENDS:
        allowed = ", ".join(sorted(_BACKENDS)) + "; platforms: " + ", ".join(sorted(_PLATFORMS))
        wanted = config.backend or config.platform
        field_name = "backend" if config.backend or not config.platform else "platform"
        raise ConfigError(source, field_name, f"'{wanted}' is not an available backend; allowed: {allowed}")
    if name not in _CREATED:
        _CREATED[name] = _BACKENDS[name]()
    return _CREATED[name]


def _register_builtin_backends() -> None:
    """The backends modelgate ships; each module is imported only when a model needs it."""
    for name, module, class_name, platforms, extra in _BUILTIN:
        if name not in _BACKENDS:
            register_backend(name, _lazy(name, module, class_name, extra), platforms)


def _lazy(name: str, module: str, class_name: str, extra: str) -> Callable[[], Backend]:
    def create() -> Backend:
        import importlib

        missing = [package for package in _EXTRAS.get(extra, ()) if not _is_installed(package)]
        if missing:
            raise UnavailableError(
                f"backend '{name}' needs {', '.join(repr(m) for m in missing)}, not installed here: "
                f"pip install 'modelgate[{extra}]'"
            )
        return getattr(importlib.import_module(module), class_name)()

    return create


def _is_installed(package: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:
        return False


# (backend, module, class, platforms, the extra that installs what it needs beyond the base install)
_BUILTIN = [
    ("python", "modelgate.backends.python.backend", "PythonBackend", (), ""),
    ("llm", "modelgate.backends.llm.backend", "LLMBackend", (), "llm"),
    ("pytorch", "modelgate.backends.pytorch.backend", "PyTorchBackend", platforms_of("pytorch"), ""),
    ("onnxruntime", "modelgate.backends.onnx.backend", "OnnxBackend", platforms_of("onnxruntime"), "onnx"),
]
# What each extra brings that its backend cannot run without (triton is optional: torch references run instead).
_EXTRAS = {"onnx": ("onnxruntime",), "llm": ("tokenizers", "safetensors", "jinja2", "tqdm")}
