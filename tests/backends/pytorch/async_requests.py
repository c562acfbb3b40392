"""Requests that are in flight together: tritonclient.grpc's async_infer, as Futures.

tritonclient.grpc sends at once from its own threads (tritonclient.http's async_infer only
sends while the caller yields to gevent, which a test waiting with time.sleep never does).
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import tritonclient.grpc as grpcclient


def send(client: grpcclient.InferenceServerClient, model: str, x: np.ndarray, name: str = "INPUT__0") -> Future:
    """The request's tritonclient InferResult as a Future; it raises what the server refused."""
    tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    future: Future = Future()

    def done(result, error) -> None:  # tritonclient calls it with keywords: result=, error=
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    client.async_infer(model, [tensor], callback=done)
    return future
