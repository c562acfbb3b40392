"""KServe v2 gRPC (`inference.GRPCInferenceService`, from tritonclient's generated modules): grpcio's
threaded server for the transport, the servicer's coroutines on the event loop."""
