"""Helpers for tests of LLM serving: the tiny model served, requests to it, a reference engine, the LLM
metrics, tritonclient inputs and streams."""

from __future__ import annotations

import json
import queue
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from modelgate.backends.llm.engine import LLMEngine
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.sampling_params import SamplingParams
from tests.server_harness import RunningServer

WAIT_S = 30  # the bound of every wait: a response, a stream item, the engine going idle


# -- the tiny model that the serving tests' server (conftest.py) serves ---------------------------


MODEL = "tiny"
MAX_MODEL_LEN = 128
ENGINE_SETTINGS = {"num_kv_blocks": 64, "block_size": 4, "max_model_len": MAX_MODEL_LEN}
LABELS = {"model": MODEL, "version": "1"}
PROMPTS = ["quick brown", "the lazy dog", "a stitch in time", "apple a day", "café naïve"]
TOO_LONG = "the quick brown fox jumps over the lazy dog " * 40
LONG = MAX_MODEL_LEN - 12  # more tokens than a client waits for
GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}  # OpenAI SDK arguments


def wait_for(predicate, what: str) -> None:
    """Poll `predicate` until it holds, for at most 3 * WAIT_S; AssertionError naming `what` after that."""
    deadline = time.monotonic() + 3 * WAIT_S
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- requests to the server ---------------------------------------------------------------------


def model_url(server: RunningServer, route: str) -> str:
    return f"http://{server.http_url}/v2/models/{MODEL}/{route}"


def greedy_sampling(max_tokens: int, **fields) -> str:
    return json.dumps({"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, **fields})


def generate(server: RunningServer, prompt: str, max_tokens: int, **body) -> requests.Response:
    body = {"text_input": prompt, "sampling_parameters": greedy_sampling(max_tokens), **body}
    return requests.post(model_url(server, "generate"), json=body, timeout=WAIT_S)


def generate_stream(server: RunningServer, body: dict) -> tuple[requests.Response, list[dict]]:
    response = requests.post(model_url(server, "generate_stream"), json=body, timeout=WAIT_S)
    events = [json.loads(line[len("data: ") :]) for line in response.text.split("\n\n") if line.startswith("data: ")]
    return response, events


def completions_until_generating(server: RunningServer, num_prompts: int, at_least: int, before: dict) -> None:
    """POST /v1/completions with `num_prompts` long greedy prompts on a raw socket (a client that leaves without a
    word), wait until `at_least` tokens were generated since `before`, then close the connection."""
    body = json.dumps(
        {"model": MODEL, "prompt": ["hello"] * num_prompts, "max_tokens": LONG, "temperature": 0, "ignore_eos": True}
    ).encode()
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + WAIT_S
        while metric_delta(before, server_metrics(server), "modelgate_llm_generation_tokens_total") < at_least:
            assert time.monotonic() < deadline, "the request never started generating"
            time.sleep(0.005)


def stop_string(text: str) -> str:
    """Two characters from the second half of `text` (no U+FFFD, which may stand for held-back bytes)."""
    for start in range(len(text) // 2, len(text) - 1):
        candidate = text[start : start + 2]
        if "\ufffd" not in candidate:
            return candidate
    raise AssertionError(f"no usable stop string in {text!r}")


def chat_prompt_ids(checkpoint: Path, messages: list[dict]) -> list[int]:
    """The prompt as transformers renders the model's chat template."""
    from transformers import AutoTokenizer

    rendered = AutoTokenizer.from_pretrained(checkpoint).apply_chat_template(messages, add_generation_prompt=True)
    return list(rendered["input_ids"] if isinstance(rendered, Mapping) else rendered)


# -- the engine alone ---------------------------------------------------------------------------


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finish_reason: str
    logprobs: list[dict[int, float]]


class ReferenceEngine:
    """A checkpoint run in this process, one request at a time: what a solo run produces."""

    def __init__(self, checkpoint: Path, **engine_settings):
        self.engine = LLMEngine(checkpoint, EngineConfig(device="cpu", show_progress=False, **engine_settings))
        self.tokenizer = self.engine.tokenizer
        self._cache: dict = {}

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt)

    def token_texts(self, token_ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([token_id], skip_special_tokens=False) for token_id in token_ids]

    def greedy(self, prompt_ids: list[int], max_tokens: int, **sampling) -> Generation:
        """Greedy, EOS ignored (so exactly max_tokens unless a stop says otherwise)."""
        key = (tuple(prompt_ids), max_tokens, json.dumps(sampling, sort_keys=True))
        if key not in self._cache:
            params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, **sampling)
            self._cache[key] = self._run(prompt_ids, params)
        return self._cache[key]

    def _run(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        self.engine.add_request(f"ref-{len(self._cache)}", prompt_ids, params)
        text, token_ids, logprobs, reason = "", [], [], None
        for _ in range(10 * self.engine.max_model_len):
            if not self.engine.has_unfinished:
                break
            for output in self.engine.step():
                text += output.new_text
                token_ids += output.new_token_ids
                logprobs += output.logprobs
                reason = output.finish_reason if output.finished else reason
        assert not self.engine.has_unfinished
        return Generation(text, token_ids, reason, logprobs)


# -- metrics ------------------------------------------------------------------------------------


def llm_metrics(metrics_url: str, labels: dict[str, str]) -> dict[str, float]:
    """The modelgate_llm_* samples carrying exactly `labels` (histogram buckets left out), by name."""
    text = requests.get(metrics_url, timeout=WAIT_S).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("modelgate_llm_") and sample.labels == labels
    }


def wait_engine_idle(metrics_url: str, labels: dict[str, str]) -> dict[str, float]:
    """Poll the metrics until no request runs or waits and no KV block is held; returns them."""
    deadline = time.monotonic() + WAIT_S
    while True:
        metrics = llm_metrics(metrics_url, labels)
        idle = all(
            metrics.get(f"modelgate_llm_{name}", 0) == 0  # absent before the first request
            for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_ratio")
        )
        if idle or time.monotonic() > deadline:
            assert idle, f"the engine did not go idle: {metrics}"
            return metrics
        time.sleep(0.02)


def metric_delta(before: dict, after: dict, name: str) -> float:
    return after.get(name, 0) - before.get(name, 0)


def server_metrics(server: RunningServer) -> dict[str, float]:
    return llm_metrics(server.metrics_url, LABELS)


def wait_server_idle(server: RunningServer) -> dict[str, float]:
    return wait_engine_idle(server.metrics_url, LABELS)


# -- tritonclient -------------------------------------------------------------------------------


def llm_inputs(client_module, prompt: str, sampling: str, **flags) -> list:
    """text_input and sampling_parameters (BYTES) plus BOOL flags, as `client_module`'s InferInputs."""
    values = [
        ("text_input", "BYTES", np.array([prompt.encode()], dtype=object)),
        ("sampling_parameters", "BYTES", np.array([sampling.encode()], dtype=object)),
    ]
    values += [(name, "BOOL", np.array([flag])) for name, flag in flags.items()]
    inputs = []
    for name, datatype, array in values:
        inputs.append(client_module.InferInput(name, [1], datatype))
        inputs[-1].set_data_from_numpy(array)
    return inputs


def text_output(result) -> str:
    return result.as_numpy("text_output")[0].decode()


def string_output(result, name: str) -> str:
    return result.as_numpy(name)[0].decode()


def int_output(result, name: str) -> int:
    return int(result.as_numpy(name)[0])


def is_final(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


class GrpcStream:
    """A tritonclient.grpc client with one open stream; its callback's (result, error) pairs queue up."""

    def __init__(self, grpc_url: str, model: str):
        self.model = model
        self.client = grpcclient.InferenceServerClient(grpc_url)
        self.items: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.items.put((result, error)))

    def send(self, request_id: str, prompt: str, sampling: str, stream: bool = True, **flags) -> None:
        inputs = llm_inputs(grpcclient, prompt, sampling, stream=stream, **flags)
        self.client.async_stream_infer(self.model, inputs, request_id=request_id)

    def next(self):
        return self.items.get(timeout=WAIT_S)

    def collect(self, request_ids: set[str]) -> dict[str, list]:
        """Every request's results until each got its final response (errors fail the test)."""
        results: dict[str, list] = {request_id: [] for request_id in request_ids}
        unfinished = set(request_ids)
        while unfinished:
            result, error = self.next()
            assert error is None, error
            request_id = result.get_response().id
            results[request_id].append(result)
            if is_final(result):
                unfinished.discard(request_id)
        return results

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def serve_checkpoint(checkpoint: Path, repository: Path, **parameters) -> RunningServer:
    """A server of the test checkpoint as MODEL in `repository`, with ENGINE_SETTINGS plus `parameters` (e.g.
    tensor_parallel_size=2); the caller stops it."""
    from tests.server_harness import start_server

    shutil.copytree(checkpoint, repository / MODEL / "1")
    settings = dict(ENGINE_SETTINGS, show_progress="false", **parameters)
    (repository / MODEL / "config.pbtxt").write_text(
        f'name: "{MODEL}"\nbackend: "llm"\n'
        + "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in settings.items())
    )
    return start_server([repository])


def first_instance(running: RunningServer):
    """MODEL's first backend instance in `running` (tests that kill its engine's ranks read it)."""
    return running.server.manager._entries[MODEL].serving[1].scheduler.pool._instances[0]
