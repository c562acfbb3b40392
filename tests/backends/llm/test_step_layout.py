"""StepLayout of a step launched ahead: decodes whose input token is still on the device, then admitted prompts."""

from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import ScheduledRequest
from modelgate.backends.llm.step_layout import StepLayout


def _request(request_id: str, prompt: list[int], outputs: list[int]) -> LLMRequest:
    request = LLMRequest(request_id, prompt, SamplingParams(max_tokens=8, temperature=0))
    request.output_token_ids.extend(outputs)
    return request


def test_decodes_ahead_get_placeholders_that_the_layout_names_and_prompts_their_tokens():
    # "a" has 3 prompt tokens and 1 output; the step before (still running) computes its token at position 4,
    # so the step ahead decodes position 5, whose input token is not on the request yet.
    decoding = _request("a", [5, 6, 7], [8])
    ahead = ScheduledRequest(decoding, 5, 1, [0, 1])
    ahead.samples = True
    ahead.token_on_device = True
    known = ScheduledRequest(_request("b", [9, 10], [11]), 2, 1, [2])  # a decode whose token is known: 11
    prompt = ScheduledRequest(_request("c", [1, 2, 3], []), 0, 3, [3])
    layout = StepLayout.of([ahead, known, prompt], block_size=4)
    assert layout.token_ids == [0, 11, 1, 2, 3]
    assert layout.device_token_rows == [0]
    assert layout.positions == [5, 2, 0, 1, 2]
    assert layout.slots == [1 * 4 + 1, 2 * 4 + 2, 12, 13, 14]
    assert layout.query_start == [0, 1, 2, 5]
    assert layout.context_lens == [6, 3, 3]
    assert layout.sample_rows == [0, 1, 4]
    assert not layout.is_decode_only


def test_a_layout_with_every_token_known_names_no_device_rows():
    prompt = ScheduledRequest(_request("c", [1, 2, 3], []), 0, 3, [3])
    assert StepLayout.of([prompt], block_size=4).device_token_rows == []
