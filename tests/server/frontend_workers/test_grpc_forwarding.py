"""A worker's gRPC server in front of a stand-in primary (grpc.aio on a Unix socket, in this process): what the
primary says, status code, details and metadata, reaches the client unchanged; what the client sends, metadata
and deadline, reaches the primary; a primary that cannot be reached gives UNAVAILABLE naming it."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2
from tritonclient.grpc import service_pb2

from modelgate.server.frontend_workers.grpc_worker_server import WorkerGrpcServer
from modelgate.server.settings import ServerSettings

INFERENCE = "inference.GRPCInferenceService"
HEALTH = "grpc.health.v1.Health"
BLOB = b"\x00\xffbytes"
TRAILING = (("x-reason", "gone"), ("x-blob-bin", BLOB))


class _Primary:
    """What the stand-in primary answers, and the metadata and deadlines its calls came with."""

    def __init__(self):
        self.calls: list[tuple[dict, float | None]] = []
        self.holding = asyncio.Event()  # a stream's request for "hangs" arrived
        self.cancelled = asyncio.Event()  # and that stream was cancelled

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        inference = {
            "ServerLive": grpc.unary_unary_rpc_method_handler(self.server_live),
            "ModelReady": grpc.unary_unary_rpc_method_handler(self.model_ready),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.stream),
        }
        health = {"Watch": grpc.unary_stream_rpc_method_handler(self.watch)}
        return [
            grpc.method_handlers_generic_handler(INFERENCE, inference),
            grpc.method_handlers_generic_handler(HEALTH, health),
        ]

    def _seen(self, context) -> None:
        self.calls.append((dict(context.invocation_metadata()), context.time_remaining()))

    async def server_live(self, request: bytes, context) -> bytes:
        self._seen(context)
        await context.send_initial_metadata((("x-initial", "first"),))
        context.set_trailing_metadata(TRAILING)
        return service_pb2.ServerLiveResponse(live=True).SerializeToString()

    async def model_ready(self, request: bytes, context) -> bytes:
        self._seen(context)
        name = service_pb2.ModelReadyRequest.FromString(request).name
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no model '{name}' here", TRAILING)

    async def stream(self, requests, context):
        self._seen(context)
        async for raw in requests:
            request = service_pb2.ModelInferRequest.FromString(raw)
            if request.model_name == "fails":
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the primary is full", TRAILING)
            if request.model_name == "hangs":
                await self._hold()
            response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
            yield service_pb2.ModelStreamInferResponse(infer_response=response).SerializeToString()

    async def _hold(self) -> None:
        self.holding.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def watch(self, request: bytes, context):
        self._seen(context)
        for status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING):
            yield health_pb2.HealthCheckResponse(status=status).SerializeToString()
        context.set_trailing_metadata(TRAILING)


class _ServesNothing:
    """AttachedModels with no model attached: every stream request goes to the primary."""

    def serves(self, name: str, version: str = "") -> bool:
        return False


@pytest.fixture
async def primary(tmp_path):
    stand_in = _Primary()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(stand_in.handlers())
    server.add_insecure_port(f"unix:{tmp_path / 'grpc.sock'}")
    await server.start()
    yield stand_in
    await server.stop(0)


async def _worker(tmp_path, socket_name: str, **settings) -> tuple[WorkerGrpcServer, str]:
    """A worker's gRPC server in front of the primary at `socket_name`, and its address."""
    worker = WorkerGrpcServer(
        ServerSettings(model_repository=[tmp_path], **settings), _ServesNothing(), None, str(tmp_path / socket_name)
    )
    port = await worker.start("127.0.0.1", 0)
    return worker, f"127.0.0.1:{port}"


@pytest.fixture
async def client(tmp_path, primary):
    worker, address = await _worker(tmp_path, "grpc.sock")
    channel = grpc.aio.insecure_channel(address)
    yield channel
    await channel.close()
    await worker.stop(0)


def _unary(channel, method: str, response_class):
    return channel.unary_unary(
        f"/{INFERENCE}/{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )


def _stream(channel):
    return channel.stream_stream(
        f"/{INFERENCE}/ModelStreamInfer",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
    )


async def test_a_status_passes_back_with_its_details_and_trailing_metadata(client, primary):
    call = _unary(client, "ModelReady", service_pb2.ModelReadyResponse)(
        service_pb2.ModelReadyRequest(name="tiny"), metadata=(("x-client", "abc"), ("x-key-bin", BLOB)), timeout=20
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == "no model 'tiny' here"
    assert tuple(refused.value.trailing_metadata()) == TRAILING
    metadata, time_remaining = primary.calls[-1]
    assert metadata["x-client"] == "abc" and metadata["x-key-bin"] == BLOB  # the client's own, bytes too
    # The client's deadline (20 s): gRPC carries it in coarse units, so it may read a little above.
    assert time_remaining is not None and 0 < time_remaining <= 21


async def test_an_answer_passes_back_with_its_metadata(client, primary):
    call = _unary(client, "ServerLive", service_pb2.ServerLiveResponse)(service_pb2.ServerLiveRequest())
    assert (await call).live
    assert tuple(await call.initial_metadata()) == (("x-initial", "first"),)
    assert tuple(await call.trailing_metadata()) == TRAILING
    assert primary.calls[-1][1] is None  # no deadline sent, none made up


async def test_a_server_stream_passes_back_whole(client, primary):
    watch = client.unary_stream(
        f"/{HEALTH}/Watch",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    call = watch(health_pb2.HealthCheckRequest())
    assert [response.status async for response in call] == [
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]
    assert tuple(await call.trailing_metadata()) == TRAILING


async def test_a_stream_ends_as_the_primary_ended_it(client, primary):
    call = _stream(client)(metadata=(("x-client", "abc"),))
    for model in ("a", "b", "fails"):
        await call.write(service_pb2.ModelInferRequest(model_name=model, id=model))
    responses = []
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for response in call:
            responses.append(response.infer_response.id)
    assert responses == ["a", "b"]  # in order, all that came before the end
    assert ended.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ended.value.details() == "the primary is full"
    assert tuple(ended.value.trailing_metadata()) == TRAILING
    assert primary.calls[-1][0]["x-client"] == "abc"


async def test_a_stream_half_closed_by_the_client_ends_once_the_primary_answered(client, primary):
    call = _stream(client)()
    for model in ("a", "b"):
        await call.write(service_pb2.ModelInferRequest(model_name=model, id=model))
    await call.done_writing()
    assert [response.infer_response.id async for response in call] == ["a", "b"]
    assert await call.code() is grpc.StatusCode.OK


async def test_a_client_that_cancels_cancels_the_primarys_call(client, primary):
    call = _stream(client)()
    await call.write(service_pb2.ModelInferRequest(model_name="a", id="a"))
    await call.write(service_pb2.ModelInferRequest(model_name="hangs", id="hangs"))
    assert (await call.read()).infer_response.id == "a"
    await asyncio.wait_for(primary.holding.wait(), 20)
    call.cancel()
    await asyncio.wait_for(primary.cancelled.wait(), 20)


async def test_a_request_that_cannot_be_decoded_ends_the_stream(client, primary):
    raw = client.stream_stream(f"/{INFERENCE}/ModelStreamInfer")  # bytes in and out
    call = raw()
    await call.write(b"\xff\xff\xff")
    assert await call.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelStreamInfer: the request is not a valid inference.ModelInferRequest" in await call.details()


async def test_a_primary_that_cannot_be_reached_is_named(tmp_path):
    worker, address = await _worker(tmp_path, "missing.sock")
    channel = grpc.aio.insecure_channel(address)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _unary(channel, "ServerLive", service_pb2.ServerLiveResponse)(service_pb2.ServerLiveRequest())
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"the primary server at unix:{tmp_path / 'missing.sock'} cannot be reached" in refused.value.details()
        call = _stream(channel)()
        await call.write(service_pb2.ModelInferRequest(model_name="a"))
        assert await call.code() is grpc.StatusCode.UNAVAILABLE
        assert "cannot be reached" in await call.details()
    finally:
        await channel.close()
        await worker.stop(0)


async def test_a_worker_serves_tls_as_the_server_does(tmp_path, primary):
    from tests.server.frontends.tls_helpers import write_tls_files

    files = write_tls_files(tmp_path)
    credentials = grpc.ssl_channel_credentials(
        files.ca_cert.read_bytes(), files.client_key.read_bytes(), files.client_cert.read_bytes()
    )
    settings = {
        "grpc_use_ssl_mutual": True,
        "grpc_server_cert": files.server_cert,
        "grpc_server_key": files.server_key,
        "grpc_root_cert": files.ca_cert,
    }
    worker, address = await _worker(tmp_path, "grpc.sock", **settings)
    channel, plaintext = grpc.aio.secure_channel(address, credentials), grpc.aio.insecure_channel(address)
    try:
        live = _unary(channel, "ServerLive", service_pb2.ServerLiveResponse)
        assert (await live(service_pb2.ServerLiveRequest(), timeout=20)).live
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _unary(plaintext, "ServerLive", service_pb2.ServerLiveResponse)(service_pb2.ServerLiveRequest())
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await plaintext.close()
        await channel.close()
        await worker.stop(0)


async def test_a_restricted_stream_is_checked_by_the_worker(tmp_path, primary):
    """The stream's LLM requests are served where it arrived: the worker checks the method's restriction itself
    (the server checks what it is sent)."""
    worker, address = await _worker(tmp_path, "grpc.sock", grpc_restricted_protocol=["inference:infer-key=abc"])
    channel = grpc.aio.insecure_channel(address)
    try:
        refused = _stream(channel)()
        assert await refused.code() is grpc.StatusCode.PERMISSION_DENIED
        assert (
            await refused.details()
            == "This protocol is restricted, expecting header 'infer-key' (category 'inference')"
        )
        allowed = _stream(channel)(metadata=(("infer-key", "abc"),))
        await allowed.write(service_pb2.ModelInferRequest(model_name="a", id="a"))
        await allowed.done_writing()
        assert [response.infer_response.id async for response in allowed] == ["a"]
        assert primary.calls[-1][0]["infer-key"] == "abc"
    finally:
        await channel.close()
        await worker.stop(0)
