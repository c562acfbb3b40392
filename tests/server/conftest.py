"""Fixtures of the server tests."""

import pytest
import tritonclient.http as httpclient


@pytest.fixture
def serve(make_server):
    """Factory: serve([repo], **settings) -> (RunningServer, tritonclient.http client); both closed after."""
    clients = []

    def factory(repositories, **settings):
        running = make_server(repositories, **settings)
        client = httpclient.InferenceServerClient(running.http_url, network_timeout=60)
        clients.append(client)
        return running, client

    yield factory
    for client in clients:
        client.close()
