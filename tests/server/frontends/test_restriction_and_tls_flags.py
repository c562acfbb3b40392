"""The restriction and TLS flags: what they accept, and the start-up errors (exit 2, naming the flag)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelgate.cli import main
from modelgate.server.frontends.api_restrictions import GRPC_FLAG, HTTP_FLAG, parse_restrictions
from modelgate.server.settings import ServerSettings


def test_a_value_restricts_each_of_its_categories_with_its_header():
    rules = parse_restrictions(["model-repository,logging:Admin-Key=s3cr=t:x", "inference:infer-key=abc"], HTTP_FLAG)
    assert set(rules) == {"model-repository", "logging", "inference"}
    assert (rules["logging"].header, rules["logging"].value) == ("Admin-Key", "s3cr=t:x")  # '=' and ':' in a value
    assert rules["logging"].permits("s3cr=t:x")
    assert not rules["logging"].permits("s3cr=t:")
    assert not rules["logging"].permits(None)
    assert rules["inference"].header == "infer-key"
    assert "s3cr" not in repr(rules["logging"])  # the value is a secret


@pytest.mark.parametrize(
    "values, problem",
    [
        (["logging,logging:k=v"], "category 'logging' is restricted twice"),
        (["logging:k=v", "health,logging:other=w"], "category 'logging' is restricted twice"),
        (["metrics:k=v"], "unknown category 'metrics'"),
        (["logging"], "expected <category>[,<category>...]:<header>=<value>"),
        (["logging:k"], "expected <category>"),
        (["logging:=v"], "is not a valid header name"),
        (["logging:a key=v"], "is not a valid header name"),
        (["logging:k="], "printable ASCII, not empty"),
        (["logging:k= v"], "without spaces at either end"),
        (["logging,:k=v"], "an empty category"),
    ],
)
def test_malformed_values_are_refused_saying_what_is_allowed(values, problem):
    with pytest.raises(ValueError, match=r"^--http-restricted-api .*") as caught:
        parse_restrictions(values, HTTP_FLAG)
    assert problem in str(caught.value)
    assert "=v'" not in str(caught.value)  # the header value is not echoed


def test_a_binary_metadata_key_is_refused_for_grpc():
    with pytest.raises(ValueError, match="'-bin' metadata key"):
        parse_restrictions(["logging:token-bin=v"], GRPC_FLAG)


def test_settings_refuse_a_bad_value_of_either_flag(tmp_path):
    for field in ("http_restricted_api", "grpc_restricted_protocol"):
        with pytest.raises(ValidationError, match="unknown category 'admin'"):
            ServerSettings(model_repository=[tmp_path], **{field: ["admin:k=v"]})


def _serve(tmp_path, capsys, *flags: str) -> tuple[int, str]:
    code = main(["serve", "--model-repository", str(tmp_path), *flags])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flag", [HTTP_FLAG, GRPC_FLAG])
def test_the_cli_exits_2_naming_the_flag(tmp_path, capsys, flag):
    code, err = _serve(tmp_path, capsys, flag, "logging:k=v", flag, "logging:k2=w")
    assert code == 2
    assert f"{flag}: " in err and "category 'logging' is restricted twice" in err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tls_without_a_certificate_is_a_start_up_error(tmp_path, capsys, protocol):
    code, err = _serve(tmp_path, capsys, f"--{protocol}-use-ssl")
    assert code == 2
    assert f"--{protocol}-use-ssl needs --{protocol}-server-cert" in err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_missing_certificate_file_is_named_with_its_flag(tmp_path, capsys, tls_files, protocol):
    missing = tmp_path / "nowhere" / "cert.pem"
    flags = [f"--{protocol}-use-ssl", f"--{protocol}-server-cert", str(missing)]
    code, err = _serve(tmp_path, capsys, *flags, f"--{protocol}-server-key", str(tls_files.server_key))
    assert code == 2
    assert f"--{protocol}-server-cert {missing}: cannot read it" in err


def test_a_file_that_is_not_pem_is_refused(tmp_path, capsys, tls_files):
    garbage = tmp_path / "key.pem"
    garbage.write_text("not a key")
    flags = ["--grpc-use-ssl", "--grpc-server-cert", str(tls_files.server_cert), "--grpc-server-key", str(garbage)]
    code, err = _serve(tmp_path, capsys, *flags)
    assert code == 2
    assert f"--grpc-server-key {garbage}: not a PEM certificate chain" in err


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path, capsys, tls_files):
    flags = ["--http-use-ssl", "--http-server-cert", str(tls_files.server_cert)]
    code, err = _serve(tmp_path, capsys, *flags, "--http-server-key", str(tls_files.client_key))
    assert code == 2
    assert "--http-server-cert" in err and "--http-server-key" in err


def test_mutual_tls_needs_a_root_certificate(tmp_path, capsys, tls_files):
    flags = ["--grpc-use-ssl-mutual", "--grpc-server-cert", str(tls_files.server_cert)]
    code, err = _serve(tmp_path, capsys, *flags, "--grpc-server-key", str(tls_files.server_key))
    assert code == 2
    assert "--grpc-use-ssl-mutual needs --grpc-root-cert" in err


def test_a_certificate_without_tls_on_is_refused_rather_than_served_plaintext(tmp_path, capsys, tls_files):
    code, err = _serve(tmp_path, capsys, "--http-server-cert", str(tls_files.server_cert))
    assert code == 2
    assert "--http-server-cert given, but TLS is off: add --http-use-ssl" in err


def test_mutual_tls_turns_tls_on_as_tritons_flag_does(tmp_path, tls_files):
    settings = ServerSettings(
        model_repository=[tmp_path],
        grpc_use_ssl_mutual=True,
        grpc_server_cert=tls_files.server_cert,
        grpc_server_key=tls_files.server_key,
        grpc_root_cert=tls_files.ca_cert,
    )
    files = settings.grpc_tls()
    assert files is not None and files.mutual
    assert settings.http_tls() is None
