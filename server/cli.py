"""`modelgate serve`: flags (named as Triton's) -> settings -> the server on one event loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from modelgate.core.cli_help import add_command
from modelgate.core.version import DEFAULT_SERVER_NAME
from modelgate.server.frontends.api_categories import CATEGORIES
from modelgate.server.frontends.api_restrictions import GRPC_FLAG, HTTP_FLAG
from modelgate.server.settings import DEFAULT_HTTP_MAX_INPUT_SIZE, MAX_GRPC_MESSAGE_BYTES, ServerSettings


def add_serve_command(commands) -> None:
    """The `serve` subcommand; flags are named as Triton's where Triton has one."""
    serve = add_command(commands, "serve", "serve the models of one or more model repositories")
    serve.add_argument(
        "--model-repository",
        "--model-store",
        action="append",
        dest="model_repository",
        help="model repository folder; repeatable (a model name in two is an error); default ./model_repository",
    )
    serve.add_argument(
        "--server-name",
        default=DEFAULT_SERVER_NAME,
        help="the name server metadata reports (default modelgate); 'triton' for clients that check Triton's name",
    )
    serve.add_argument("--http-address", default="0.0.0.0", help="address the HTTP/REST frontend binds")
    serve.add_argument("--http-port", type=int, default=8000, help="KServe v2 HTTP, generate and OpenAI routes")
    serve.add_argument("--grpc-address", default="0.0.0.0", help="address the gRPC frontend binds")
    serve.add_argument("--grpc-port", type=int, default=8001, help="inference.GRPCInferenceService and health")
    serve.add_argument("--metrics-port", type=int, default=8002, help="Prometheus text at /metrics")
    serve.add_argument(
        "--metrics-address", default="", help="address the metrics endpoint binds (default: --http-address's)"
    )
    serve.add_argument("--allow-http", type=_boolean, default=True, help="serve HTTP/REST (true or false)")
    serve.add_argument("--allow-grpc", type=_boolean, default=True, help="serve gRPC (true or false)")
    serve.add_argument("--allow-metrics", type=_boolean, default=True, help="serve /metrics (true or false)")
    serve.add_argument(
        "--allow-gpu-metrics",
        type=_boolean,
        default=True,
        help="report nv_gpu_* and nv_energy_consumption per GPU (true or false; absent without a GPU either way)",
    )
    serve.add_argument(
        "--allow-cpu-metrics", type=_boolean, default=True, help="report nv_cpu_* for the host (true or false)"
    )
    serve.add_argument(
        "--metrics-interval-ms",
        type=int,
        default=2000,
        help="milliseconds between samples of the GPU and CPU figures on /metrics",
    )
    serve.add_argument(
        "--model-control-mode",
        choices=["none", "explicit", "poll"],
        default="none",
        help="none: load every model, no load API; explicit: --load-model and the load/unload API; "
        "poll: rescan the repositories every --repository-poll-secs",
    )
    serve.add_argument(
        "--load-model",
        action="append",
        default=[],
        help="model to load at start in explicit mode (repeatable, '*' for all)",
    )
    serve.add_argument(
        "--allow-model-file-uploads",
        type=_boolean,
        nargs="?",
        const=True,
        default=False,
        help="accept model files sent with a load request ('file:' parameters; a python model's run as code); "
        "explicit mode only; off by default",
    )
    serve.add_argument(
        "--allow-shared-memory",
        "--allow-client-shm",
        dest="allow_shared_memory",
        type=_boolean,
        nargs="?",
        const=True,
        default=False,
        help="let clients register system and CUDA shared-memory regions and send tensors through them (Triton's "
        "shared-memory extension; --allow-client-shm is Triton's spelling); off by default",
    )
    serve.add_argument("--repository-poll-secs", type=float, default=15.0, help="seconds between rescans in poll mode")
    serve.add_argument(
        "--strict-readiness",
        type=_boolean,
        default=True,
        help="true: /v2/health/ready only once every model asked to load is ready; false: once the server serves",
    )
    serve.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=30.0,
        help="seconds shutdown waits for open connections and model unloads",
    )
    serve.add_argument(
        "--http-max-input-size",
        type=int,
        default=DEFAULT_HTTP_MAX_INPUT_SIZE,
        help="largest HTTP request body in bytes, after gzip/deflate decoding; larger ones get 413 (as Triton: 64 MiB)",
    )
    serve.add_argument(
        "--http-workers",
        type=int,
        default=1,
        help="processes serving the HTTP and gRPC ports, the server included (default 1). More spread streamed LLM "
        "responses over more cores: each extra process serves LLM generation (HTTP and ModelStreamInfer) over the "
        "same engines and sends every other request on to the server",
    )
    serve.add_argument(
        "--grpc-max-input-size",
        type=int,
        default=MAX_GRPC_MESSAGE_BYTES,
        help="largest gRPC request message in bytes; larger ones get RESOURCE_EXHAUSTED (default 2 GiB - 1, "
        "Triton's fixed gRPC limit)",
    )
    serve.add_argument(
        "--gpu-memory-limit",
        default=None,
        help="memory the models may hold on each GPU: bytes (40GiB) or a fraction (0.8, 80%%); loads that do not "
        "fit are refused (default: the GPU's size)",
    )
    serve.add_argument(
        "--cpu-memory-limit",
        default=None,
        help="host memory the models may hold, as --gpu-memory-limit; set, CPU model loads are measured one at a "
        "time and refused when they do not fit (default: not accounted)",
    )
    serve.add_argument(
        "--model-load-on-demand",
        type=_boolean,
        nargs="?",
        const=True,
        default=False,
        help="explicit mode: a request naming a model of the repository that is not loaded loads it (and waits); a "
        "load that does not fit a memory limit evicts the least recently used idle models",
    )
    serve.add_argument(
        "--pin-model", action="append", default=[], help="a model load on demand never evicts (repeatable)"
    )
    serve.add_argument(
        "--cache-config",
        action="append",
        default=[],
        metavar="local,size=BYTES",
        help="the response cache, as Triton's flag: local,size=<bytes> (repeatable); models enable it with "
        "response_cache { enable: true } (default: no cache)",
    )
    serve.add_argument(
        "--rate-limit",
        type=str.lower,
        choices=["off", "execution_count"],
        default="off",
        help="execution_count: an instance starts an execution only when the resources its instance_group's "
        "rate_limiter lists are free, across all models, the waiting instances chosen by priority and the number of "
        "times each ran; off (default): run as soon as an instance is free, rate_limiter configs accepted and ignored",
    )
    serve.add_argument(
        "--rate-limit-resource",
        action="append",
        default=[],
        metavar="NAME:COUNT[:DEVICE]",
        help="copies of a rate-limiter resource (repeatable; names case-insensitive); without DEVICE on every device, "
        "and for resources the configs mark global (DEVICE ignored); default: the largest count any instance lists",
    )
    serve.add_argument("--log-verbose", type=int, default=0, help="verbosity of modelgate's own logs (0: info)")
    _add_restriction_flags(serve)
    for protocol in ("grpc", "http"):
        _add_tls_flags(serve, protocol)
    serve.set_defaults(run=_serve)


def _add_restriction_flags(serve: argparse.ArgumentParser) -> None:
    categories = ", ".join(CATEGORIES)
    for flag, protocol, answer in (
        (HTTP_FLAG, "HTTP header", "403"),
        (GRPC_FLAG, "gRPC metadata key (lower case)", "PERMISSION_DENIED"),
    ):
        serve.add_argument(
            flag,
            action="append",
            default=[],
            metavar="CATEGORY[,CATEGORY...]:HEADER=VALUE",
            help=f"requests to these categories need this {protocol} with this value, else {answer}; repeatable, "
            f"a category at most once; categories: {categories}",
        )


def _add_tls_flags(serve: argparse.ArgumentParser, protocol: str) -> None:
    """gRPC's are Triton's flags; Triton has no HTTP TLS, so HTTP's are the same names under --http-."""
    name = "gRPC" if protocol == "grpc" else "HTTP"
    flag = f"--{protocol}"
    on_off = {"type": _boolean, "nargs": "?", "const": True, "default": False}
    serve.add_argument(f"{flag}-use-ssl", **on_off, help=f"serve {name} over TLS only (needs {flag}-server-cert/-key)")
    serve.add_argument(
        f"{flag}-use-ssl-mutual",
        **on_off,
        help=f"TLS with client certificates signed by {flag}-root-cert required (turns {flag}-use-ssl on)",
    )
    serve.add_argument(
        f"{flag}-server-cert",
        type=Path,
        help=f"PEM certificate chain of the {name} server, for {flag}-use-ssl (without which the port is plaintext)",
    )
    serve.add_argument(
        f"{flag}-server-key",
        type=Path,
        help=f"PEM private key (unencrypted) of {flag}-server-cert, for {flag}-use-ssl (without which: plaintext)",
    )
    serve.add_argument(
        f"{flag}-root-cert",
        type=Path,
        help=f"PEM CA certificate(s) that client certificates are checked against; without it (allowed only "
        f"without {flag}-use-ssl-mutual) clients present none",
    )


# Flags whose argparse destination is the settings field of the same name.
_RESTRICTION_AND_TLS_FIELDS = (
    "http_restricted_api",
    "grpc_restricted_protocol",
    *(
        f"{protocol}_{option}"
        for protocol in ("http", "grpc")
        for option in ("use_ssl", "use_ssl_mutual", "server_cert", "server_key", "root_cert")
    ),
)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = ServerSettings(
            model_repository=args.model_repository or ["model_repository"],
            server_name=args.server_name,
            http_address=args.http_address,
            http_port=args.http_port,
            grpc_address=args.grpc_address,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            metrics_address=args.metrics_address,
            allow_http=args.allow_http,
            allow_grpc=args.allow_grpc,
            allow_metrics=args.allow_metrics,
            allow_gpu_metrics=args.allow_gpu_metrics,
            allow_cpu_metrics=args.allow_cpu_metrics,
            metrics_interval_ms=args.metrics_interval_ms,
            model_control_mode=args.model_control_mode,
            load_model=args.load_model,
            allow_model_file_uploads=args.allow_model_file_uploads,
            allow_shared_memory=args.allow_shared_memory,
            repository_poll_secs=args.repository_poll_secs,
            exit_timeout_secs=args.exit_timeout_secs,
            strict_readiness=args.strict_readiness,
            log_verbose=args.log_verbose,
            http_max_input_size=args.http_max_input_size,
            http_workers=args.http_workers,
            grpc_max_input_size=args.grpc_max_input_size,
            gpu_memory_limit=args.gpu_memory_limit,
            cpu_memory_limit=args.cpu_memory_limit,
            model_load_on_demand=args.model_load_on_demand,
            pin_model=args.pin_model,
            cache_config=args.cache_config,
            rate_limit=args.rate_limit,
            rate_limit_resource=args.rate_limit_resource,
            **{key: getattr(args, key) for key in _RESTRICTION_AND_TLS_FIELDS},
        )
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            # A check across flags (TLS) has no one field; its message names the flags itself.
            where = f"--{field.replace('_', '-')}: " if field else ""
            print(f"modelgate serve: {where}{error['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from modelgate.server.runtime import serve_forever

    try:
        stopped_in_time = _event_loop_runner()(serve_forever(settings))
    except KeyboardInterrupt:
        stopped_in_time = True
    if not stopped_in_time:
        # Threads still in a model's execute would keep the interpreter from exiting: the budget is spent, so
        # the process ends now (stub processes and the LLM engine see the server go and end themselves).
        logging.getLogger(__name__).warning("exiting with work unfinished: --exit-timeout-secs ran out")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 0


def _event_loop_runner():
    """uvloop where installed (faster I/O), asyncio's loop otherwise."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
