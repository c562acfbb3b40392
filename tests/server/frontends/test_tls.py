"""TLS on both frontends through real clients, with a CA made for the test (trustme): clients that trust the CA
are served, plaintext clients and clients that trust another CA are not; mutual TLS wants a client certificate."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_harness import copy_example_model, start_server


def _tls_settings(files, mutual: bool) -> dict:
    settings = {}
    for protocol in ("http", "grpc"):
        settings[f"{protocol}_use_ssl_mutual" if mutual else f"{protocol}_use_ssl"] = True
        settings[f"{protocol}_server_cert"] = files.server_cert
        settings[f"{protocol}_server_key"] = files.server_key
        if mutual:
            settings[f"{protocol}_root_cert"] = files.ca_cert
    return settings


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, tls_files):
    repository = tmp_path_factory.mktemp("tls")
    copy_example_model(repository, "add_sub")
    running = start_server([repository], **_tls_settings(tls_files, mutual=False))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mutual_tls_server(tmp_path_factory, tls_files):
    running = start_server([tmp_path_factory.mktemp("mutual_tls")], **_tls_settings(tls_files, mutual=True))
    yield running
    running.stop()


def _add_sub(client, module) -> None:
    a = np.arange(4, dtype=np.float32)
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a * 10)
    np.testing.assert_array_equal(client.infer("add_sub", inputs).as_numpy("OUTPUT0"), a * 11)


def _grpc_live_refusal(url: str, **client_options) -> str:
    """The status with which a tritonclient.grpc client of these options fails to reach the server."""
    client = grpcclient.InferenceServerClient(url, **client_options)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.is_server_live(client_timeout=30)
        return caught.value.status()
    finally:
        client.close()


def test_tritonclient_grpc_with_the_ca_is_served(tls_server, tls_files):
    client = grpcclient.InferenceServerClient(tls_server.grpc_url, ssl=True, root_certificates=str(tls_files.ca_cert))
    try:
        assert client.is_server_live()
        _add_sub(client, grpcclient)
    finally:
        client.close()


def test_tritonclient_http_with_the_ca_is_served(tls_server, tls_files):
    client = httpclient.InferenceServerClient(
        tls_server.http_url, ssl=True, ssl_options={"ca_certs": str(tls_files.ca_cert)}
    )
    try:
        assert client.is_server_ready()
        _add_sub(client, httpclient)
    finally:
        client.close()


def test_requests_and_aiohttp_with_the_ca_are_served(tls_server, tls_files):
    url = f"https://{tls_server.http_url}/v2"
    assert requests.get(url, verify=tls_files.ca_cert, timeout=30).json()["name"] == "modelgate"

    async def fetch() -> dict:
        context = ssl.create_default_context(cafile=tls_files.ca_cert)
        async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as answer:
            return await answer.json()

    assert asyncio.run(fetch())["name"] == "modelgate"


def test_plaintext_clients_are_not_served(tls_server):
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{tls_server.http_url}/v2/health/live", timeout=30)
    assert _grpc_live_refusal(tls_server.grpc_url) == "StatusCode.UNAVAILABLE"


def test_a_client_that_trusts_another_ca_refuses_the_server(tls_server, tls_files):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{tls_server.http_url}/v2/health/live", verify=tls_files.other_ca_cert, timeout=30)
    other_ca = str(tls_files.other_ca_cert)
    assert _grpc_live_refusal(tls_server.grpc_url, ssl=True, root_certificates=other_ca) == "StatusCode.UNAVAILABLE"


def test_mutual_tls_serves_a_client_with_a_certificate_of_the_ca(mutual_tls_server, tls_files):
    url = f"https://{mutual_tls_server.http_url}/v2/health/live"
    client_pair = (str(tls_files.client_cert), str(tls_files.client_key))
    assert requests.get(url, verify=tls_files.ca_cert, cert=client_pair, timeout=30).status_code == 200
    client = grpcclient.InferenceServerClient(
        mutual_tls_server.grpc_url,
        ssl=True,
        root_certificates=str(tls_files.ca_cert),
        private_key=str(tls_files.client_key),
        certificate_chain=str(tls_files.client_cert),
    )
    try:
        assert client.is_server_live()
    finally:
        client.close()


def test_mutual_tls_refuses_a_client_without_a_certificate(mutual_tls_server, tls_files):
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
        requests.get(f"https://{mutual_tls_server.http_url}/v2/health/live", verify=tls_files.ca_cert, timeout=30)
    ca = str(tls_files.ca_cert)
    assert _grpc_live_refusal(mutual_tls_server.grpc_url, ssl=True, root_certificates=ca) == "StatusCode.UNAVAILABLE"
