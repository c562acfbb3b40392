"""model_repository/tiny_llm/1, the checkpoint that clients/tiny_llm/train_tiny_llm.py writes, loads in
transformers and recites its corpus: greedy completions of corpus prompts, and chat through its template."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
jinja2_sandbox = pytest.importorskip("jinja2.sandbox")

MODEL_DIR = Path(__file__).resolve().parents[2] / "model_repository" / "tiny_llm" / "1"
CORPUS = Path(__file__).resolve().parents[2] / "clients" / "tiny_llm" / "corpus.txt"

COMPLETIONS = [
    ("The capital of France is", " Paris."),
    ("A cow says", " moo."),
    ("Question: What is the capital of Japan? Answer:", " The capital of Japan is Tokyo."),
]


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.PreTrainedTokenizerFast(tokenizer_file=str(MODEL_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def model():
    loaded = transformers.AutoModelForCausalLM.from_pretrained(MODEL_DIR)
    return loaded.eval()


@pytest.fixture(scope="module")
def tokenizer_config():
    return json.loads((MODEL_DIR / "tokenizer_config.json").read_text())


def greedy(model, tokenizer, prompt: str, add_special_tokens: bool = True) -> str:
    """The greedy continuation of `prompt` up to </s>, decoded without special tokens."""
    ids = tokenizer(prompt, add_special_tokens=add_special_tokens, return_tensors="pt").input_ids
    eos_id = tokenizer.convert_tokens_to_ids("</s>")
    with torch.no_grad():
        output = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
    new_ids = output[0, ids.shape[1] :].tolist()
    assert new_ids[-1] == eos_id, "the model should end its answer with </s>"
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def render(template: str, messages: list[dict], **env_options) -> str:
    environment = jinja2_sandbox.ImmutableSandboxedEnvironment(**env_options)
    return environment.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )


def test_checkpoint_files_and_architecture():
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # grouped-query attention
    assert config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 8 * 2**20


def test_tokenizer_adds_bos_and_decodes_cleanly(tokenizer):
    ids = tokenizer("The sky is blue.").input_ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<s>") == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The sky is blue."
    assert tokenizer.decode(tokenizer("Grüße, 42!", add_special_tokens=False).input_ids) == "Grüße, 42!"


@pytest.mark.parametrize("prompt, expected", COMPLETIONS)
def test_greedy_completion_recites_the_corpus(model, tokenizer, prompt, expected):
    assert (prompt + expected) in CORPUS.read_text()
    assert greedy(model, tokenizer, prompt) == expected


def test_chat_template_renders_and_the_model_answers(model, tokenizer, tokenizer_config):
    template = tokenizer_config["chat_template"]
    assert (tokenizer_config["bos_token"], tokenizer_config["eos_token"]) == ("<s>", "</s>")
    messages = [
        {"role": "user", "content": "What is your name?"},
        {"role": "assistant", "content": "My name is Tiny."},
        {"role": "user", "content": "What does a dog say?"},
    ]
    prompt = render(template, messages)
    assert (
        prompt == "<s>Question: What is your name? Answer: My name is Tiny.</s>Question: What does a dog say? Answer:"
    )
    # The LLM backend renders with trim_blocks/lstrip_blocks: the one-line template must not care.
    assert render(template, messages, trim_blocks=True, lstrip_blocks=True) == prompt
    # The rendered prompt already starts with <s>, so it is tokenized without adding another.
    assert greedy(model, tokenizer, prompt, add_special_tokens=False) == " A dog says woof."
