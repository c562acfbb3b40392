"""Fixtures shared by the frontend tests of both protocols."""

import pytest

from tests.server.frontends.tls_helpers import write_tls_files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate (TlsTestFiles)."""
    return write_tls_files(tmp_path_factory.mktemp("tls"))
