"""Servers over the stand-ins of Triton's example models.

model_repository/ holds the seven of Triton's example repository that need no TensorFlow (the HTTP model-control
example counts 7 models in the index); qa_repository/ the models of Triton's QA that other examples use
(custom_identity_int32, repeat_int32, simple_string_dyna_sequence); configless_repository/ a python model with no
config file (with model_repository/, the 8 models the gRPC model-control example counts)."""

from pathlib import Path

import pytest

from tests.server_harness import start_server

HERE = Path(__file__).resolve().parent
STAND_INS = HERE / "model_repository"
CONFIGLESS = HERE / "configless_repository"
QA_MODELS = HERE / "qa_repository"


@pytest.fixture(scope="module")
def triton_named_server():
    """Every stand-in loaded, explicit mode, named as Triton for clients that check the name, client shared
    memory allowed (the shared-memory examples need it)."""
    running = start_server(
        [STAND_INS, QA_MODELS, CONFIGLESS],
        model_control_mode="explicit",
        load_model=["*"],
        server_name="triton",
        allow_shared_memory=True,
    )
    yield running
    running.stop()
