"""An inference request for an LLM model, read and checked before anything reaches the engine.

Inputs follow vLLM's Triton backend: `text_input` (BYTES) or the prompt's token ids `input_ids` (INT32, the
tensorrtllm backend's name: prompt_token_ids.py), `stream` (BOOL),
`sampling_parameters` (BYTES, a JSON object of SamplingParams fields),
`exclude_input_in_output` (BOOL); plus `chat_messages` (BYTES, a JSON list of
{"role", "content"}) rendered with the model's chat template. Request parameters named
like sampling fields (as Triton's generate endpoint passes them, and the OpenAI routes) override the JSON ones,
and the tensorrtllm backend's scalar sampling inputs (`max_tokens`, `min_length`, `temperature`, ...:
sampling_inputs.py) override both.

This is the one place where an LLM request is checked: what it parses becomes the engine's AddRequest, which
the engine process takes as it is. It runs on the model instance's thread, never on the event loop; a prompt
far longer than the model's context is refused by its character count before it is rendered or tokenized
(tokenizing megabytes takes seconds), and long prompts are tokenized with the GIL released (tokenizer.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.backends.llm.chat_template import ChatTemplateError, render_chat
from modelgate.backends.llm.engine_messages import AddRequest
from modelgate.backends.llm.prompt_token_ids import INPUT_IDS, prompt_token_ids
from modelgate.backends.llm.sampling_inputs import sampling_fields_from_inputs
from modelgate.backends.llm.sampling_params import SAMPLING_FIELDS, SamplingParams, parse_sampling_params
from modelgate.backends.llm.tokenizer import TextTokenizer
from modelgate.core.bounded_json import loads_bounded
from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest

_FLAG_NAMES = ("stream", "exclude_input_in_output")
# A token is ~4 characters of English text and ~3 of code; 16 leaves room for text that packs unusually well
# (runs of spaces or symbols), while a prompt whose characters could never fit the context is refused untokenized.
MAX_PROMPT_CHARS_PER_TOKEN = 16


@dataclass
class GenerationRequest:
    """A checked request: `engine_request` goes to the engine as it is; the rest stays in the server."""

    engine_request: AddRequest
    prompt_text: str
    stream: bool
    exclude_input_in_output: bool


def parse_generation_request(
    request: InferRequest, request_id: str, tokenizer: TextTokenizer, max_model_len: int
) -> GenerationRequest:
    """InvalidArgumentError, naming the input or field and what it allows, for anything the engine cannot run."""
    stream, exclude_input = _flag(request, "stream"), _flag(request, "exclude_input_in_output")
    is_chat = "chat_messages" in request.inputs
    token_ids = prompt_token_ids(request, tokenizer.vocab_size, max_model_len)
    if token_ids is not None:
        # Its text only where a whole response repeats the prompt before the generated text.
        prompt = "" if stream or exclude_input else tokenizer.decode(token_ids, skip_special_tokens=False)
    else:
        prompt = _prompt_text(request, tokenizer, max_model_len * MAX_PROMPT_CHARS_PER_TOKEN)
        if not prompt:
            raise InvalidArgumentError("the prompt is empty; 'text_input' must hold at least one character")
        token_ids = tokenizer.encode(prompt, add_special_tokens=not is_chat)
    sampling = _sampling(request, fill_context=max_model_len - len(token_ids) if is_chat else None)
    _check_lengths(len(token_ids), sampling, max_model_len, tokenizer)
    return GenerationRequest(AddRequest(request_id, token_ids, sampling), prompt, stream, exclude_input)


def _prompt_text(request: InferRequest, tokenizer: TextTokenizer, max_chars: int) -> str:
    if "chat_messages" in request.inputs:
        messages = _json_input(request, "chat_messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise InvalidArgumentError('\'chat_messages\' must be a JSON list of {"role", "content"} objects')
        # Before rendering: each message renders to a token at least, its content to its characters at least.
        _check_prompt_chars("chat_messages", _num_message_chars(messages), max_chars, len(messages))
        try:
            settings = tokenizer.settings
            return render_chat(settings.chat_template, messages, settings.bos_token, settings.eos_token)
        except ChatTemplateError as exc:
            raise InvalidArgumentError(str(exc)) from None
    if "text_input" not in request.inputs:
        raise InvalidArgumentError(f"the request needs input 'text_input' (or 'chat_messages', or '{INPUT_IDS}')")
    text = _text(request, "text_input")
    _check_prompt_chars("text_input", len(text), max_chars)
    return text


def _num_message_chars(messages: list[dict]) -> int:
    contents = (m.get("content") for m in messages)
    return sum(len(c) if isinstance(c, str) else len(str(c)) for c in contents if c is not None)


def _check_prompt_chars(name: str, num_chars: int, max_chars: int, num_messages: int = 0) -> None:
    """The prompt's length bound before tokenizing: MAX_PROMPT_CHARS_PER_TOKEN characters per context token."""
    max_messages = max_chars // MAX_PROMPT_CHARS_PER_TOKEN
    if num_messages > max_messages:
        raise InvalidArgumentError(
            f"'{name}' holds {num_messages} messages; this model's context of {max_messages} tokens takes "
            f"at most {max_messages}"
        )
    if num_chars > max_chars:
        raise InvalidArgumentError(
            f"the prompt ('{name}') has {num_chars} characters; this model's context of "
            f"{max_chars // MAX_PROMPT_CHARS_PER_TOKEN} tokens takes at most {max_chars} "
            f"({MAX_PROMPT_CHARS_PER_TOKEN} per token), so it was refused before tokenizing"
        )


def _sampling(request: InferRequest, fill_context: int | None = None) -> SamplingParams:
    """SamplingParams from the JSON input, then the request parameters, then the scalar sampling inputs: a field
    set by a later source overrides an earlier one.

    `fill_context`: for chat, as OpenAI and vLLM do, no max_tokens means the rest of the context.
    """
    fields = _json_input(request, "sampling_parameters") if "sampling_parameters" in request.inputs else {}
    if not isinstance(fields, dict):
        raise InvalidArgumentError("'sampling_parameters' must be a JSON object")
    fields = dict(fields)
    for key in _FLAG_NAMES:
        fields.pop(key, None)  # vLLM's backend accepts these among the sampling parameters too
    fields.update({k: v for k, v in request.parameters.items() if k in SAMPLING_FIELDS})
    fields.update(sampling_fields_from_inputs(request))
    if fill_context is not None and fields.get("max_tokens") is None and fill_context >= 1:
        fields["max_tokens"] = fill_context
    return parse_sampling_params(fields)


def _check_lengths(num_prompt: int, sampling: SamplingParams, max_model_len: int, tokenizer: TextTokenizer) -> None:
    if num_prompt >= max_model_len:
        raise InvalidArgumentError(
            f"the prompt has {num_prompt} tokens; this model's context is {max_model_len} tokens "
            "and generation needs at least one more"
        )
    if num_prompt + sampling.max_tokens > max_model_len:
        raise InvalidArgumentError(
            f"max_tokens {sampling.max_tokens} with a {num_prompt}-token prompt exceeds the model's context "
            f"of {max_model_len} tokens; at most {max_model_len - num_prompt} new tokens fit"
        )
    too_large = [t for t in sampling.stop_token_ids if t >= tokenizer.vocab_size]
    if too_large:
        raise InvalidArgumentError(f"stop_token_ids {too_large} are not in the vocabulary of {tokenizer.vocab_size}")


def _flag(request: InferRequest, name: str) -> bool:
    if name in request.inputs:
        values = request.inputs[name].data.reshape(-1)
        return bool(values[0]) if values.size else False
    value = request.parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"parameter '{name}' must be a boolean")
    return value


def _text(request: InferRequest, name: str) -> str:
    values = request.inputs[name].data.reshape(-1)
    if values.size != 1:
        raise InvalidArgumentError(f"input '{name}' must hold exactly one element, got {values.size}")
    try:
        return values[0].decode("utf-8") if isinstance(values[0], bytes) else str(values[0])
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"input '{name}' is not valid UTF-8") from None


def _json_input(request: InferRequest, name: str):
    return loads_bounded(_text(request, name), f"input '{name}'")
