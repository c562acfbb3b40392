"""A random-weight Llama checkpoint with a real byte-level BPE tokenizer, for engine tests."""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from tests.backends.llm.hf_checkpoints import save_random_checkpoint

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine and an apple a day keeps the doctor away",
    "héllo wörld, ünïcode café naïve façade 日本語 テキスト",
] * 20


def make_tokenizer(directory: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TEXT, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "chat_template": template, "model_max_length": 256})
    )
    return tokenizer


def make_tiny_checkpoint(directory: Path, architecture: str = "LlamaForCausalLM", **overrides) -> Path:
    tokenizer = make_tokenizer(directory)
    settings = dict(
        vocab_size=tokenizer.get_vocab_size(),
        bos_token_id=tokenizer.token_to_id("<s>"),
        eos_token_id=tokenizer.token_to_id("</s>"),
    )
    settings.update(overrides)
    save_random_checkpoint(architecture, directory, **settings)
    return directory
