"""Server settings: one immutable pydantic model, built from the CLI flags (named as Triton's)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelgate.core.byte_sizes import parse_limit
from modelgate.core.version import DEFAULT_SERVER_NAME
from modelgate.server.frontends.api_restrictions import GRPC_FLAG, HTTP_FLAG, HeaderRule, parse_restrictions
from modelgate.server.frontends.tls import TlsFiles, checked_tls_files
from modelgate.server.rate_limiter.rate_limiter import RateLimiter
from modelgate.server.rate_limiter.resource_flags import parse_rate_limit_resources
from modelgate.server.response_cache.cache_settings import CacheSettings, parse_cache_config

DEFAULT_HTTP_MAX_INPUT_SIZE = 64 * 1024 * 1024
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1  # protobuf's own limit on one message


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_repository: list[Path] = Field(min_length=1)
    # The `name` of server metadata: clients written for Triton may check it is "triton" (its own client examples
    # do). The version reported stays modelgate's, and the extensions those it implements.
    server_name: str = Field(DEFAULT_SERVER_NAME, min_length=1, max_length=128, pattern=r"^[!-~]+$")
    http_address: str = "0.0.0.0"
    http_port: int = Field(8000, ge=0, le=65535)
    grpc_address: str = "0.0.0.0"
    grpc_port: int = Field(8001, ge=0, le=65535)
    metrics_port: int = Field(8002, ge=0, le=65535)
    metrics_address: str = ""  # "": the HTTP address, as before the flag existed
    allow_http: bool = True
    allow_grpc: bool = True
    allow_metrics: bool = True
    allow_gpu_metrics: bool = True  # nv_gpu_*, nv_energy_consumption (absent without a GPU either way)
    allow_cpu_metrics: bool = True  # nv_cpu_*
    metrics_interval_ms: int = Field(2000, ge=1)  # how often the hardware figures are sampled (Triton's default)
    model_control_mode: Literal["none", "explicit", "poll"] = "none"
    load_model: list[str] = Field(default_factory=list)
    allow_model_file_uploads: bool = False  # `file:` parameters of load requests (model files that may run as code)
    # Client-registered shared-memory regions (--allow-shared-memory): a network client could otherwise make the
    # server open host and GPU memory of its naming.
    allow_shared_memory: bool = False
    repository_poll_secs: float = Field(15.0, gt=0)
    exit_timeout_secs: float = Field(30.0, ge=0)
    strict_readiness: bool = True
    log_verbose: int = Field(0, ge=0)
    # Triton's default for --http-max-input-size; gRPC takes what protobuf can (Triton's INT32_MAX) by default.
    http_max_input_size: int = Field(DEFAULT_HTTP_MAX_INPUT_SIZE, ge=1)
    # Processes serving the HTTP and gRPC ports, the server's own included (frontend_workers/): more than one
    # spreads the per-token work of streamed LLM responses over several cores. One count for both protocols, as
    # vLLM's --api-server-count: a worker process serves whichever of them the server serves.
    http_workers: int = Field(1, ge=1, le=64)
    grpc_max_input_size: int = Field(MAX_GRPC_MESSAGE_BYTES, ge=1, le=MAX_GRPC_MESSAGE_BYTES)
    # Flag values `<category>[,<category>...]:<header>=<value>` (api_restrictions.py); checked here, parsed
    # again by `http_restrictions()` / `grpc_restrictions()`.
    http_restricted_api: list[str] = Field(default_factory=list)
    grpc_restricted_protocol: list[str] = Field(default_factory=list)
    # TLS (tls.py): files named only on the command line; checked here, read when the frontend starts.
    http_use_ssl: bool = False
    http_use_ssl_mutual: bool = False
    http_server_cert: Path | None = None
    http_server_key: Path | None = None
    http_root_cert: Path | None = None
    grpc_use_ssl: bool = False
    grpc_use_ssl_mutual: bool = False
    grpc_server_cert: Path | None = None
    grpc_server_key: Path | None = None
    grpc_root_cert: Path | None = None

    # Per device: bytes ("40GiB") or a fraction of it ("0.8", "80%"). None: a GPU's size; the host unaccounted.
    gpu_memory_limit: str | None = None
    cpu_memory_limit: str | None = None
    model_load_on_demand: bool = False  # explicit mode: requests load their model; idle models are evicted (LRU)
    pin_model: list[str] = Field(default_factory=list)  # never evicted
    # Triton's `--cache-config local,size=<bytes>` (repeatable); empty: no response cache.
    cache_config: list[str] = Field(default_factory=list)
    # Triton's rate limiter: `execution_count` makes executions wait for their instance's rate_limiter resources;
    # `off` accepts the configs' rate_limiter fields and ignores them, as Triton.
    rate_limit: Literal["off", "execution_count"] = "off"
    rate_limit_resource: list[str] = Field(default_factory=list)  # <name>:<count>[:<device>], repeatable

    @field_validator("rate_limit_resource")
    @classmethod
    def _rate_limit_resources_parse(cls, values: list[str]) -> list[str]:
        parse_rate_limit_resources(values)  # ValueError names the value and the format
        return values

    @model_validator(mode="after")
    def _resources_need_the_rate_limiter(self) -> ServerSettings:
        if self.rate_limit_resource and self.rate_limit == "off":
            raise ValueError("--rate-limit-resource needs --rate-limit execution_count (the rate limiter is off)")
        return self

    def rate_limiter(self) -> RateLimiter | None:
        """A new rate limiter for the server, None with --rate-limit off."""
        if self.rate_limit == "off":
            return None
        return RateLimiter(parse_rate_limit_resources(self.rate_limit_resource))

    @field_validator("cache_config")
    @classmethod
    def _cache_config_parses(cls, values: list[str]) -> list[str]:
        parse_cache_config(values)  # ValueError says what is allowed
        return values

    def response_cache(self) -> CacheSettings | None:
        """The response cache the flags describe, None for none."""
        return parse_cache_config(self.cache_config)

    @field_validator("gpu_memory_limit", "cpu_memory_limit")
    @classmethod
    def _limit_is_a_size(cls, limit: str | None) -> str | None:
        if limit is not None:
            parse_limit(limit, 2**60)  # ValueError says what is allowed
        return limit

    @model_validator(mode="after")
    def _on_demand_needs_explicit_mode(self) -> ServerSettings:
        if self.model_load_on_demand and self.model_control_mode != "explicit":
            raise ValueError("--model-load-on-demand needs --model-control-mode explicit")
        return self

    @field_validator("model_repository")
    @classmethod
    def _repositories_exist(cls, paths: list[Path]) -> list[Path]:
        missing = [str(p) for p in paths if not Path(p).is_dir()]
        if missing:
            raise ValueError(f"model repository folder(s) not found: {', '.join(missing)}")
        return paths

    @field_validator("http_restricted_api")
    @classmethod
    def _http_restrictions_parse(cls, values: list[str]) -> list[str]:
        parse_restrictions(values, HTTP_FLAG)
        return values

    @field_validator("grpc_restricted_protocol")
    @classmethod
    def _grpc_restrictions_parse(cls, values: list[str]) -> list[str]:
        parse_restrictions(values, GRPC_FLAG)
        return values

    @model_validator(mode="after")
    def _tls_files_usable(self) -> ServerSettings:
        self.http_tls()
        self.grpc_tls()
        return self

    def http_restrictions(self) -> dict[str, HeaderRule]:
        """Restricted category -> the header it needs (--http-restricted-api)."""
        return parse_restrictions(self.http_restricted_api, HTTP_FLAG)

    def grpc_restrictions(self) -> dict[str, HeaderRule]:
        """Restricted category -> the metadata it needs (--grpc-restricted-protocol)."""
        return parse_restrictions(self.grpc_restricted_protocol, GRPC_FLAG)

    def http_tls(self) -> TlsFiles | None:
        """The HTTP frontend's TLS files, None for plaintext; ValueError naming the flag and path if unusable."""
        return checked_tls_files(
            "http",
            self.http_use_ssl,
            self.http_use_ssl_mutual,
            self.http_server_cert,
            self.http_server_key,
            self.http_root_cert,
        )

    def grpc_tls(self) -> TlsFiles | None:
        """The gRPC frontend's TLS files, None for plaintext; ValueError naming the flag and path if unusable."""
        return checked_tls_files(
            "grpc",
            self.grpc_use_ssl,
            self.grpc_use_ssl_mutual,
            self.grpc_server_cert,
            self.grpc_server_key,
            self.grpc_root_cert,
        )
