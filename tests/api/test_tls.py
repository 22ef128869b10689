"""HTTPS on the opt-in TCP listener when the settings file names a certificate; the unix socket
stays plain; the client verifies the certificate (KILN_CA for a private CA) and refuses an
unknown one before the token leaves."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kiln.api import create_app
from kiln.api.server import check_tls, serve
from kiln.client import Endpoint, KilnClient, UntrustedCertificate
from kiln.config import Settings
from kiln.config.file import TlsSettings
from kiln.errors import InvalidInput

from .conftest import TOKEN, WEB_SPEC
from .fake_service import FakeService

DEADLINE = 10.0


def self_signed(directory: Path, name: str = "kiln") -> TlsSettings:
    """A self-signed certificate for 127.0.0.1 and localhost, made offline."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsSettings(cert=cert_path, key=key_path)


@contextmanager
def kiln_with_tls(tls: TlsSettings) -> Iterator[tuple[str, Path]]:
    """kiln's own serve(): the unix socket and a TLS TCP socket; yields (https URL, socket)."""
    app = create_app(FakeService(), token=TOKEN)
    with tempfile.TemporaryDirectory(prefix="kiln-") as name:
        path = Path(name) / "api.sock"
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(str(path))
        unix.listen()
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        started = threading.Event()
        holder: dict[str, object] = {}

        def run() -> None:
            async def main() -> None:
                stop = asyncio.Event()
                holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
                await serve(app, unix, stop, more_sockets=[tcp], on_started=started.set, tls=tls)

            asyncio.run(main())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            assert started.wait(DEADLINE), "kiln did not start serving"
            yield f"https://127.0.0.1:{tcp.getsockname()[1]}", path
        finally:
            loop, stop = holder["loop"], holder["stop"]
            loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
            thread.join(DEADLINE)
            unix.close()
            tcp.close()
            assert not thread.is_alive()


def test_the_tcp_api_speaks_https_and_the_client_verifies_it(tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    with kiln_with_tls(tls) as (url, unix_path):
        with KilnClient(base_url=url, token=TOKEN, actor="ann", ca_file=tls.cert) as client:
            assert client.server_identity().proven
            assert client.deploy(WEB_SPEC).release.number == 1
        # The unix socket stays plain HTTP.
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(unix_path))) as plain:
            assert plain.get("http://kiln/healthz").status_code == 200
        # Plain HTTP to the TLS port gets no answer from kiln.
        with pytest.raises(httpx.HTTPError), httpx.Client() as plain:
            plain.get(url.replace("https://", "http://") + "/healthz", timeout=5)


def test_an_unknown_ca_is_refused_with_a_clear_error_and_no_token_sent(tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    other = self_signed(tmp_path, name="someone-else")
    with kiln_with_tls(tls) as (url, _):
        for ca in (None, other.cert):
            with (
                KilnClient(base_url=url, token=TOKEN, actor="ann", ca_file=ca) as client,
                pytest.raises(UntrustedCertificate) as caught,
            ):
                client.list_apps()
            message = caught.value.message
            assert f"the kiln API at {url} presented a certificate this client does not trust" in (
                message
            )
            assert "the token was not sent" in message and "KILN_CA" in message


def test_settings_name_the_certificate_and_the_client_goes_https(tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    (tmp_path / "settings.yaml").write_text(f"api:\n  tls: {{cert: {tls.cert}, key: {tls.key}}}\n")
    settings = Settings.from_env(
        {"KILN_HOME": str(tmp_path), "KILN_API_TCP": "1", "KILN_CA": str(tls.cert)}
    )
    assert settings.file.api.tls == tls
    endpoint = Endpoint.of(settings)
    assert endpoint.url == "https://127.0.0.1:7070" and endpoint.ca_file == tls.cert
    check_tls(tls)


def test_a_certificate_kiln_cannot_use_is_refused_before_it_starts(tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    bad = TlsSettings(cert=tls.cert, key=tmp_path / "missing.key")
    with pytest.raises(InvalidInput, match=r"api\.tls cannot be used"):
        check_tls(bad)
    (tmp_path / "garbage.crt").write_text("not a certificate")
    with pytest.raises(InvalidInput, match=r"api\.tls cannot be used"):
        check_tls(TlsSettings(cert=tmp_path / "garbage.crt", key=tls.key))
