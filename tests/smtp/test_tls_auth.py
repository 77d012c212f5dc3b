"""STARTTLS, implicit TLS and AUTH against a real aiosmtpd relay with a throw-away certificate."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from adapters.smtp import RelayConfig, SmtpTransport
from interactions_core.ports import TransientMailError
from interactions_core.testing import Harness

from .conftest import Sink, queued_reply


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    command = (
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
        " -addext subjectAltName=IP:127.0.0.1,DNS:localhost"
    )
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, certificate))
    return ctx


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"mailer",
        b"s3cret",
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def starttls_sink(certificate: tuple[Path, Path]) -> Iterator[Sink]:
    s = Sink(
        tls_context=server_context(certificate),
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator,
    )
    s.start()
    yield s
    s.stop()


async def test_starttls_with_auth(
    harness: Harness, starttls_sink: Sink, certificate: tuple[Path, Path]
) -> None:
    entry = queued_reply(harness, attach=False)
    config = RelayConfig(
        host="127.0.0.1",
        port=starttls_sink.port,
        security="starttls",
        username="mailer",
        password="s3cret",
        cert_bundle=str(certificate[0]),
    )
    assert "s3cret" not in repr(config)
    transport = SmtpTransport(config)
    await transport.send(entry.mail)
    await transport.close()
    assert len(starttls_sink.received) == 1


async def test_wrong_password_or_untrusted_certificate_is_transient(
    harness: Harness, starttls_sink: Sink, certificate: tuple[Path, Path]
) -> None:
    entry = queued_reply(harness, attach=False)
    base: dict[str, Any] = {"host": "127.0.0.1", "port": starttls_sink.port}
    wrong = SmtpTransport(
        RelayConfig(**base, username="mailer", password="nope", cert_bundle=str(certificate[0]))
    )
    with pytest.raises(TransientMailError, match="refused the session: 535"):
        await wrong.send(entry.mail)
    untrusted = SmtpTransport(RelayConfig(**base, username="mailer", password="s3cret"))
    with pytest.raises(TransientMailError, match="can't connect"):
        await untrusted.send(entry.mail)
    plain = SmtpTransport(RelayConfig(**base, security="none"))
    with pytest.raises(TransientMailError):  # the relay requires STARTTLS first
        await plain.send(entry.mail)
    for t in (wrong, untrusted, plain):
        await t.close()
    assert starttls_sink.received == []


async def test_implicit_tls(harness: Harness, certificate: tuple[Path, Path]) -> None:
    sink = Sink(ssl_context=server_context(certificate))
    sink.start()
    try:
        entry = queued_reply(harness, attach=False)
        transport = SmtpTransport(
            RelayConfig(
                host="127.0.0.1", port=sink.port, security="tls", cert_bundle=str(certificate[0])
            )
        )
        await transport.send(entry.mail)
        await transport.close()
    finally:
        sink.stop()
    assert len(sink.received) == 1


def test_relay_config_validation() -> None:
    assert RelayConfig(host="relay").effective_port == 587
    assert RelayConfig(host="relay", security="tls").effective_port == 465
    assert RelayConfig(host="relay", security="none").effective_port == 25
    with pytest.raises(ValueError):
        RelayConfig(host="relay", security="ssl")
    with pytest.raises(ValueError):
        RelayConfig(host="relay", username="u")
    with pytest.raises(ValueError):
        RelayConfig(host="relay", pool_size=0)
