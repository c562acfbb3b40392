"""Small random Hugging Face checkpoints of real architectures, saved as safetensors for our loader."""

from pathlib import Path

import torch

SMALL = dict(
    vocab_size=211,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def save_random_checkpoint(architecture: str, directory: Path, seed: int = 0, **overrides) -> Path:
    """Build `architecture` with random weights from a small config and save_pretrained it."""
    import transformers

    config_class = {
        "LlamaForCausalLM": transformers.LlamaConfig,
        "MistralForCausalLM": transformers.MistralConfig,
        "Qwen2ForCausalLM": transformers.Qwen2Config,
    }[architecture]
    settings = dict(SMALL)
    settings.update(overrides)
    config = config_class(**settings)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1 and "norm" not in "".join(n for n, p in model.named_parameters() if p is parameter):
                parameter.normal_(0, 0.1)  # give biases real values so a missing bias is caught
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def hf_model(directory: Path):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
