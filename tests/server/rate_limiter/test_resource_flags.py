"""`--rate-limit-resource` values: Triton's <name>:<count>[:<device>], names case-insensitive."""

import pytest

from modelgate.server.rate_limiter.resource_flags import parse_rate_limit_resources


def test_a_value_without_a_device_applies_to_every_device_and_one_with_a_device_to_it_alone():
    explicit = parse_rate_limit_resources(["R1:10", "R2:5:0", "R2:8:1"])
    assert [explicit.per_device("r1", d) for d in (0, 1, 7)] == [10, 10, 10]
    assert [explicit.per_device("r2", d) for d in (0, 1)] == [5, 8]
    assert explicit.per_device("r2", 2) == 0  # named for other devices only: none here (Triton: limited to 0)
    assert explicit.per_device("r9", 0) is None  # not named: sized by default


def test_names_are_case_insensitive_and_a_global_resource_ignores_the_device():
    explicit = parse_rate_limit_resources(["Shared:3:1", "other:2"])
    assert explicit.shared("shared") == 3
    assert explicit.shared("other") == 2 and explicit.per_device("other", 3) == 2


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("R1", "expected <name>:<count>[:<device>]"),
        (":4", "expected <name>:<count>[:<device>]"),
        ("R1:4:0:1", "expected <name>:<count>[:<device>]"),
        ("R1:-1", "the count '-1' is not a whole number >= 0"),
        ("R1:four", "the count 'four' is not a whole number >= 0"),
        ("R1:4:gpu0", "the device 'gpu0' is not a whole number >= 0"),
    ],
)
def test_a_malformed_value_is_refused_naming_it_and_the_format(value, problem):
    with pytest.raises(ValueError) as raised:
        parse_rate_limit_resources([value])
    assert f"'{value}'" in str(raised.value) and problem in str(raised.value)


def test_a_resource_given_twice_for_the_same_devices_is_refused():
    with pytest.raises(ValueError, match="resource 'r1' is given twice for every device"):
        parse_rate_limit_resources(["R1:4", "r1:6"])
    with pytest.raises(ValueError, match="resource 'r1' is given twice for device 0"):
        parse_rate_limit_resources(["R1:4:0", "R1:6:0"])
