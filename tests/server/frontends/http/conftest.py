"""A second server for the HTTP frontend tests: identity models of every datatype and a few probes."""

import pytest
import tritonclient.http as httpclient

from tests.server.frontends.http.probe_models import good_add_sub, write_probe_models
from tests.server.frontends.http.raw_http import send
from tests.server_harness import start_server


@pytest.fixture(scope="session")
def probe_server(tmp_path_factory):
    """A server of identity models (one per datatype), echo_request, flaky, two_versions
    and broken (which fails to load)."""
    repository = tmp_path_factory.mktemp("http_probe_models")
    write_probe_models(repository)
    running = start_server([repository])
    yield running
    running.stop()


@pytest.fixture(scope="session")
def probe_client(probe_server):
    http = httpclient.InferenceServerClient(probe_server.http_url, network_timeout=120)
    yield http
    http.close()


@pytest.fixture
def assert_serving(example_server, client):
    """Call after a bad request: a good infer (tritonclient) and live health (raw) still work."""

    def check() -> None:
        good_add_sub(client)
        assert send(example_server.http_url, "GET", "/v2/health/live").status == 200

    return check
