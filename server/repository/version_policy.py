"""Which of a model's version folders are served, under its `version_policy`."""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import ModelVersionPolicy


def select_versions(policy: ModelVersionPolicy, available: list[int]) -> list[int]:
    """The versions to serve, ascending. Default (no policy): the latest one.

    `specific` serves only the listed versions that exist on disk; the caller reports the
    missing ones.
    """
    ordered = sorted(available)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return ordered
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in ordered if v in wanted]
    count = policy.latest.num_versions if choice == "latest" else 1
    return ordered[-count:] if ordered else []
