"""`inference.GRPCInferenceService`: each RPC decodes, calls the dataplane, encodes.

Errors from the one hierarchy abort the RPC with their gRPC status code. Trace RPCs keep the generated
servicer's UNIMPLEMENTED answers.
"""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.errors import InvalidArgumentError
from modelgate.server.dataplane import Dataplane
from modelgate.server.frontends.grpc.infer_codec import decode_infer_request, encode_infer_response
from modelgate.server.frontends.grpc.parameters import parameters_to_dict
from modelgate.server.frontends.grpc.rpc_errors import aborting_on_errors
from modelgate.server.frontends.grpc.shared_memory_rpcs import SharedMemoryRpcs
from modelgate.server.frontends.grpc.stream_infer import serve_infer_stream, write_infer_stream
from modelgate.server.log_settings import LogSettings
from modelgate.server.model_manager import INDEX_EXTENSION_FIELDS
from modelgate.server.statistics import EXTENSION_FIELDS


class InferenceService(SharedMemoryRpcs, service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: Dataplane, log_settings: LogSettings):
        self.dataplane = dataplane
        self.log_settings = log_settings

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.dataplane.server_ready())

    @aborting_on_errors
    async def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(self.dataplane.server_metadata(), service_pb2.ServerMetadataResponse())

    @aborting_on_errors
    async def ModelMetadata(self, request, context):
        await self.dataplane.prepare(request.name, request.version)
        metadata = self.dataplane.model_metadata(request.name, request.version)
        return json_format.ParseDict(metadata, service_pb2.ModelMetadataResponse())

    @aborting_on_errors
    async def ModelConfig(self, request, context):
        await self.dataplane.prepare(request.name, request.version)
        return service_pb2.ModelConfigResponse(
            config=self.dataplane.model_config_message(request.name, request.version)
        )

    @aborting_on_errors
    async def ModelStatistics(self, request, context):
        statistics = self.dataplane.statistics(request.name, request.version)
        for model in statistics["model_stats"]:
            for key in EXTENSION_FIELDS:  # no field for them in Triton's message
                model.pop(key, None)
        return json_format.ParseDict(statistics, service_pb2.ModelStatisticsResponse())

    @aborting_on_errors
    async def ModelInfer(self, request, context):
        infer_request = decode_infer_request(request)
        response = await self.dataplane.infer(infer_request)
        if response.error is not None:
            raise response.error
        return encode_infer_response(response)

    async def ModelStreamInfer(self, request_iterator, context):
        writer = getattr(context, "response_writer", None)  # a grpc.aio context has none
        if writer is not None:  # served on the loop: the messages are written as they come, none yielded
            await write_infer_stream(self.dataplane, request_iterator, writer)
            return
        async for message in serve_infer_stream(self.dataplane, request_iterator):
            yield message

    @aborting_on_errors
    async def RepositoryIndex(self, request, context):
        rows = self.dataplane.repository_index(request.ready)
        return service_pb2.RepositoryIndexResponse(
            models=[
                service_pb2.RepositoryIndexResponse.ModelIndex(
                    **{k: v for k, v in r.items() if k not in INDEX_EXTENSION_FIELDS}
                )
                for r in rows
            ]
        )

    @aborting_on_errors
    async def RepositoryModelLoad(self, request, context):
        parameters = parameters_to_dict(request.parameters)
        config = parameters.pop("config", None)  # read with the model: a bad one is that load's failure
        files = {k[len("file:") :]: _file_bytes(k, v) for k, v in parameters.items() if k.startswith("file:")}
        await self.dataplane.load_model(request.model_name, config, files)
        return service_pb2.RepositoryModelLoadResponse()

    @aborting_on_errors
    async def RepositoryModelUnload(self, request, context):
        parameters = parameters_to_dict(request.parameters)
        await self.dataplane.unload_model(request.model_name, bool(parameters.get("unload_dependents", False)))
        return service_pb2.RepositoryModelUnloadResponse()

    async def TraceSetting(self, request, context):
        await _unsupported(context, "trace")

    @aborting_on_errors
    async def LogSettings(self, request, context):
        changes = {}
        for key, value in request.settings.items():
            choice = value.WhichOneof("parameter_choice")
            changes[key] = getattr(value, choice) if choice else None
        settings = self.log_settings.update(changes) if changes else self.log_settings.as_dict()
        response = service_pb2.LogSettingsResponse()
        for key, value in settings.items():
            _set_log_value(response.settings[key], value)
        return response


async def _unsupported(context, extension: str):
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"modelgate does not support the {extension} extension yet")


def _file_bytes(key: str, value) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidArgumentError(f"load parameter '{key}' must be bytes_param holding the file's content")
    return value


def _set_log_value(target, value) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.uint32_param = value
    else:
        target.string_param = str(value)
