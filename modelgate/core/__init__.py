"""The bottom floor: what the gateway and the backends both need, importing neither.

Errors (one hierarchy, mapped once to HTTP and gRPC codes), inference requests and responses, the response
stream of a request, tensor datatypes and the BYTES codec, reading a `ModelConfig` from its files, the
Prometheus registry backends publish into, and the version. Everything here imports only the standard
library, numpy, protobuf/tritonclient's messages and prometheus_client.
"""
