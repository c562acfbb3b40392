"""Which version folders a version_policy serves."""

import pytest
from tritonclient.grpc.model_config_pb2 import ModelVersionPolicy

from modelgate.core.version_policy import select_versions


def _latest(n):
    policy = ModelVersionPolicy()
    policy.latest.num_versions = n
    return policy


def _all():
    policy = ModelVersionPolicy()
    policy.all.SetInParent()
    return policy


def _specific(*versions):
    policy = ModelVersionPolicy()
    policy.specific.versions.extend(versions)
    return policy


@pytest.mark.parametrize(
    "policy, available, expected",
    [
        (ModelVersionPolicy(), [3, 1, 2], [3]),  # no policy: the latest one
        (_latest(1), [1, 2, 10], [10]),  # numeric, not lexicographic order
        (_latest(2), [3, 1, 2], [2, 3]),
        (_latest(5), [2, 1], [1, 2]),
        (_all(), [3, 1, 2], [1, 2, 3]),
        (_specific(3, 1), [1, 2, 3], [1, 3]),
        (_specific(1, 7), [1, 2], [1]),  # the caller reports 7 as missing
        (_specific(0), [0, 1], [0]),
        (_latest(1), [], []),
        (_all(), [], []),
    ],
)
def test_select_versions(policy, available, expected):
    assert select_versions(policy, available) == expected
