"""When a request stops on tokens: EOS, stop token ids, max_tokens, the model's context.

Stop strings are checked on detokenized text by the output processor, not here.
"""

from __future__ import annotations

from modelgate.backends.llm.request import LLMRequest, RequestStatus


def check_stop(request: LLMRequest, max_model_len: int) -> RequestStatus | None:
    """The finished status after the request's newest token, or None to keep going."""
    sampling = request.sampling
    output_token_ids = request.output_token_ids
    num_output = len(output_token_ids)
    if num_output >= sampling.min_tokens:
        last = output_token_ids[-1]
        if not sampling.ignore_eos and last in request.eos_token_ids:
            request.stop_reason = last
            return RequestStatus.FINISHED_STOPPED
        if last in sampling.stop_token_ids:
            request.stop_reason = last
            return RequestStatus.FINISHED_STOPPED
    if num_output >= sampling.max_tokens or num_output + len(request.prompt_token_ids) >= max_model_len:
        return RequestStatus.FINISHED_LENGTH
    return None
