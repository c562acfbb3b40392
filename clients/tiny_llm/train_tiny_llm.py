"""Train `model_repository/tiny_llm`: a ~1M-parameter Llama that memorises `corpus.txt`.

It exists so that a freshly installed server has an LLM that answers with recognisable text on a laptop CPU.
The script trains a byte-level BPE tokenizer on the corpus, trains a small `LlamaForCausalLM` on every corpus
line wrapped in `<s> ... </s>`, writes a Hugging Face checkpoint (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with a chat template) and prints greedy samples.

    python clients/tiny_llm/train_tiny_llm.py --output model_repository/tiny_llm/1

Runs are reproducible for a given seed and --threads (float sums depend on the thread count and, slightly,
on the CPU; the completions do not).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [UNK, BOS, EOS]  # ids 0, 1, 2 as in Llama 2

# One line so that jinja2's trim_blocks/lstrip_blocks (used by the LLM backend) cannot change the output.
# It renders the corpus' "Question: ... Answer: ..." lines: a user turn becomes "Question: <text> ", an
# assistant turn "Answer: <text></s>", and the generation prompt "Answer:". System messages are dropped:
# the model never saw any.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}Question: {{ message['content'] | trim }} "
    "{% elif message['role'] == 'assistant' %}Answer: {{ message['content'] | trim }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Answer:{% endif %}"
)

SAMPLE_PROMPTS = [
    "The capital of France is",
    "The capital of Japan is",
    "Berlin is the capital of",
    "The sky is",
    "A cow says",
    "A baby cat is called a",
    "The day after Monday is",
    "One, two, three,",
    "Two plus three is",
    "The opposite of hot is",
    "Once upon a time,",
    "Question: What colour is grass? Answer:",
    "Question: Who are you? Answer:",
]
SAMPLE_CHATS = [
    [{"role": "user", "content": "What is the capital of Italy?"}],
    [{"role": "user", "content": "What does a dog say?"}],
    [
        {"role": "user", "content": "What is your name?"},
        {"role": "assistant", "content": "My name is Tiny."},
        {"role": "user", "content": "What is the capital of Spain?"},
    ],
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus.txt", help="one training sequence per line")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "model_repository" / "tiny_llm" / "1")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay to 10%%)")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--intermediate-size", type=int, default=512)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--num-kv-heads", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=256, help="max_position_embeddings and model_max_length")
    parser.add_argument(
        "--multi-turn-fraction",
        type=float,
        default=0.1,
        help="share of extra examples that chain two Question/Answer lines, as the chat template does",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads; 1 keeps float sums in one order whatever the machine"
    )
    parser.add_argument("--log-every", type=int, default=100)
    return parser.parse_args(argv)


def read_lines(corpus: Path) -> list[str]:
    """The corpus' training sequences: non-blank lines that are not '#' comments."""
    lines = (line.strip() for line in corpus.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# ---------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(lines: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (as GPT-2/Llama 3): any text encodes, decode() gives back the text with its spaces."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    # add_special_tokens=True prepends <s>, as Llama tokenizers do (add_bos_token).
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


def tokenizer_config(max_len: int) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


# ------------------------------------------------------------------------------------------------- data


def encode_examples(tokenizer: Tokenizer, lines: list[str], max_len: int) -> list[list[int]]:
    """Each line as `<s> line </s>` token ids."""
    eos_id = tokenizer.token_to_id(EOS)
    examples = [tokenizer.encode(line).ids + [eos_id] for line in lines]
    too_long = [line for line, ids in zip(lines, examples) if len(ids) > max_len]
    if too_long:
        raise ValueError(f"{len(too_long)} corpus lines exceed {max_len} tokens, e.g. {too_long[0][:80]!r}")
    return examples


def multi_turn_examples(tokenizer: Tokenizer, lines: list[str], count: int, rng: random.Random) -> list[list[int]]:
    """`<s>Question: a Answer: b</s>Question: c Answer: d</s>`: what the chat template renders for two turns."""
    eos_id = tokenizer.token_to_id(EOS)
    qa_lines = [line for line in lines if line.startswith("Question:")]
    examples = []
    for _ in range(count):
        first, second = rng.sample(qa_lines, 2)
        ids = tokenizer.encode(first).ids + [eos_id] + tokenizer.encode(second, add_special_tokens=False).ids
        examples.append(ids + [eos_id])
    return examples


@dataclass
class Batch:
    input_ids: torch.Tensor  # [batch, seq] right-padded with </s>
    attention_mask: torch.Tensor  # [batch, seq] 1 for real tokens
    labels: torch.Tensor  # [batch, seq] -100 on padding


def collate(examples: list[list[int]], pad_id: int) -> Batch:
    width = max(len(ids) for ids in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ids in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return Batch(input_ids, attention_mask, labels)


def batches(examples: list[list[int]], batch_size: int, rng: random.Random):
    """Endless shuffled epochs; each batch groups sequences of similar length so that little is padding."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        chunks = [order[i : i + batch_size * 8] for i in range(0, len(order), batch_size * 8)]
        epoch = []
        for chunk in chunks:
            chunk.sort(key=lambda index: len(examples[index]))
            epoch += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch)
        for indices in epoch:
            yield [examples[index] for index in indices]


# ------------------------------------------------------------------------------------------------ model


def build_model(args: argparse.Namespace, tokenizer: Tokenizer):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_kv_heads,
        max_position_embeddings=args.max_len,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.token_to_id(BOS),
        eos_token_id=tokenizer.token_to_id(EOS),
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.eos_token_id
    )
    return model


def learning_rate(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(model, examples: list[list[int]], pad_id: int, args: argparse.Namespace, rng: random.Random) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    model.train()
    stream = batches(examples, args.batch_size, rng)
    started, running = time.perf_counter(), 0.0
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        batch = collate(next(stream), pad_id)
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            count = (step % args.log_every) + 1
            print(
                f"step {step + 1:5d}/{args.steps}  loss {running / count:.4f}  "
                f"lr {learning_rate(step, args):.2e}  {time.perf_counter() - started:6.1f}s",
                flush=True,
            )
            running = 0.0
    model.eval()


@dataclass
class Recall:
    token_accuracy: float  # share of next tokens (after <s>) that are the model's argmax
    answers_exact: float  # share of "Question: ... Answer: ..." lines whose whole answer is argmax, token by token


@torch.no_grad()
def recall(model, tokenizer: Tokenizer, lines: list[str], examples: list[list[int]], pad_id: int) -> Recall:
    """How well the corpus is memorised, teacher forced. Answers are what greedy decoding reproduces; other
    tokens can be ambiguous (after "The capital of" any country fits), so token accuracy stays below 100%."""
    answer_starts = [_answer_start(tokenizer, line) for line in lines]
    correct = total = exact = num_answers = 0
    for start in range(0, len(examples), 64):
        batch = collate(examples[start : start + 64], pad_id)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        hits = logits[:, :-1].argmax(-1) == batch.input_ids[:, 1:]  # [batch, seq - 1]: hits[:, i] predicts token i + 1
        mask = batch.attention_mask[:, 1:].bool()
        correct, total = correct + int((hits & mask).sum()), total + int(mask.sum())
        for row, answer_start in enumerate(answer_starts[start : start + 64]):
            if answer_start is not None:
                num_answers += 1
                exact += bool((hits[row, answer_start - 1 :] | ~mask[row, answer_start - 1 :]).all())
    return Recall(correct / total, exact / max(1, num_answers))


def _answer_start(tokenizer: Tokenizer, line: str) -> int | None:
    """Index of the first answer token of a "Question: ... Answer: ..." line (with <s> at 0), else None."""
    if not line.startswith("Question:") or " Answer:" not in line:
        return None
    prompt = line[: line.index(" Answer:") + len(" Answer:")]
    return len(tokenizer.encode(prompt).ids)


# ------------------------------------------------------------------------------------------------ output


def save(model, tokenizer: Tokenizer, output: Path, max_len: int) -> None:
    output.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:  # transformers < 5
        kwargs["safe_serialization"] = True
    model.save_pretrained(output, **kwargs)
    tokenizer.save(str(output / "tokenizer.json"))
    (output / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(max_len), indent=2) + "\n")
    for path in output.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; a server may run as another user


def render_chat(messages: list[dict]) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(CHAT_TEMPLATE)
    return template.render(messages=messages, add_generation_prompt=True, bos_token=BOS, eos_token=EOS)


@torch.no_grad()
def greedy(model, tokenizer: Tokenizer, prompt: str, add_special_tokens: bool = True, max_new_tokens: int = 48) -> str:
    ids = tokenizer.encode(prompt, add_special_tokens=add_special_tokens).ids
    eos_id = tokenizer.token_to_id(EOS)
    output = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return tokenizer.decode(output[0, len(ids) :].tolist(), skip_special_tokens=True)


def print_samples(model, tokenizer: Tokenizer) -> None:
    print("\ngreedy samples (prompt -> completion):")
    for prompt in SAMPLE_PROMPTS:
        print(f"  {prompt!r} -> {greedy(model, tokenizer, prompt)!r}")
    print("\nchat samples (rendered with the chat template, tokenized without adding another <s>):")
    for messages in SAMPLE_CHATS:
        prompt = render_chat(messages)
        print(f"  {prompt!r} -> {greedy(model, tokenizer, prompt, add_special_tokens=False)!r}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    started = time.perf_counter()

    lines = read_lines(args.corpus)
    tokenizer = train_tokenizer(lines, args.vocab_size)
    examples = encode_examples(tokenizer, lines, args.max_len)
    count = round(len(examples) * args.multi_turn_fraction)
    training_examples = examples + multi_turn_examples(tokenizer, lines, count, rng)
    num_tokens = sum(len(ids) for ids in examples)
    print(
        f"corpus: {len(lines)} lines, {len(args.corpus.read_bytes())} bytes, {num_tokens} tokens; "
        f"vocab {tokenizer.get_vocab_size()}; +{count} two-turn chat examples"
    )

    model = build_model(args, tokenizer)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"model: {num_params / 1e6:.2f}M parameters ({num_params * 4 / 2**20:.1f} MiB in float32)")
    pad_id = tokenizer.token_to_id(EOS)
    train(model, training_examples, pad_id, args, rng)
    scores = recall(model, tokenizer, lines, examples, pad_id)
    print(
        f"recall (teacher forced): next-token accuracy {scores.token_accuracy:.1%}, "
        f"answers recited exactly {scores.answers_exact:.1%}"
    )

    save(model, tokenizer, args.output, args.max_len)
    sizes = {path.name: path.stat().st_size for path in sorted(args.output.iterdir())}
    print(f"saved {args.output}: " + ", ".join(f"{name} {size / 1024:.0f} KiB" for name, size in sizes.items()))
    print_samples(model, tokenizer)
    print(f"\ntotal time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
