"""`bench llm` prompt options end to end: random-token prompts with a shared prefix against tiny_llm, the
saved JSONL agreeing with what the server counted, and the flags' errors without a tokenizer."""

from __future__ import annotations

import json

import pytest

from modelgate.cli import main
from modelgate.clients.bench.kserve_grpc_client import KServeGrpcStreamClient
from modelgate.clients.bench.kserve_http_client import KServeGenerateStreamClient
from modelgate.clients.bench.llm_bench import run_llm_bench
from modelgate.clients.bench.llm_settings import LengthSettings, LLMBenchSettings, LoadSettings, PromptSettings
from modelgate.clients.bench.openai_client import OpenAIClient
from modelgate.clients.bench.prompt_file import read_saved_prompts
from tests.server_harness import EXAMPLE_REPOSITORY, copy_example_model, start_server

MODEL = "tiny_llm"
TOKENIZER = EXAMPLE_REPOSITORY / MODEL / "1"


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    model_dir = copy_example_model(repository, MODEL)
    with (model_dir / "config.pbtxt").open("a") as config:
        config.write('parameters { key: "show_progress" value { string_value: "false" } }\n')
    running = start_server([repository])
    yield running
    running.stop()


def test_saved_prompts_hold_the_ids_the_server_counted(llm_server, tmp_path):
    saved = tmp_path / "sent.jsonl"
    result = run_llm_bench(
        LLMBenchSettings(
            url=llm_server.http_url,
            model=MODEL,
            tokenizer=TOKENIZER,
            prompts=PromptSettings(prefix_len=8, save_file=saved),
            lengths=LengthSettings(pattern="uniform", isl_min=12, isl_max=40, osl=4),
            load=LoadSettings(concurrency=2, num_requests=6, warmup_requests=1, seed=4),
            output_dir=tmp_path,
            plots=False,
            progress=False,
        )
    )
    assert all(record.ok for record in result.records) and saved in result.files
    prompts = read_saved_prompts(saved)
    assert [p.index for p in prompts] == [r.index for r in result.records] == list(range(6))  # no warm-up line
    for prompt, record in zip(prompts, result.records):
        assert prompt.isl == record.isl == record.planned_isl  # record.isl: the server's num_input_tokens
        assert prompt.osl == record.osl == record.planned_osl
    assert len({p.isl for p in prompts}) > 1
    assert len({tuple(p.token_ids[:9]) for p in prompts}) == 1  # BOS and the shared prefix
    assert len({p.token_ids[9] for p in prompts}) > 1  # then each prompt's own
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["settings"]["prompt_source"] == "random-tokens"
    assert "prompt" not in document["requests"][0]  # the ids live in the prompts file only


@pytest.mark.parametrize("protocol", ["generate_stream", "grpc", "openai-completions"])
def test_prompts_sent_as_token_ids_are_the_ids_the_server_counts(llm_server, tmp_path, monkeypatch, protocol):
    """--send-token-ids: the server takes the ids as they are (its num_input_tokens is their count, BOS
    included) and streams exactly the output asked for; the saved prompts are the ids sent."""
    sent = []
    for client in (KServeGenerateStreamClient, KServeGrpcStreamClient, OpenAIClient):
        original = client.stream

        async def spy(self, prompt, osl, clock, original=original):
            sent.append(prompt)
            return await original(self, prompt, osl, clock)

        monkeypatch.setattr(client, "stream", spy)
    saved = tmp_path / "sent.jsonl"
    result = run_llm_bench(
        LLMBenchSettings(
            url=llm_server.grpc_url if protocol == "grpc" else llm_server.http_url,
            protocol=protocol,
            model=MODEL,
            tokenizer=TOKENIZER,
            prompts=PromptSettings(send_token_ids=True, save_file=saved),
            lengths=LengthSettings(pattern="uniform", isl_min=10, isl_max=30, osl=3),
            load=LoadSettings(concurrency=2, num_requests=4, warmup_requests=0, seed=5),
            plots=False,
            progress=False,
        )
    )
    assert all(record.ok for record in result.records), [record.error for record in result.records]
    saved_prompts = read_saved_prompts(saved)
    assert sorted(sent) == sorted(prompt.token_ids for prompt in saved_prompts)  # the ids went out, not text
    for prompt, record in zip(saved_prompts, result.records):
        assert prompt.isl == record.isl == record.planned_isl
        assert prompt.osl == record.osl == record.planned_osl


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prompt-source", "random-tokens"], "'random-tokens' needs a tokenizer"),
        (["--save-prompts", "sent.jsonl"], "saving prompts records their token ids: it needs a tokenizer"),
        (["--prefix-len", "8"], "a shared prefix (prefix_len) is built of random tokens"),
        (["--tokenizer", str(TOKENIZER), "--prompt-source", "corpus", "--prefix-len", "8"], "built of random tokens"),
        (["--send-token-ids"], "sending prompts as token ids needs a tokenizer"),
        (["--tokenizer", str(TOKENIZER), "--send-token-ids", "--protocol", "openai-chat"], "openai-chat takes"),
    ],
)
def test_prompt_flags_that_cannot_be_honoured_are_refused(flags, message, capsys):
    # Refused while reading the settings, before any connection: no server needed.
    assert main(["bench", "llm", "--url", "localhost:1", "-m", MODEL, "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err


def test_an_isl_shorter_than_the_shared_prefix_stops_the_run(capsys):
    flags = ["--tokenizer", str(TOKENIZER), "--prefix-len", "8", "--isl", "9", "--num-requests", "1"]
    assert main(["bench", "llm", "--url", "localhost:1", "-m", MODEL, "--no-progress", *flags]) == 2
    assert "ISL 9 leaves no token of the prompt's own" in capsys.readouterr().err
