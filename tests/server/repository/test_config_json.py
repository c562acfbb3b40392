"""ModelConfig as Triton's JSON: snake_case, defaults present, 64-bit integers as numbers."""

import json

from modelgate.core.config_files import parse_config_text
from modelgate.core.config_json import config_to_dict

PBTXT = """
name: "m"
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 preferred_batch_size: [ 4, 8 ] }
version_policy { specific { versions: [ 1, 3 ] } }
parameters { key: "k" value { string_value: "v" } }
"""


def test_int64_fields_are_numbers_everywhere():
    as_dict = config_to_dict(parse_config_text(PBTXT, "m/config.pbtxt"))
    assert as_dict["input"][0]["dims"] == [-1, 3]
    assert as_dict["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert as_dict["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert as_dict["version_policy"]["specific"]["versions"] == [1, 3]
    assert as_dict["parameters"] == {"k": {"string_value": "v"}}
    assert as_dict["input"][0]["data_type"] == "TYPE_FP32"
    assert as_dict["output"] == [] and as_dict["platform"] == ""
    json.dumps(as_dict)


def test_json_form_parses_back_to_the_same_message():
    config = parse_config_text(PBTXT, "m/config.pbtxt")
    again = parse_config_text(json.dumps(config_to_dict(config)), "m/config.json")
    assert again == config
