"""The LLMActor over HTTPS: the scripted LLM behind a certificate made here, trusted through
``llm.providers.<name>.ca_bundle``: HTTP/1.1 over the platform's own client
(``actors/llm/http1.py``), HTTP/2 over httpx2 on its asyncio network backend
(``actors/llm/transport.py``).

The certificates are generated in the test (a CA and a server certificate for 127.0.0.1,
with ``cryptography``), written to ``tmp_path``; nothing leaves loopback. Also: a socket
option the system refuses fails the connect typed, and closes the connection.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpcore2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from actors.errors import LLMNotConfigured, LLMUnavailable
from actors.llm.transport import AsyncioBackend
from tests.scripted_llm import Reply, ScriptedLLM
from tests.test_llm import Start, provider, runtime

# The `start` fixture of tests/test_llm.py drives the actors; its `server` is replaced here.
from tests.test_llm import start as start


@dataclass(frozen=True)
class Certificates:
    """A CA's PEM file and a server context holding a certificate it signed."""

    ca_pem: Path
    server: ssl.SSLContext


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path, *, alpn: list[str]) -> Certificates:
    """A test CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("mcp-platform test CA"))
        .issuer_name(_name("mcp-platform test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = directory / "test-ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_pem = directory / "server.pem"
    cert_pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_pem)
    server.set_alpn_protocols(alpn)
    return Certificates(ca_pem, server)


@pytest.fixture(params=["http/1.1", "h2"])
def alpn(request: pytest.FixtureRequest) -> str:
    """The protocol the server offers by ALPN (the client asks for h2 only with http2)."""
    return str(request.param)


@pytest.fixture
def certificates(tmp_path: Path, alpn: str) -> Certificates:
    return make_certificates(tmp_path, alpn=["h2", "http/1.1"] if alpn == "h2" else ["http/1.1"])


@pytest.fixture
async def server(certificates: Certificates) -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM(tls=certificates.server) as scripted:
        yield scripted


async def test_a_stream_over_https_with_the_ca_bundle_is_relayed(
    start: Start, server: ScriptedLLM, certificates: Certificates, alpn: str
) -> None:
    """Both protocols over TLS: HTTP/1.1, and HTTP/2 picked by ALPN when ``http2`` is on."""
    assert server.base_url.startswith("https://127.0.0.1:")
    settings = {"ca_bundle": str(certificates.ca_pem), "http2": alpn == "h2"}
    harness = await start(runtime({"test": provider(server, **settings)}))
    server.script(Reply.text("Hello over TLS, in pieces.", chunks=4), Reply.text("Again."))

    first = await harness.complete("t-1")
    second = await harness.complete("t-2")  # a kept-alive (or multiplexed) TLS connection

    assert first.content == "Hello over TLS, in pieces."
    assert "".join(text for _, text in harness.probe.of("t-1")) == first.content
    assert second.content == "Again."
    assert [r.http_version for r in server.requests] == [
        "HTTP/2" if alpn == "h2" else "HTTP/1.1"
    ] * 2
    assert server.requests[0].connection_id == server.requests[1].connection_id
    assert "ca_bundle" not in server.requests[0].json  # consumed, never sent to the API


async def test_without_the_ca_bundle_the_certificate_is_refused(
    start: Start, server: ScriptedLLM
) -> None:
    harness = await start(runtime({"test": provider(server, max_retries=0)}))
    error = await harness.fail()
    assert isinstance(error, LLMUnavailable)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error), error
    assert server.requests == []  # refused at the handshake: nothing was sent


async def test_a_missing_or_unreadable_ca_bundle_names_the_setting(
    start: Start, server: ScriptedLLM, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.pem"
    harness = await start(runtime({"test": provider(server, ca_bundle=str(missing))}))
    error = await harness.fail("t-1")
    assert isinstance(error, LLMNotConfigured)
    assert "llm.providers.test.ca_bundle" in str(error)
    assert str(missing) in str(error)

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n", "utf-8")
    await harness.configure(runtime({"test": provider(server, ca_bundle=str(not_pem))}))
    error = await harness.fail("t-2")
    assert isinstance(error, LLMNotConfigured)
    assert "llm.providers.test.ca_bundle" in str(error)
    assert "not a readable PEM file" in str(error)
    assert server.requests == []


async def test_a_refused_socket_option_closes_the_connection_with_a_connect_error() -> None:
    """A ``setsockopt`` the system refuses fails the connect as httpcore2's ConnectError
    (what the LLMActor classifies), and the connection just opened is closed, not leaked:
    the peer reads its end."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    accepted = asyncio.Queue(maxsize=1)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait((reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(httpcore2.ConnectError, match="socket option refused"):
            await AsyncioBackend().connect_tcp(
                "127.0.0.1", port, timeout=5, socket_options=[(socket.SOL_SOCKET, 0x7FFF, 1)]
            )
        async with asyncio.timeout(5):
            reader, writer = await accepted.get()
            assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
