import pytest
import tritonclient.http as httpclient

from tests.server_harness import EXAMPLE_REPOSITORY, start_server


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
