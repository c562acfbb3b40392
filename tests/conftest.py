import pytest
import tritonclient.http as httpclient

from tests.server_harness import EXAMPLE_REPOSITORY, start_server


def pytest_runtest_setup(item):
    """A test marked `gpu` needs a CUDA device: without one it is skipped, saying why, before its fixtures run.

    The default addopts deselect gpu tests; `-m gpu` selects them, on a GPU machine.
    """
    if item.get_closest_marker("gpu") is None:
        return
    import torch  # only here: most test runs select no gpu test

    if not torch.cuda.is_available():
        pytest.skip("marked gpu: needs a CUDA GPU")


@pytest.fixture(scope="session")
def example_server():
    """The example model_repository served in the default control mode (none)."""
    running = start_server([EXAMPLE_REPOSITORY])
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(example_server):
    """A tritonclient.http client of the example server."""
    http = httpclient.InferenceServerClient(example_server.http_url, network_timeout=60)
    yield http
    http.close()


@pytest.fixture
def make_server():
    """Factory: make_server([repo], **settings) -> RunningServer, stopped after the test."""
    started = []

    def factory(repositories, **settings):
        running = start_server(list(repositories), **settings)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()
