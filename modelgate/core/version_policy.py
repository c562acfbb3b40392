"""A model's version folders: which exist (numeric sub-folders) and which are served, under its `version_policy`.

The server and `modelgate size repository` both read a model folder through these, so a plan serves the versions
the server would.
"""

from __future__ import annotations

import re
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelVersionPolicy

# Version folders: plain ASCII decimal numbers without leading zeros, so that the folder
# name is exactly str(version) ("²" or "٣" pass str.isdigit(), "01" would alias "1").
_VERSION_FOLDER = re.compile(r"0|[1-9][0-9]*")


def version_numbers(model_dir: Path) -> list[int]:
    """Numeric sub-folder names of a model folder, ascending; other folders (and hidden ones) are ignored."""
    try:
        entries = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    return sorted(int(d.name) for d in entries if _VERSION_FOLDER.fullmatch(d.name))


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
