"""The floor for gRPC benchmarks: grpcio's threaded server answering `add_sub` in its handler, nothing else.

It runs the transport modelgate's gRPC frontend runs (server/frontends/grpc/server.py: `grpc.server` over a
ThreadPoolExecutor whose threads are SCHED_BATCH, the same message-size options) and answers ModelInfer with
INPUT0 + INPUT1 and INPUT0 - INPUT1 computed in the handler thread: no event loop, no model process, no
validation. Its rate on one core is what grpcio alone allows a Python server on that core; the gap between it
and a full server is the server's own work.

    python benchmarks/bare_grpc_peer.py --grpc-port 8101 --http-port 8100

`--http-port` answers GET /v2/health/ready and GET /v2 (server metadata), so that the benchmarks can wait
for it and name it as they do the real servers.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.server.frontends.grpc.server import MAX_HANDLER_THREADS, MAX_MESSAGE_BYTES, batch_scheduling


class AddSub(service_pb2_grpc.GRPCInferenceServiceServicer):
    """ModelInfer of any model name: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (FP32, raw contents)."""

    def ModelInfer(self, request: service_pb2.ModelInferRequest, context) -> service_pb2.ModelInferResponse:
        first, second = (np.frombuffer(raw, dtype="<f4") for raw in request.raw_input_contents[:2])
        response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        for name, values in (("OUTPUT0", first + second), ("OUTPUT1", first - second)):
            response.outputs.add(name=name, datatype="FP32", shape=[len(values)])
            response.raw_output_contents.append(values.tobytes())
        return response


def serve_grpc(port: int) -> grpc.Server:
    server = grpc.server(
        ThreadPoolExecutor(MAX_HANDLER_THREADS, initializer=batch_scheduling),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=None,
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(AddSub(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/v2/health/ready":
            body = b""
        elif self.path == "/v2":
            body = json.dumps({"name": "grpcio", "version": grpc.__version__, "extensions": []}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True, help="readiness and metadata only")
    args = parser.parse_args(argv)
    server = serve_grpc(args.grpc_port)
    status = ThreadingHTTPServer(("127.0.0.1", args.http_port), _Status)
    threading.Thread(target=status.serve_forever, daemon=True).start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    status.shutdown()
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
