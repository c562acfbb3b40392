"""TLS for a frontend: the certificate files its flags name, checked at start-up, and what serves with them.

gRPC's flags are Triton's (`--grpc-use-ssl`, `--grpc-use-ssl-mutual`, `--grpc-server-cert`, `--grpc-server-key`,
`--grpc-root-cert`); Triton has no HTTP TLS, so HTTP's are the same names under `--http-`. The paths come only
from the command line. Every problem with them (a file missing or unreadable, not PEM, a key that is not the
certificate's, a mutual-TLS server with no root certificate to check clients against) is a ValueError naming
the flag and the path, raised while the settings are validated: the server does not start.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """A frontend's TLS files. `mutual`: clients must present a certificate that `root_cert` signed."""

    server_cert: Path
    server_key: Path
    root_cert: Path | None
    mutual: bool

    def server_context(self) -> ssl.SSLContext:
        """An SSLContext for an aiohttp site (TLS 1.2 or later, Python's defaults for a server)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key, password=_no_password)
        if self.root_cert is not None:
            context.load_verify_locations(cafile=self.root_cert)
        if self.mutual:
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, private key, root certificates): PEM bytes, as grpc's credentials take them."""
        root = self.root_cert.read_bytes() if self.root_cert is not None else None
        return self.server_cert.read_bytes(), self.server_key.read_bytes(), root


def checked_tls_files(
    protocol: str,
    use_ssl: bool,
    mutual: bool,
    server_cert: Path | None,
    server_key: Path | None,
    root_cert: Path | None,
) -> TlsFiles | None:
    """The TLS files of `protocol` ("http" or "grpc") if its flags turn TLS on, else None.

    `mutual` turns TLS on by itself, as Triton's --grpc-use-ssl-mutual does. A certificate flag given while TLS
    is off is an error: the operator meant a TLS port, and would get plaintext.
    """
    flag = f"--{protocol}"
    paths = {f"{flag}-server-cert": server_cert, f"{flag}-server-key": server_key, f"{flag}-root-cert": root_cert}
    if not (use_ssl or mutual):
        given = [name for name, path in paths.items() if path is not None]
        if given:
            raise ValueError(f"{', '.join(given)} given, but TLS is off: add {flag}-use-ssl")
        return None
    for name in (f"{flag}-server-cert", f"{flag}-server-key"):
        if paths[name] is None:
            raise ValueError(f"{flag}-use-ssl needs {name}")
    if mutual and root_cert is None:
        raise ValueError(f"{flag}-use-ssl-mutual needs {flag}-root-cert (the CA that signs client certificates)")
    for name, path in paths.items():
        if path is not None:
            _check_readable(name, path)
    files = TlsFiles(Path(server_cert), Path(server_key), Path(root_cert) if root_cert else None, mutual)
    _check_contents(flag, files)
    return files


def _no_password() -> str:
    """An encrypted key fails to load instead of OpenSSL asking for its password on the terminal."""
    return ""


def _check_readable(flag: str, path: Path) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None


def _check_contents(flag: str, files: TlsFiles) -> None:
    """Load them as the HTTP frontend will; grpc reads the same PEM, but only says "failed" at bind time."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(files.server_cert, files.server_key, password=_no_password)
    except ssl.SSLError as exc:
        raise ValueError(
            f"{flag}-server-cert {files.server_cert} and {flag}-server-key {files.server_key}: not a PEM "
            f"certificate chain and its unencrypted private key ({exc.reason or exc})"
        ) from None
    if files.root_cert is None:
        return
    try:
        context.load_verify_locations(cafile=files.root_cert)
    except ssl.SSLError as exc:
        raise ValueError(
            f"{flag}-root-cert {files.root_cert}: no PEM certificate in it ({exc.reason or exc})"
        ) from None
