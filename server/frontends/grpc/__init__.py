"""KServe v2 gRPC (`inference.GRPCInferenceService`, from tritonclient's generated modules) on grpc.aio."""
