"""The dataplane: what every frontend calls. Protocol-free; frontends only decode and encode.

It resolves the model version, validates requests, hands them to the version's scheduler
and answers the metadata, statistics and repository calls. Errors are raised as the
`server.errors` hierarchy; a request that a model failed returns a response with `error`.
"""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import NotFoundError, PermissionDeniedError, ResponseCountError, UnsupportedError
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.core.tensors.device_tensors import inputs_to_host
from modelgate.core.version import DEFAULT_SERVER_NAME, MODELGATE_VERSION
from modelgate.server.loaded_model import LoadedVersion
from modelgate.server.model_manager import ConfigOverride, ModelManager
from modelgate.server.model_residency import ModelResidency
from modelgate.server.repository.layout import check_model_name
from modelgate.server.shared_memory.registry import SharedMemoryRegistry
from modelgate.server.shared_memory.tensor_io import read_inputs, uses_shared_memory, write_outputs
from modelgate.server.statistics import StatisticsRegistry

EXTENSIONS = [
    "binary_tensor_data",
    "sequence",
    "sequence(string_id)",
    "parameters",
    "statistics",
    "model_configuration",
    "model_repository",
    "model_repository(unload_dependents)",
    "logging",
]
SHARED_MEMORY_EXTENSIONS = ["system_shared_memory", "cuda_shared_memory"]


class Dataplane:
    def __init__(
        self,
        manager: ModelManager,
        stats: StatisticsRegistry,
        control_mode: str,
        strict_readiness: bool = True,
        allow_model_file_uploads: bool = False,
        residency: ModelResidency | None = None,
        shared_memory: SharedMemoryRegistry | None = None,
        server_name: str = DEFAULT_SERVER_NAME,
    ):
        """`residency`: load on demand and eviction (--model-load-on-demand); None: requests name loaded models.
        `shared_memory`: the client-registered regions (--allow-shared-memory); None: the extension is off.
        `server_name`: the `name` of server metadata (--server-name)."""
        self.server_name = server_name
        self.manager = manager
        self.stats = stats
        self.control_mode = control_mode
        self.strict_readiness = strict_readiness
        # Files sent with a load request become a model folder, and a python model's files run as code in the
        # server's user account: off unless the operator started the server with --allow-model-file-uploads.
        self.allow_model_file_uploads = allow_model_file_uploads
        self.residency = residency
        self._shared_memory = shared_memory
        self.is_ready = False  # set once the initial models were loaded, cleared at shutdown

    def server_ready(self) -> bool:
        """Triton's server readiness: serving, and (strict, the default) every model asked to serve is ready."""
        return self.is_ready and (not self.strict_readiness or self.manager.every_model_serves())

    # -- health and metadata ----------------------------------------------------------------

    def server_metadata(self) -> dict:
        extensions = EXTENSIONS + (SHARED_MEMORY_EXTENSIONS if self._shared_memory is not None else [])
        return {"name": self.server_name, "version": MODELGATE_VERSION, "extensions": extensions}

    @property
    def shared_memory(self) -> SharedMemoryRegistry:
        """The registered regions; PermissionDeniedError unless the server allows client shared memory: a network
        client must not make the server map host memory unless the operator said so."""
        if self._shared_memory is None:
            raise PermissionDeniedError(
                "shared memory is not allowed on this server; start it with --allow-shared-memory true to register "
                "regions and send tensors through them"
            )
        return self._shared_memory

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.manager.is_ready(name, version)

    def model_metadata(self, name: str, version: str = "") -> dict:
        loaded = self.manager.resolve(name, version)
        config = loaded.config
        versions = [str(loaded.version)] if version else [str(v) for v in self.manager.ready_versions(name)]
        return {
            "name": name,
            "versions": versions,
            "platform": config.platform or config.backend,
            "inputs": list(loaded.inputs_metadata),
            "outputs": list(loaded.outputs_metadata),
        }

    def model_config(self, name: str, version: str = "") -> dict:
        """The config in Triton's JSON form (HTTP)."""
        return self.manager.resolve(name, version).config_dict

    def model_config_message(self, name: str, version: str = "") -> ModelConfig:
        """The config as the ModelConfig protobuf message (gRPC)."""
        return self.manager.resolve(name, version).config

    # -- inference -----------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Run one request; raises for request-level problems, returns model failures in `error`."""
        if self.residency is not None:
            return await self._infer_resident(request)
        loaded = self.manager.resolve(request.model_name, request.model_version)
        if loaded.is_decoupled:
            return await self._single_decoupled_response(request)
        return await self._infer(loaded, request)

    async def _infer_resident(self, request: InferRequest) -> InferResponse:
        """With load on demand: the request counts as in flight (its model is not evicted) from before its model
        is found or loaded until it is answered."""
        self.residency.begin(request.model_name)
        try:
            loaded = await self.residency.serving(request.model_name, request.model_version)
            if loaded.is_decoupled:
                return await self._single_decoupled_response(request)
            return await self._infer(loaded, request)
        finally:
            self.residency.end(request.model_name)

    async def _infer(self, loaded: LoadedVersion, request: InferRequest) -> InferResponse:
        in_regions = uses_shared_memory(request)
        if in_regions:
            await read_inputs(request, self.shared_memory)
        batch_size = loaded.schema.validate(request)
        if not loaded.takes_device_inputs:
            inputs_to_host(request)  # GPU tensors of a python model's BLS request, for a model that wants numpy
        response = await loaded.scheduler.infer(request, batch_size)
        response.model_version = str(loaded.version)
        if in_regions and response.error is None:
            await write_outputs(request, response, self.shared_memory)
        return response

    async def _single_decoupled_response(self, request: InferRequest) -> InferResponse:
        """A decoupled model through a one-response API: fine when it sends exactly one response, else
        ResponseCountError (after the last one)."""
        stream = await self.infer_stream(request)
        responses = []
        try:
            async for item in stream:
                if item.response is not None:
                    responses.append(item.response)
        finally:
            stream.cancel()
        if len(responses) == 1:
            return responses[0]
        raise ResponseCountError(
            f"model '{request.model_name}' is decoupled and sent {len(responses)} responses to this request; "
            "a single-response infer needs exactly one: use the streaming APIs (ModelStreamInfer, generate_stream)",
            request.model_name,
            len(responses),
        )

    async def infer_stream(self, request: InferRequest) -> ResponseStream:
        """Start a request whose responses are streamed: 0..n for decoupled models, else one.

        Raises for request-level problems before anything is scheduled; the stream ends with
        an item whose `is_final` is set.
        """
        if uses_shared_memory(request):
            await self._read_stream_inputs(request)
        if self.residency is None:
            return self._start_stream(self.manager.resolve(request.model_name, request.model_version), request)
        name = request.model_name
        self.residency.begin(name)  # until the stream ends: see _infer_resident
        try:
            stream = self._start_stream(await self.residency.serving(name, request.model_version), request)
        except BaseException:
            self.residency.end(name)
            raise
        stream.on_finish(lambda: self.residency.end(name))
        return stream

    async def _read_stream_inputs(self, request: InferRequest) -> None:
        """Inputs in shared memory are read before the stream starts; outputs cannot go there: each of a stream's
        responses would overwrite the one before in the same region."""
        for output in request.outputs:
            if "shared_memory_region" in output.parameters:
                raise UnsupportedError(
                    f"output '{output.name}': shared memory outputs are not supported for streamed or decoupled "
                    "responses; ask for it without 'shared_memory_region'"
                )
        await read_inputs(request, self.shared_memory)

    def _start_stream(self, loaded: LoadedVersion, request: InferRequest) -> ResponseStream:
        batch_size = loaded.schema.validate(request)
        if not loaded.takes_device_inputs:
            inputs_to_host(request)
        return loaded.scheduler.infer_stream(request, batch_size)

    async def prepare(self, name: str, version: str = "") -> None:
        """Before a metadata or config call: with load on demand, load the model if the repository has it (a
        client such as perf_analyzer reads them before its first request)."""
        if self.residency is not None:
            await self.residency.serving(name, version)

    # -- statistics ------------------------------------------------------------------------

    def statistics(self, name: str = "", version: str = "") -> dict:
        if name:
            self.manager.resolve(name, version)  # NotFound / Unavailable for unknown targets
        return {"model_stats": [s.as_dict() for s in self.stats.select(name, version)]}

    # -- repository ------------------------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict]:
        return self.manager.index(ready_only)

    async def load_model(self, name: str, config_override: ConfigOverride = None, files=None) -> None:
        """Load or reload `name`, from the repository or from `config_override` (and `files`).

        `config_override`: the load request's `config` parameter as sent (JSON text or its mapping); the model
        manager reads it with the model, so a bad one fails that load in Triton's words (see ModelManager.load).

        `files` (the `file:<version>/<name>` parameters) are refused with PermissionDeniedError unless the server
        allows uploads; an override naming a file in a path parameter is refused by the model manager.
        """
        self._require_explicit_mode("load")
        if files and not self.allow_model_file_uploads:
            raise PermissionDeniedError(
                f"load of model '{name}': 'file:' parameters (model files sent with the request) are not allowed; "
                "the server must be started with --allow-model-file-uploads to accept them"
            )
        if self.residency is None:
            await self.manager.load(name, config_override, files)
        else:  # evicting idle models if it does not fit
            await self.residency.load(name, lambda: self.manager.load(name, config_override, files))

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        self._require_explicit_mode("unload")
        check_model_name(name)
        if not self.manager.known_model(name):
            self.manager.layout.locate(name)
        await self.manager.unload(name, unload_dependents)

    def _require_explicit_mode(self, action: str) -> None:
        if self.control_mode != "explicit":
            raise UnsupportedError(
                f"explicit model {action} is not allowed when --model-control-mode is '{self.control_mode}'; "
                "start the server with --model-control-mode explicit"
            )


__all__ = ["Dataplane", "NotFoundError"]
