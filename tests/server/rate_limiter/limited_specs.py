"""Instance specs whose config gives their group a rate_limiter, for the rate limiter's unit tests."""

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import InstanceSpec


def limited_specs(model: str, rate_limiter: str, count: int = 1, device: int = 0, kind: str = "CPU"):
    """`count` instances of one group `<model>_0` whose rate_limiter is the text `rate_limiter`."""
    config = text_format.Parse(
        f'name: "{model}" instance_group [ {{ name: "{model}_0" count: {count} rate_limiter {{ {rate_limiter} }} }} ]',
        ModelConfig(),
    )
    folder = Path("/nonexistent") / model
    return [InstanceSpec(model, 1, f"{model}_0_{k}", kind, device, folder, folder / "1", config) for k in range(count)]


def resource(name: str, count: int, is_global: bool = False) -> str:
    return f'resources {{ name: "{name}" count: {count} global: {str(is_global).lower()} }}'
