"""Servers over the stand-ins of Triton's example models (model_repository/ here; configless_repository/ holds a
python model with no config file)."""

from pathlib import Path

import pytest

from tests.server_harness import start_server

HERE = Path(__file__).resolve().parent
STAND_INS = HERE / "model_repository"
CONFIGLESS = HERE / "configless_repository"


@pytest.fixture(scope="module")
def triton_named_server():
    """Every stand-in loaded, explicit mode, named as Triton for clients that check the name."""
    running = start_server(
        [STAND_INS, CONFIGLESS], model_control_mode="explicit", load_model=["*"], server_name="triton"
    )
    yield running
    running.stop()
