"""One inference of the largest batch, run while a load is measured, so that the figure kept for a model
includes the activations its allocator keeps after serving (a ResNet-50 at batch 64 holds more for its
activations than for its weights).

Only for tensor backends (pytorch, onnxruntime), whose models are functions of their inputs: a python model's
execute may do anything, and an LLM sizes its own activations. The probe's inputs are zeros of the largest
batch (`max_batch_size`) with variable dimensions at 1; a model whose inputs cannot be made so (BYTES, shape
tensors) or whose probe fails is measured as loaded, which the log says.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.inference_types import InferRequest, InferTensor
from modelgate.core.tensors.datatypes import from_config_name
from modelgate.server.scheduling.instance_pool import InstancePool

logger = logging.getLogger(__name__)

PROBED_BACKENDS = ("pytorch", "onnxruntime")


def probe_request(config: ModelConfig) -> InferRequest | None:
    """Zeros of the largest batch for every input; None when the inputs cannot be made up."""
    if config.backend not in PROBED_BACKENDS or config.model_transaction_policy.decoupled or not config.input:
        return None
    inputs = {}
    for tensor in config.input:
        datatype = from_config_name(model_data_type_name(tensor.data_type))
        if datatype.is_bytes or tensor.is_shape_tensor:
            return None
        dims = [1 if d < 0 else d for d in tensor.dims]
        shape = tuple(([config.max_batch_size] if config.max_batch_size > 0 else []) + dims)
        inputs[tensor.name] = InferTensor(tensor.name, datatype.wire_name, shape, np.zeros(shape, datatype.numpy_dtype))
    return InferRequest(config.name, id="memory-probe", inputs=inputs)


async def probe_instances(pool: InstancePool, config: ModelConfig, instances: int) -> None:
    """Run the probe once on each instance (they run at once, so each instance takes one)."""
    request = probe_request(config)
    if request is None:
        return
    results = await asyncio.gather(*(pool.run([request]) for _ in range(instances)), return_exceptions=True)
    for result in results:
        error = result if isinstance(result, BaseException) else result[0].responses[0].error
        if error is not None:
            logger.info("memory probe of model '%s' failed (%s); its figure covers its load only", config.name, error)
            return


def model_data_type_name(data_type: int) -> str:
    from tritonclient.grpc.model_config_pb2 import DataType

    return DataType.Name(data_type)
