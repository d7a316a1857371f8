"""infra/gunicorn_pywsgi.py: gevent's pywsgi handler made to behave as gunicorn's own does
(one write per small response, a WebSocket ends its connection, gunicorn's limits and
strictness, a deadline for each request's head). Each request is served by the real
handler over a socketpair; the stock handler is the reference where they should agree."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent.socket  # type: ignore[import-untyped]
import pytest
from gevent import pywsgi
from gunicorn.config import Config
from gunicorn.workers.ggevent import GeventPyWSGIWorker, GeventWorker, PyWSGIHandler

from infra import gunicorn_pywsgi
from infra.gunicorn_pywsgi import ApiPyWSGIHandler

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Log:
    def access(self, *args: Any) -> None:
        pass


class Server:
    def __init__(self, application: App) -> None:
        self.application = application
        self.log = Log()
        self.error_log = io.StringIO()

    def get_environ(self) -> dict[str, Any]:
        return {"SERVER_SOFTWARE": "gevent/test", "wsgi.url_scheme": "http"}


class RecordingSocket:
    """The server's end of the pair; records each sendall."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def body_app(status: str, headers: list[tuple[str, str]], body: Iterable[bytes]) -> App:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, headers)
        return body

    return app


HELLO = body_app("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")], [b"hello"])


def serve(
    handler_class: type[PyWSGIHandler], request: bytes, app: App = HELLO, *, half_close: bool = True
) -> tuple[bytes, list[bytes]]:
    """Serve ``request`` on one connection; what the client received, and the writes."""
    client, server_end = gevent.socket.socketpair()  # as in the worker: gevent's sockets
    try:
        client.sendall(request)
        if half_close:
            client.shutdown(socket.SHUT_WR)
        recording = RecordingSocket(server_end)
        handler_class(recording, ("127.0.0.1", 1234), Server(app)).handle()
        client.settimeout(5)
        received = b""
        # A connection closed with request bytes unread is reset (as by gunicorn) after
        # what was sent to it.
        with contextlib.suppress(ConnectionResetError):
            while chunk := client.recv(65536):
                received += chunk
        return received, recording.writes
    finally:
        client.close()
        server_end.close()


def without_date(data: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", data)


GET = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


# -- one write per small response ------------------------------------------------------


def test_small_response_is_one_write_with_the_stock_bytes() -> None:
    ours, writes = serve(ApiPyWSGIHandler, GET)
    theirs, stock_writes = serve(PyWSGIHandler, GET)
    assert without_date(ours) == without_date(theirs)
    assert ours.startswith(b"HTTP/1.1 200 OK\r\n")
    assert ours.endswith(b"\r\n\r\nhello")
    assert len(writes) == 1
    assert len(stock_writes) == 2


def chunks() -> Iterator[bytes]:
    yield b"a,b\n"
    yield b"1,2\n"


@pytest.mark.parametrize(
    "make_app",
    [
        lambda: body_app("200 OK", [("Content-Type", "text/csv")], chunks()),  # streamed
        lambda: body_app("204 No Content", [], []),
        lambda: body_app("200 OK", [("Content-Length", "70000")], [b"x" * 70_000]),  # no copy
    ],
    ids=["chunked", "204", "large"],
)
def test_other_responses_keep_the_stock_bytes(make_app: Callable[[], App]) -> None:
    ours, writes = serve(ApiPyWSGIHandler, GET, make_app())
    theirs, _ = serve(PyWSGIHandler, GET, make_app())
    assert without_date(ours) == without_date(theirs)
    assert writes[0].endswith(b"\r\n\r\n")  # the headers alone


def test_chunked_response_is_framed() -> None:
    received, _ = serve(
        ApiPyWSGIHandler, GET, body_app("200 OK", [("Content-Type", "text/csv")], chunks())
    )
    assert b"Transfer-Encoding: chunked\r\n" in received
    assert received.endswith(b"\r\n\r\n4\r\na,b\n\r\n4\r\n1,2\n\r\n0\r\n\r\n")


# -- a WebSocket ends its connection ---------------------------------------------------


def took_the_socket(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """flask-sock's way: the session ran on the socket; no start_response, no body."""
    return []


# What a WebSocket client sends after the session: a masked close frame (no newline).
CLOSE_FRAME = b"\x88\x82\x01\x02\x03\x04\x02\xea"
UPGRADE = (
    b"GET /api/v1/logs/stream HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def flask_sock_in_gunicorn_mode(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> list[bytes]:
    """flask-sock with simple-websocket's gunicorn mode: the session ran on
    ``environ["gunicorn.socket"]``, then the response object raises StopIteration."""
    sock = environ["gunicorn.socket"]
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    raise StopIteration


def test_a_websocket_gets_the_connections_socket_and_ends_the_connection() -> None:
    received, writes = serve(
        ApiPyWSGIHandler, UPGRADE + CLOSE_FRAME + b"\r\n", flask_sock_in_gunicorn_mode
    )
    assert received == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"  # nothing after it
    assert writes == [received]  # through the handler's own socket


def test_the_websockets_socket_is_closed_through_gevent() -> None:
    """A greenlet that still holds the socket (simple-websocket's reader) must find it
    closed (fileno -1), not a stale fd number closed behind the event loop's back: a
    watcher registered on that aborts the worker (libev's assertion, SIGABRT)."""
    # simple-websocket's Server keeps the environ, and with it ``wsgi.input``: pywsgi's
    # rfile for an upgrade request, a file object on the socket.
    environs: list[dict[str, Any]] = []

    def session(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environs.append(environ)
        raise StopIteration

    client, server_end = gevent.socket.socketpair()
    try:
        client.sendall(UPGRADE)
        ApiPyWSGIHandler(server_end, ("127.0.0.1", 1234), Server(session)).handle()
        assert environs[0]["gunicorn.socket"].fileno() == -1
        # Closed by gevent itself (its OS socket replaced by a closed placeholder), which
        # tells the event loop; not the OS socket closed underneath it.
        assert not server_end._sock
    finally:
        client.close()
        server_end.close()


def test_closing_the_websockets_socket_ends_the_connection_at_once() -> None:
    """simple-websocket's reader closes the socket when the client's close frame came; the
    client must see the TCP close then, not when the view returns (pywsgi's rfile still
    holds the descriptor)."""
    client, server_end = gevent.socket.socketpair()
    seen: list[bytes] = []

    def session(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["gunicorn.socket"].close()
        client.settimeout(2)
        try:
            seen.append(client.recv(10))  # EOF now, while the view still runs
        except TimeoutError:
            seen.append(b"<still open>")
        raise StopIteration

    try:
        client.sendall(UPGRADE)
        ApiPyWSGIHandler(server_end, ("127.0.0.1", 1234), Server(session)).handle()
    finally:
        client.close()
        server_end.close()
    assert seen == [b""]


def test_a_response_never_started_ends_the_connection_with_nothing_more_written() -> None:
    received, writes = serve(ApiPyWSGIHandler, UPGRADE + CLOSE_FRAME + b"\r\n", took_the_socket)
    assert received == b""
    assert writes == []


def test_the_stock_handler_would_answer_the_close_frame_as_http() -> None:
    received, _ = serve(PyWSGIHandler, UPGRADE + CLOSE_FRAME + b"\r\n", took_the_socket)
    assert received.startswith(b"HTTP/1.1 400 Bad Request")


# -- gunicorn's limits and strictness --------------------------------------------------


def get_with(header_lines: list[str]) -> bytes:
    return ("GET /x HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in header_lines) + "\r\n").encode()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (get_with(["Host: a"] + [f"X-{i}: v" for i in range(99)]), b"200"),  # 100 fields
        (get_with(["Host: a"] + [f"X-{i}: v" for i in range(100)]), b"431"),  # 101
        # A field line of 8190 bytes with its CRLF, and one byte more.
        (get_with(["Host: a", "X-A: " + "a" * (8190 - 7)]), b"200"),
        (get_with(["Host: a", "X-A: " + "a" * (8190 - 6)]), b"431"),
        (get_with(["Host: a", "X-A: " + "a" * 70_000]), b"431"),
    ],
    ids=["100-fields", "101-fields", "field-8190", "field-8191", "field-70000"],
)
def test_header_limits_are_gunicorns(request_bytes: bytes, status: bytes) -> None:
    received, _ = serve(ApiPyWSGIHandler, request_bytes)
    assert received.startswith(b"HTTP/1.1 " + status), received[:80]


def test_request_line_limit_is_gunicorns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pywsgi, "MAX_REQUEST_LINE", 8190 + 3)  # as install() sets it
    for length, status in ((8190, b"200"), (8191, b"414")):
        target = "/x?" + "a" * (length - len("GET /x? HTTP/1.1"))
        line = f"GET {target} HTTP/1.1"
        assert len(line) == length
        received, _ = serve(ApiPyWSGIHandler, f"{line}\r\nHost: a\r\n\r\n".encode())
        assert received.startswith(b"HTTP/1.1 " + status), (length, received[:80])


SMALL_POST = b"Host: a\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /x\r\n\r\n",  # HTTP/0.9
        b"GET /x HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET /x HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",  # bare LF in the headers
        b"get /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  2\r\n\r\n",  # obsolete folding
        b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST /x HTTP/1.1\r\n"
        + SMALL_POST
        + b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /x HTTP/1.1\r\n" + SMALL_POST + b"Content-Length: +2\r\n\r\n{}",
        b"POST /x HTTP/1.1\r\n" + SMALL_POST + b"Content-Length: 0_2\r\n\r\n{}",
        b"POST /x HTTP/1.1\r\n" + SMALL_POST + b"Content-Length: -0\r\n\r\n",
        b"POST /x HTTP/1.0\r\n" + SMALL_POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n",
        b"POST /x HTTP/1.1\r\n" + SMALL_POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /x HTTP/1.1\r\n"
        + SMALL_POST
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\n" + SMALL_POST + b"Transfer-Encoding: xchunked\r\n\r\n{}",
        b"POST /x HTTP/1.1\r\n" + SMALL_POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
    ],
    ids=[
        "http-0.9",
        "bare-lf",
        "bare-lf-header",
        "lower-case-method",
        "control-in-target",
        "version-2.0",
        "obs-fold",
        "space-before-colon",
        "two-hosts",
        "two-content-types",
        "content-length-plus",
        "content-length-underscore",
        "content-length-minus-zero",
        "chunked-http-1.0",
        "no-colon",
        "nul-in-value",
        "cr-in-value",
        "two-content-lengths",
        "cl-and-te",
        "unknown-te",
        "te-list",
    ],
)
def test_what_gunicorn_refuses_is_a_400_before_the_app(request_bytes: bytes) -> None:
    called: list[bool] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        called.append(True)
        return HELLO(environ, start_response)

    received, _ = serve(ApiPyWSGIHandler, request_bytes, app)
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n"), received[:80]
    assert called == []


def echo_body(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body: bytes = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.mark.parametrize(
    ("version", "expect", "continued"),
    [
        ("HTTP/1.1", "100-continue", True),
        ("HTTP/1.1", "100-Continue", True),  # the field value is case-insensitive
        ("HTTP/1.0", "100-continue", False),  # an HTTP/1.0 client's expectation is ignored
    ],
)
def test_expect_100_continue_as_gunicorn_reads_it(
    version: str, expect: str, continued: bool
) -> None:
    request = (
        f"POST /x {version}\r\nHost: a\r\nExpect: {expect}\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\n{}"
    ).encode()
    received, _ = serve(ApiPyWSGIHandler, request, echo_body)
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\n") == continued, received[:80]
    assert b"HTTP/1.1 200 OK\r\n" in received
    assert received.endswith(b"\r\n\r\n{}")


def test_another_expectation_is_ignored() -> None:
    """RFC 9110 lets a server ignore it; gunicorn's 417 is not in the API's contract."""
    request = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: foo\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}"
    )
    received, _ = serve(ApiPyWSGIHandler, request, echo_body)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:80]
    assert received.endswith(b"\r\n\r\n{}")


def test_headers_reach_the_environ_trimmed() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.update(environ)
        return HELLO(environ, start_response)

    request = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type:application/json \r\n"
        b"Content-Length: 2\r\nX-Tab:\tv  w\t\r\nX-Empty:\r\nX_Under: dropped\r\n"
        b"X-Latin: caf\xe9\r\n\r\n{}"
    )
    received, _ = serve(ApiPyWSGIHandler, request, app)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert seen["CONTENT_TYPE"] == "application/json"
    assert seen["CONTENT_LENGTH"] == "2"
    assert seen["HTTP_X_TAB"] == "v  w"
    assert seen["HTTP_X_EMPTY"] == ""
    assert seen["HTTP_X_LATIN"] == "caf\xe9"
    assert "HTTP_X_UNDER" not in seen  # as pywsgi (and gunicorn) drop it


def test_chunked_request_body_reaches_the_app() -> None:
    def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body: bytes = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    request = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"2\r\n{}\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    received, _ = serve(ApiPyWSGIHandler, request, echo)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n{}abc")


def test_keep_alive_serves_pipelined_requests() -> None:
    two = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" + GET
    received, writes = serve(ApiPyWSGIHandler, two)
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert len(writes) == 2


# -- a deadline for each request's head ------------------------------------------------


class ShortKeepalive(ApiPyWSGIHandler):
    keepalive = 0.3


def test_an_idle_connection_is_closed_after_the_keepalive_without_an_answer() -> None:
    started = time.monotonic()
    received, writes = serve(ShortKeepalive, b"GET /x HTTP/1.1\r\nHost: a\r\n", half_close=False)
    assert received == b""
    assert writes == []
    assert time.monotonic() - started < 3


def test_the_deadline_is_for_the_head_only() -> None:
    def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        time.sleep(0.5)  # longer than the keepalive: the app is not cut off
        return HELLO(environ, start_response)  # type: ignore[return-value]

    received, _ = serve(ShortKeepalive, GET, slow, half_close=False)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")


def test_an_unread_body_is_dropped_within_the_keepalive_then_the_connection_closed() -> None:
    """The app answers without reading; the client announced a megabyte and sends 10
    bytes. The answer arrives, and the connection ends after the keep-alive instead of
    waiting for the rest of the body."""
    refuse = body_app("413 Request Entity Too Large", [("Content-Length", "0")], [])
    request = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n0123456789"
    started = time.monotonic()
    received, _ = serve(ShortKeepalive, request, refuse, half_close=False)
    assert received.startswith(b"HTTP/1.1 413 ")
    assert time.monotonic() - started < 3


def test_a_body_sent_in_full_keeps_the_connection() -> None:
    refuse = body_app("413 Request Entity Too Large", [("Content-Length", "0")], [])
    request = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + GET
    received, _ = serve(ShortKeepalive, request, refuse, half_close=False)
    assert received.startswith(b"HTTP/1.1 413 ")
    assert received.count(b"HTTP/1.1 ") == 2  # the pipelined GET was served too


# -- install ---------------------------------------------------------------------------


def worker(cls: Any) -> Any:
    made = object.__new__(cls)
    cfg = Config()
    cfg.set("limit_request_line", 8190)
    cfg.set("limit_request_fields", 50)
    cfg.set("keepalive", 5)
    made.cfg = cfg
    return made


def test_install_sets_the_handler_and_the_workers_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pywsgi, "MAX_REQUEST_LINE", pywsgi.MAX_REQUEST_LINE)  # restored after
    pywsgi_worker = worker(GeventPyWSGIWorker)
    assert gunicorn_pywsgi.install(pywsgi_worker)
    handler = pywsgi_worker.wsgi_handler
    assert issubclass(handler, ApiPyWSGIHandler)
    assert (handler.limit_request_fields, handler.limit_request_field_size) == (50, 8190)
    assert handler.keepalive == 5.0
    assert pywsgi.MAX_REQUEST_LINE == 8193


def test_install_leaves_the_gevent_worker_alone() -> None:
    gevent_worker = worker(GeventWorker)
    assert not gunicorn_pywsgi.install(gevent_worker)
    assert gevent_worker.wsgi_handler is None
