"""The tensorrtllm backend's scalar sampling inputs read into SamplingParams fields (sampling_inputs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from modelgate.backends.llm.sampling_inputs import SAMPLING_INPUTS, sampling_fields_from_inputs
from modelgate.backends.llm.sampling_params import SAMPLING_FIELDS
from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest, InferTensor


def _request(**values) -> InferRequest:
    """A request whose inputs are `values`, each an array as a client would send it."""
    inputs = {}
    for name, value in values.items():
        array = np.asarray(value)
        inputs[name] = InferTensor(name, "INT32", array.shape, array)
    return InferRequest("tiny", inputs=inputs)


def test_every_sampling_input_sets_a_sampling_field():
    assert {sampling_input.field for sampling_input in SAMPLING_INPUTS} <= SAMPLING_FIELDS


def test_scalar_inputs_become_python_numbers_of_their_fields():
    request = _request(
        max_tokens=np.array([16], dtype=np.int32),
        temperature=np.array([0.5], dtype=np.float32),
        seed=np.array([7], dtype=np.uint64),
        text_input=np.array([b"not a sampling input"], dtype=object),
    )
    fields = sampling_fields_from_inputs(request)
    assert fields == {"max_tokens": 16, "temperature": 0.5, "seed": 7}
    assert all(type(value) in (int, float) for value in fields.values())


def test_min_length_is_min_tokens_and_min_tokens_wins():
    assert sampling_fields_from_inputs(_request(min_length=np.array([4], dtype=np.int32))) == {"min_tokens": 4}
    both = _request(min_length=np.array([4], dtype=np.int32), min_tokens=np.array([6], dtype=np.int32))
    assert sampling_fields_from_inputs(both) == {"min_tokens": 6}


def test_an_input_of_other_than_one_element_is_refused_by_name():
    with pytest.raises(InvalidArgumentError, match="input 'max_tokens' must hold exactly one element, got 2"):
        sampling_fields_from_inputs(_request(max_tokens=np.array([1, 2], dtype=np.int32)))
