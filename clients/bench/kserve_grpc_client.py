"""KServe v2 gRPC `ModelStreamInfer` with tritonclient.grpc.aio: one stream per request.

The same inputs as `generate_stream` (extra_body keys go into `sampling_parameters`). The
request side of the stream stays open until the last response (final flag or a finish
reason), as Triton wants for decoupled models.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import tritonclient.grpc.aio as grpcclient

from modelgate.clients.bench.llm_client import Clock, LLMClient, RequestFailed, StreamOutcome, grpc_target

FINAL_PARAMETER = "triton_final_response"


class KServeGrpcStreamClient(LLMClient):
    protocol = "grpc"

    async def open(self) -> None:
        self.client = grpcclient.InferenceServerClient(grpc_target(self.settings.url))

    async def close(self) -> None:
        await self.client.close()

    async def stream(self, prompt: str | list[int], osl: int, clock: Clock) -> StreamOutcome:
        done = asyncio.Event()
        request = {
            "model_name": self.settings.model,
            "model_version": self.settings.model_version,
            "inputs": self._inputs(prompt, osl),
        }

        async def requests():
            yield request
            await done.wait()

        outcome = StreamOutcome()
        responses = self.client.stream_infer(requests(), stream_timeout=self.settings.request_timeout_s)
        try:
            async for result, error in responses:
                if error is not None:
                    raise RequestFailed(str(error))
                if self._add_result(result, outcome, clock.elapsed()):
                    break
        finally:
            done.set()
            responses.cancel()
        return outcome

    def _inputs(self, prompt: str | list[int], osl: int) -> list[grpcclient.InferInput]:
        sampling = {**self.sampling_fields(osl), **self.settings.extra_body}
        if isinstance(prompt, str):
            prompt_input = ("text_input", "BYTES", np.array([prompt.encode()], dtype=object))
        else:
            prompt_input = ("input_ids", "INT32", np.array(prompt, dtype=np.int32))
        values = [
            prompt_input,
            ("stream", "BOOL", np.array([True])),
            ("exclude_input_in_output", "BOOL", np.array([True])),
            ("sampling_parameters", "BYTES", np.array([json.dumps(sampling).encode()], dtype=object)),
        ]
        inputs = []
        for name, datatype, array in values:
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    @staticmethod
    def _add_result(result, outcome: StreamOutcome, elapsed: float) -> bool:
        """Adds one response; True when it was the last."""
        response = result.get_response()
        parameters = response.parameters
        final = FINAL_PARAMETER in parameters and parameters[FINAL_PARAMETER].bool_param
        names = {output.name for output in response.outputs}
        if "num_output_tokens" in names:
            cumulative = int(result.as_numpy("num_output_tokens").reshape(-1)[0])
            outcome.timeline.add(elapsed, cumulative - (outcome.num_output_tokens or 0))
            outcome.num_output_tokens = cumulative
        elif "text_output" in names:
            outcome.timeline.add(elapsed, None if result.as_numpy("text_output").reshape(-1)[0] else 0)
        if "num_input_tokens" in names:
            outcome.num_input_tokens = int(result.as_numpy("num_input_tokens").reshape(-1)[0])
        if "finish_reason" in names:
            reason = result.as_numpy("finish_reason").reshape(-1)[0]
            reason = reason.decode() if isinstance(reason, bytes) else str(reason)
            outcome.finish_reason = reason or outcome.finish_reason
        return final or bool(outcome.finish_reason)
