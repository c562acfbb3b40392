"""A throwaway certificate authority (trustme) and the PEM files a TLS test needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the GPU machine collects these tests without trustme installed
    import trustme


@dataclass(frozen=True)
class TlsTestFiles:
    ca: trustme.CA
    ca_cert: Path  # the CA clients trust and the server checks client certificates against
    server_cert: Path  # for 127.0.0.1 and localhost
    server_key: Path
    client_cert: Path  # a client certificate the CA signed, for mutual TLS
    client_key: Path
    other_ca_cert: Path  # a CA that signed nothing of the server's


def write_tls_files(folder: Path) -> TlsTestFiles:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@modelgate.test")
    paths = {
        name: folder / f"{name}.pem"
        for name in ("ca_cert", "server_cert", "server_key", "client_cert", "client_key", "other_ca_cert")
    }
    ca.cert_pem.write_to_path(paths["ca_cert"])
    server.cert_chain_pems[0].write_to_path(paths["server_cert"])
    server.private_key_pem.write_to_path(paths["server_key"])
    client.cert_chain_pems[0].write_to_path(paths["client_cert"])
    client.private_key_pem.write_to_path(paths["client_key"])
    trustme.CA().cert_pem.write_to_path(paths["other_ca_cert"])
    return TlsTestFiles(ca=ca, **paths)
