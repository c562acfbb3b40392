"""OpenAI response objects (whole and streamed chunks) from choice deltas."""

from __future__ import annotations

import time
import uuid

from aiohttp import web


def openai_error(status: int, message: str) -> web.Response:
    """OpenAI's error object; 4xx other than 404 are `invalid_request_error`s (413 included)."""
    kind = "not_found_error" if status == 404 else "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def envelope(object_type: str, response_id: str, model: str, choices: list[dict], created: int | None = None) -> dict:
    """`created`: now, unless given (a stream's chunks all carry the time its response was created)."""
    created = int(time.time()) if created is None else created
    return {"id": response_id, "object": object_type, "created": created, "model": model, "choices": choices}


def completion_logprobs(entries: list[dict], text_offset_start: int) -> dict:
    """The legacy completions `logprobs` object."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    offset = text_offset_start
    for entry in entries:
        tokens.append(entry["token"])
        token_logprobs.append(entry["logprob"])
        top.append({alt["token"]: alt["logprob"] for alt in entry["top_logprobs"]})
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


def chat_logprobs(entries: list[dict], top_n: int) -> dict:
    """The chat `logprobs` object: per token its logprob, bytes and top alternatives."""
    content = []
    for entry in entries:
        alternatives = [alt for alt in entry["top_logprobs"]][:top_n]
        content.append(
            {
                "token": entry["token"],
                "logprob": entry["logprob"],
                "bytes": list(entry["token"].encode("utf-8")),
                "top_logprobs": [
                    {"token": alt["token"], "logprob": alt["logprob"], "bytes": list(alt["token"].encode("utf-8"))}
                    for alt in alternatives
                ],
            }
        )
    return {"content": content}
