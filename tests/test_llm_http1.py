"""The LLM client's own HTTP/1.1 (``actors/llm/http1.py``), against real local servers.

The parsers are tested with plain data (and fuzzed: any input is accepted or refused with
:class:`~actors.llm.http1.LLMProtocolError`); the client against the scripted LLM
(``tests/scripted_llm.py``) and against tiny raw asyncio servers written here for what a
well-behaved server never does (a malformed head, a body cut short, a stall, a connection
closed while idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.errors import LLMUnavailable
from actors.llm.http1 import (
    ChunkedDecoder,
    HTTP1Client,
    LLMConnectError,
    LLMConnectTimeout,
    LLMProtocolError,
    LLMReadError,
    LLMReadTimeout,
    parse_head,
)
from tests.scripted_llm import Content, Disconnect, Done, Gate, Reply, ScriptedLLM
from tests.test_llm import KEY, Start, provider, runtime

# The `start` fixture of tests/test_llm.py drives the actors over its scripted `server`.
from tests.test_llm import server as server
from tests.test_llm import start as start
from tests.test_llm_tls import make_certificates

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SECRET = "sk-never-in-a-message"


# -- the pure parsers --------------------------------------------------------------------------


def test_parse_head_reads_status_and_joins_repeated_fields() -> None:
    head = parse_head(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nX-A: 1\r\nx-a:  2 \r\nEmpty:"
    )
    assert (head.http_version, head.status_code, head.reason) == (
        "HTTP/1.1",
        429,
        "Too Many Requests",
    )
    assert head.headers == {"retry-after": "2", "x-a": "1, 2", "empty": ""}
    assert parse_head(b"HTTP/1.0 200").reason == ""


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"HTTP/2 200 OK", "malformed status line"),
        (b"ICY 200 OK", "malformed status line"),
        (b"HTTP/1.1 20 OK", "malformed status line"),
        (b"HTTP/1.1 abc OK", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\n folded", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nBad Name: 1", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\n: empty name", "malformed header line"),
    ],
)
def test_parse_head_names_what_is_malformed(raw: bytes, what: str) -> None:
    with pytest.raises(LLMProtocolError, match=what):
        parse_head(raw)


CHUNKED = b"5;ext=1\r\nHello\r\n7\r\n, world\r\n0\r\nTrailer: yes\r\n\r\n"


def test_chunked_body_in_one_buffer_is_one_piece() -> None:
    decoder = ChunkedDecoder()
    buffer = bytearray(CHUNKED + b"next")
    assert decoder.decode(buffer) == b"Hello, world"
    assert decoder.done
    assert buffer == b"next"  # what follows the body is left for the connection


def test_chunked_body_split_at_every_byte_decodes_the_same() -> None:
    for cut in range(len(CHUNKED) + 1):
        decoder = ChunkedDecoder()
        buffer = bytearray(CHUNKED[:cut])
        data = decoder.decode(buffer)
        buffer += CHUNKED[cut:]
        data += decoder.decode(buffer)
        assert data == b"Hello, world", cut
        assert decoder.done, cut
        assert not buffer, cut


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"zz\r\n", "malformed chunk size"),
        (b"0x5\r\nHello\r\n", "malformed chunk size"),
        (b"\r\n", "malformed chunk size"),
        (b"5\r\nHelloXX", "not followed by CRLF"),
        (b"1" * 5000, "too long"),
    ],
)
def test_a_malformed_chunked_body_is_refused(raw: bytes, what: str) -> None:
    decoder = ChunkedDecoder()
    buffer = bytearray(raw)
    with contextlib.suppress(LLMProtocolError):
        decoder.decode(buffer)  # the data before a malformed part comes first
    with pytest.raises(LLMProtocolError, match=what):
        decoder.decode(buffer)  # (a refusal leaves the buffer as it was: refused again)


def test_chunks_before_a_malformed_one_are_returned_then_it_is_refused() -> None:
    decoder = ChunkedDecoder()
    buffer = bytearray(b"3\r\nabc\r\n2\r\nde\r\nzz\r\n")
    assert decoder.decode(buffer) == b"abcde"  # the good chunks of the read first
    assert buffer == b"zz\r\n"
    with pytest.raises(LLMProtocolError, match="malformed chunk size"):
        decoder.decode(buffer)
    with pytest.raises(LLMProtocolError, match="malformed chunk size"):
        decoder.decode(buffer)  # and again: the body stays broken


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=200))
def test_fuzz_chunked_decoder_accepts_or_refuses_typed(raw: bytes, cut: int) -> None:
    decoder = ChunkedDecoder()
    buffer = bytearray(raw[:cut])
    try:
        decoder.decode(buffer)
        buffer += raw[cut:]
        decoder.decode(buffer)
    except LLMProtocolError:
        pass


@given(st.binary(max_size=300))
def test_fuzz_parse_head_accepts_or_refuses_typed(raw: bytes) -> None:
    try:
        head = parse_head(raw)
    except LLMProtocolError:
        return
    assert 0 <= head.status_code <= 999


# -- raw servers -----------------------------------------------------------------------------------


class RawServer:
    """A loopback TCP server running ``handler`` on each connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        # Each handler ends once its connection is closed: none is left to be cancelled.
        await asyncio.gather(*self._handlers)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.append(task)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (by Content-Length); ``b""`` if the connection ended."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def answering(*responses: bytes, close: bool = False) -> Handler:
    """A handler answering each request on a connection with the next response."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            if not await read_request(reader):
                return
            writer.write(response)
            await writer.drain()
        if not close:
            await reader.read()  # until the client closes

    return handle


def new_client(**overrides: float) -> HTTP1Client:
    settings: dict[str, float] = {
        "timeout_connect": 5.0,
        "timeout_read": 5.0,
        "max_keepalive": 8,
        "keepalive_expiry": 30.0,
    }
    settings.update(overrides)
    return HTTP1Client(
        ssl_context=None,
        timeout_connect=settings["timeout_connect"],
        timeout_read=settings["timeout_read"],
        max_keepalive=int(settings["max_keepalive"]),
        keepalive_expiry=settings["keepalive_expiry"],
    )


async def post(client: HTTP1Client, url: str) -> tuple[int, bytes]:
    async with client.stream(
        "POST", url, content=b'{"q": 1}', headers={"Authorization": f"Bearer {SECRET}"}
    ) as response:
        return response.status_code, await response.aread()


@pytest.fixture
async def client() -> AsyncIterator[HTTP1Client]:
    http = new_client()
    yield http
    await http.aclose()


OK_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
OK_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;name=value\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\nX-More: 2\r\n\r\n"
)


# -- bodies ----------------------------------------------------------------------------------------


async def test_the_request_carries_host_length_and_keep_alive() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK_LENGTH)
        await reader.read()

    async with RawServer(handle) as server:
        http = new_client()
        assert await post(http, server.url) == (200, b"hello")
        await http.aclose()
        port = server.url.split(":")[2].split("/")[0]
    head = seen[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{port}\r\n" in head
    assert "\r\nContent-Length: 8\r\n" in head
    assert "\r\nConnection: keep-alive\r\n" in head
    assert head.endswith('\r\n\r\n{"q": 1}')


@pytest.mark.parametrize("response", [OK_LENGTH, OK_CHUNKED], ids=["length", "chunked"])
async def test_a_delimited_body_is_read_and_the_connection_reused(
    client: HTTP1Client, response: bytes
) -> None:
    async with RawServer(answering(response, response)) as server:
        assert await post(client, server.url) == (200, b"hello")
        assert client.idle_connections == 1
        assert await post(client, server.url) == (200, b"hello")
    assert server.connections == 1


async def test_chunks_that_arrive_together_are_one_piece(client: HTTP1Client) -> None:
    """One network read, one piece: the LLMActor publishes one delta per piece."""
    async with (
        RawServer(answering(OK_CHUNKED)) as server,
        client.stream("POST", server.url, content=b"", headers={}) as response,
    ):
        pieces = [piece async for piece in response.aiter_bytes()]
    assert pieces == [b"hello"]


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
async def test_data_that_arrives_apart_are_pieces_as_it_arrives(
    client: HTTP1Client, framing: str
) -> None:
    """Each piece is returned as soon as it is read, before the next was sent."""
    taken = asyncio.Event()
    parts = [b"one ", b"two ", b"three"]
    body = b"".join(parts)
    heads = {
        "chunked": b"Transfer-Encoding: chunked\r\n",
        "length": f"Content-Length: {len(body)}\r\n".encode(),
        "close": b"Connection: close\r\n",
    }

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + heads[framing] + b"\r\n")
        for part in parts:
            writer.write(
                f"{len(part):x}\r\n".encode() + part + b"\r\n" if framing == "chunked" else part
            )
            await writer.drain()
            await taken.wait()  # the client has read this part
            taken.clear()
        if framing == "chunked":
            writer.write(b"0\r\n\r\n")
        if framing == "close":
            writer.close()
            return
        await reader.read()

    pieces: list[bytes] = []
    async with (
        RawServer(handle) as server,
        client.stream("POST", server.url, content=b"", headers={}) as response,
    ):
        async for piece in response.aiter_bytes():
            pieces.append(piece)
            taken.set()
    assert pieces == parts


async def test_a_body_delimited_by_the_close_is_read_and_not_reused(client: HTTP1Client) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}"
    async with RawServer(answering(response, close=True)) as server:
        assert await post(client, server.url) == (200, b"{}")
        assert await post(client, server.url) == (200, b"{}")
    assert server.connections == 2
    assert client.idle_connections == 0


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_connection_the_server_will_close_is_not_kept(
    client: HTTP1Client, response: bytes
) -> None:
    async with RawServer(answering(response, response)) as server:
        assert await post(client, server.url) == (200, b"hello")
        assert client.idle_connections == 0
        assert await post(client, server.url) == (200, b"hello")
    assert server.connections == 2


async def test_interim_responses_are_skipped(client: HTTP1Client) -> None:
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + OK_LENGTH
    )
    async with RawServer(answering(response)) as server:
        assert await post(client, server.url) == (200, b"hello")


async def test_a_body_left_unread_closes_the_connection(client: HTTP1Client) -> None:
    async with RawServer(answering(OK_CHUNKED, OK_CHUNKED)) as server:
        async with client.stream("POST", server.url, content=b"", headers={}) as response:
            assert response.status_code == 200
        assert client.idle_connections == 0
        assert await post(client, server.url) == (200, b"hello")
    assert server.connections == 2


async def test_an_answer_before_the_whole_body_was_read_is_heard(client: HTTP1Client) -> None:
    """A server refusing a large body (413) answers after the head and closes: the client
    reads that answer instead of failing on a write the server will never read."""
    answered = asyncio.Event()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
            b"Content-Length: 13\r\n\r\nbody too big."
        )
        await writer.drain()
        answered.set()
        await reader.read()  # drain what still comes, until the client closes

    big = b"x" * (16 * 1024 * 1024)  # more than the sockets' buffers hold
    async with RawServer(refuse) as server:
        async with client.stream("POST", server.url, content=big, headers={}) as response:
            assert response.status_code == 413
            assert await response.aread() == b"body too big."
        assert answered.is_set()
        assert client.idle_connections == 0


# -- keep-alive ------------------------------------------------------------------------------------


async def test_an_idle_connection_the_server_closed_is_not_reused(client: HTTP1Client) -> None:
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await read_request(reader)
            writer.write(OK_LENGTH)  # keep-alive, then closed while idle
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            closed.set()
        else:
            await answering(OK_LENGTH)(reader, writer)

    async with RawServer(handle) as server:
        assert await post(client, server.url) == (200, b"hello")
        await closed.wait()
        await asyncio.sleep(0)  # let the loop read the server's end (one pass)
        await asyncio.sleep(0)
        assert await post(client, server.url) == (200, b"hello")
    assert server.connections == 2


async def test_a_reused_connection_closed_before_answering_is_retried_once(
    client: HTTP1Client,
) -> None:
    """The race of keep-alive: the server closes the idle connection as the next request
    goes out on it. Nothing of the answer came back, so it is sent again on a new one."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await read_request(reader)
            writer.write(OK_LENGTH)
            await writer.drain()
            await read_request(reader)  # the second request: closed, unanswered
        else:
            await answering(OK_LENGTH)(reader, writer)

    async with RawServer(handle) as server:
        assert await post(client, server.url) == (200, b"hello")
        assert await post(client, server.url) == (200, b"hello")
    assert server.connections == 2


async def test_a_new_connection_closed_before_answering_is_not_retried(
    client: HTTP1Client,
) -> None:
    async with RawServer(answering(close=True)) as server:
        with pytest.raises(LLMProtocolError, match="closed the connection without answering"):
            await post(client, server.url)
    assert server.connections == 1


async def test_expired_and_surplus_idle_connections_are_closed() -> None:
    async with RawServer(answering(OK_LENGTH, OK_LENGTH)) as server:
        expiring = new_client(keepalive_expiry=0.0)
        assert await post(expiring, server.url) == (200, b"hello")
        assert await post(expiring, server.url) == (200, b"hello")
        assert server.connections == 2  # the first had expired
        await expiring.aclose()

        one = new_client(max_keepalive=1)
        await asyncio.gather(post(one, server.url), post(one, server.url))
        assert one.idle_connections == 1
        await one.aclose()
        assert one.idle_connections == 0


async def test_two_requests_share_one_connection_of_the_scripted_llm(client: HTTP1Client) -> None:
    async with ScriptedLLM() as server:
        server.script(Reply.text("one", chunks=2), Reply.text("two"))
        url = f"{server.base_url}/chat/completions"
        for _ in range(2):
            async with client.stream(
                "POST", url, content=b'{"model": "m", "stream": true}', headers={}
            ) as response:
                assert response.status_code == 200
                assert b"data: [DONE]" in await response.aread()
        assert [r.http_version for r in server.requests] == ["HTTP/1.1"] * 2
        assert server.requests[0].connection_id == server.requests[1].connection_id


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "error", "what"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            LLMProtocolError,
            "mid-body \\(incomplete chunked read\\)",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            LLMProtocolError,
            "fewer bytes than its Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Le", LLMProtocolError, "before the response's end of head"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            LLMProtocolError,
            "malformed Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            LLMProtocolError,
            "malformed Content-Length",
        ),
        (b"SPDY/3 200 OK\r\n\r\n", LLMProtocolError, "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nX: 1\r\n\tfolded\r\n\r\n", LLMProtocolError, "malformed header line"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
            LLMProtocolError,
            "malformed chunk size",
        ),
    ],
    ids=[
        "chunked-cut",
        "length-cut",
        "head-cut",
        "bad-length",
        "two-lengths",
        "status",
        "folded-header",
        "chunk-size",
    ],
)
async def test_a_broken_response_fails_typed_naming_what(
    client: HTTP1Client, response: bytes, error: type[Exception], what: str
) -> None:
    async with RawServer(answering(response, close=True)) as server:
        with pytest.raises(error, match=what) as caught:
            await post(client, server.url)
    assert SECRET not in str(caught.value)
    assert client.idle_connections == 0


async def test_a_reset_mid_body_is_a_read_error(client: HTTP1Client) -> None:
    async with ScriptedLLM() as server:
        server.script(Reply.stream(Content("Hel"), Disconnect(reset=True)))
        url = f"{server.base_url}/chat/completions"
        with pytest.raises(LLMReadError) as caught:
            async with client.stream("POST", url, content=b"{}", headers={}) as response:
                await response.aread()
    assert caught.value.label == "ReadError"
    assert "reset" in str(caught.value).lower()
    assert isinstance(caught.value.__cause__, ConnectionResetError)


async def test_a_stall_is_a_read_timeout_before_and_after_the_head() -> None:
    http = new_client(timeout_read=0.2)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    async with RawServer(silent) as server:
        with pytest.raises(LLMReadTimeout, match=r"no data for 0\.2 s"):
            await post(http, server.url)
    async with ScriptedLLM() as scripted:
        gate = Gate()
        scripted.script(Reply.stream(Content("Hel"), gate, Content("lo"), Done()))
        url = f"{scripted.base_url}/chat/completions"
        async with http.stream("POST", url, content=b"{}", headers={}) as response:
            assert response.status_code == 200
            with pytest.raises(LLMReadTimeout) as caught:
                await response.aread()
        assert caught.value.label == "ReadTimeout"
        assert await scripted.wait_disconnects(1) == [0]  # the stalled one was closed
        gate.open()
    assert http.idle_connections == 0
    await http.aclose()


async def test_a_refused_connection_is_a_connect_error(client: HTTP1Client) -> None:
    async with RawServer(answering()) as server:
        url = server.url
    with pytest.raises(LLMConnectError) as caught:
        await post(client, url)
    assert caught.value.label == "ConnectError"


async def test_a_tls_handshake_that_never_ends_is_a_connect_timeout(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path, alpn=["http/1.1"])
    context = ssl.create_default_context(cafile=str(certificates.ca_pem))
    http = HTTP1Client(
        ssl_context=context,
        timeout_connect=0.2,
        timeout_read=5.0,
        max_keepalive=8,
        keepalive_expiry=30.0,
    )

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts TCP, never speaks TLS

    async with RawServer(mute) as server:
        with pytest.raises(LLMConnectTimeout, match=r"within 0\.2 s") as caught:
            await post(http, server.url.replace("http://", "https://"))
    assert caught.value.label == "ConnectTimeout"
    await http.aclose()


async def test_a_line_break_in_a_header_is_refused_without_its_value(client: HTTP1Client) -> None:
    with pytest.raises(LLMProtocolError, match="'Authorization' has a line break") as caught:
        client.stream(
            "POST",
            "http://127.0.0.1:1/",
            content=b"",
            headers={"Authorization": f"{SECRET}\r\nX: 1"},
        )
    assert SECRET not in str(caught.value)


# -- TLS, cancellation ---------------------------------------------------------------------------


async def test_https_with_a_test_ca_keeps_one_connection_and_speaks_http_1_1(
    tmp_path: Path,
) -> None:
    certificates = make_certificates(tmp_path, alpn=["h2", "http/1.1"])
    context = ssl.create_default_context(cafile=str(certificates.ca_pem))
    http = HTTP1Client(
        ssl_context=context,
        timeout_connect=5.0,
        timeout_read=5.0,
        max_keepalive=8,
        keepalive_expiry=30.0,
    )
    async with ScriptedLLM(tls=certificates.server) as server:
        server.script(Reply.text("one"), Reply.text("two"))
        url = f"{server.base_url}/chat/completions"
        for _ in range(2):
            async with http.stream("POST", url, content=b"{}", headers={}) as response:
                assert response.status_code == 200
                await response.aread()
        # ALPN offered only http/1.1, so the server that prefers h2 spoke HTTP/1.1.
        assert [r.http_version for r in server.requests] == ["HTTP/1.1"] * 2
        assert server.requests[0].connection_id == server.requests[1].connection_id
    await http.aclose()


async def test_cancelling_mid_stream_closes_the_connection(client: HTTP1Client) -> None:
    async with ScriptedLLM() as server:
        gate = Gate()
        server.script(Reply.stream(Content("Hel"), gate, Content("lo"), Done()))
        url = f"{server.base_url}/chat/completions"
        first = asyncio.Event()

        async def read() -> None:
            async with client.stream("POST", url, content=b"{}", headers={}) as response:
                async for _ in response.aiter_bytes():
                    first.set()

        task = asyncio.create_task(read())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await server.wait_disconnects(1) == [0]
        assert client.idle_connections == 0
        gate.open()


# -- through the LLMActor ----------------------------------------------------------------------


async def test_the_actor_reports_a_refused_connection_by_its_name(
    start: Start, server: ScriptedLLM
) -> None:
    async with RawServer(answering()) as closed:
        base_url = closed.url.removesuffix("/chat/completions")
    harness = await start(runtime({"test": provider(server, base_url=base_url, max_retries=0)}))
    error = await harness.fail()
    assert isinstance(error, LLMUnavailable)
    assert "test failed (1 attempt): ConnectError: " in str(error)
    assert KEY not in str(error)
    assert error.retryable


async def test_the_actor_shows_the_text_read_before_a_malformed_chunk(
    start: Start, server: ScriptedLLM
) -> None:
    """Good chunks and a malformed one in one read: the good ones' text is published and
    kept in the error (the client saw it), then the stream fails without a retry."""
    event = b'data: {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}\n\n'
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(event):x}\r\n".encode()
        + event
        + b"\r\nnot-hex\r\n"
    )
    async with RawServer(answering(response, close=True)) as broken:
        base_url = broken.url.removesuffix("/chat/completions")
        harness = await start(runtime({"test": provider(server, base_url=base_url, max_retries=1)}))
        error = await harness.fail()
    assert isinstance(error, LLMUnavailable)
    assert "broke after 5 chars: RemoteProtocolError: malformed chunk size b'not-hex'" in str(error)
    assert harness.probe.of("t-1") == [("content", "Hello")]
    assert broken.connections == 1  # text was shown: not asked again


async def test_the_actor_reports_a_malformed_response_and_retries_it(
    start: Start, server: ScriptedLLM
) -> None:
    async with RawServer(answering(b"HTTP/1.1 2OO OK\r\n\r\n", close=True)) as broken:
        base_url = broken.url.removesuffix("/chat/completions")
        harness = await start(runtime({"test": provider(server, base_url=base_url, max_retries=1)}))
        error = await harness.fail()
    assert isinstance(error, LLMUnavailable)
    assert "(2 attempts): RemoteProtocolError: malformed status line b'HTTP/1.1 2OO OK'" in str(
        error
    )
    assert broken.connections == 2  # retried on a new connection
    assert KEY not in str(error)
