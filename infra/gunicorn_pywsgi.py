"""The API's request handler under gunicorn's ``gevent_pywsgi`` worker (gevent's own HTTP
server, ``gevent.pywsgi``, in place of gunicorn's parser and ``Response``).

What gunicorn's handler does and pywsgi's does not, restored here:

* **A WebSocket runs as under gunicorn's handler, and ends its connection.** The environ
  carries ``gunicorn.socket``, so simple-websocket takes the connection's own socket (its
  "gunicorn" mode, the one the gevent worker runs) and flask-sock ends the view by raising
  StopIteration, which ends the connection here as it does in gunicorn; its ``close()``
  ends the connection at once (``WebSocketConnection``). (Without ``gunicorn.socket``,
  simple-websocket's gevent mode works on a ``dup()`` of the socket: the TCP close waited
  for the session's next poll, up to a heartbeat interval after the close handshake, and
  pywsgi read the client's close frame as the next request line: a 400 written into a
  closed WebSocket, or a wait for a newline that never comes.) Any response the app never
  started likewise ends the connection, closed through gevent's socket object
  (``_end_connection``: pywsgi alone closes the OS socket underneath it, and a watcher
  simple-websocket's reader then registers on the dead fd aborts the worker in libev).
* **One socket write per small response.** pywsgi sends the status line and headers with
  one ``sendall`` and the body with another; like ``infra/gunicorn_response.py`` for
  gunicorn's ``Response``, a body of up to ``COALESCE_MAX_BYTES`` goes with the headers.
* **gunicorn's request limits and strictness.** ``--limit-request-line`` (pywsgi's limit is
  the module constant ``gevent.pywsgi.MAX_REQUEST_LINE``, set from it), the header limits
  ``--limit-request-fields`` and ``--limit-request-field_size`` (431 past them; pywsgi
  alone allows 99 lines of 64 KiB and prints a traceback past that), and a 400 for what
  gunicorn 27 refuses and pywsgi accepts: HTTP/0.9, bare LF line ends, a lower-case
  method, control bytes in the target, folded header lines, a header name that is not a
  token (a space before the colon), a control character in a header value, a repeated
  Host or Content-Type, a Content-Length that is not plain digits or given twice, and a
  Transfer-Encoding other than ``chunked``, beside a Content-Length or in an HTTP/1.0
  request (the body's length would be ambiguous: request smuggling behind a proxy).
  Header values reach the environ trimmed of spaces and tabs at both ends, as gunicorn's.
  ``Expect: 100-continue`` is read in any case; another expectation is ignored (gunicorn
  answers 417).
* **gunicorn's keep-alive deadline** for each request's head (``read_requestline``) and for
  dropping the unread rest of a body (``_discard_body_within_deadline``).

What stays pywsgi's own: its errors before the app are bodiless (``Content-length: 0``)
where gunicorn's are small HTML pages; neither is the app's problem+json. ``100 Continue``
is sent when the app first reads the body (gunicorn sends it before calling the app). No
``Server`` header; an HTTP/1.0 request is answered with an HTTP/1.1 status line.
``X-Forwarded-Proto`` does not set ``wsgi.url_scheme`` (gunicorn's does, from 127.0.0.1);
the API builds no absolute URLs.

``install(worker)`` (from ``post_worker_init``) makes the worker's servers use it.
"""

from __future__ import annotations

import contextlib
import re
import socket
from typing import Any

import gevent  # type: ignore[import-untyped]
from gevent import pywsgi
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

COALESCE_MAX_BYTES = 64 * 1024  # larger bodies are not copied behind the headers
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Connection: close\r\nContent-length: 0\r\n\r\n"
)

# RFC 9110 token characters, upper case only (gunicorn refuses a lower-case method too).
METHOD = re.compile(r"[A-Z0-9!#$%&'*+.^_`|~-]+")
FIELD_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # a token, no space before the colon
# Fields that may appear once (RFC 9110; gunicorn refuses a repeat of these).
SINGLE_FIELDS = frozenset({"content-length", "host", "content-type"})
VALUE_INVALID = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but tab (as gunicorn)
TARGET_INVALID = re.compile(r"[^\x21-\x7e]")  # controls, spaces, DEL and 0x80-0xFF
VERSIONS = ("HTTP/1.0", "HTTP/1.1")


class HeadersTooLarge(ValueError):
    """More header lines, or a longer one, than gunicorn's limits allow."""


def _invalid(message: str) -> Exception:
    error: Exception = pywsgi._InvalidClientRequest(message)  # a 400 from pywsgi
    return error


class WebSocketConnection:
    """A WebSocket's socket as simple-websocket gets it: ``close()`` ends the connection at
    once, as closing gunicorn's socket does. pywsgi's handler holds a file object on the
    socket (its ``rfile``), so ``socket.close()`` alone would keep the descriptor open and
    the client waiting for the TCP close until the view returns (the session's next poll,
    up to a heartbeat interval later)."""

    def __init__(self, sock: socket.socket) -> None:
        self._connection = sock

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._connection.shutdown(socket.SHUT_RDWR)
        self._connection.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class ApiPyWSGIHandler(PyWSGIHandler):  # type: ignore[misc]  # gevent is untyped here
    # gunicorn's defaults; install() sets the worker's configured values.
    limit_request_fields = 100
    limit_request_field_size = 8190
    keepalive = 2.0

    def read_requestline(self) -> str:
        """gunicorn's gevent worker gives a connection ``--keep-alive`` seconds to send each
        request's line and headers, then closes it without an answer; pywsgi alone would
        wait forever, so idle keep-alive connections and slow senders would hold greenlets
        (of ``--worker-connections``) for good. The deadline ends in ``get_environ``."""
        if self.keepalive > 0:
            self.socket.settimeout(self.keepalive)
        line: str = super().read_requestline()
        return line

    def run_application(self) -> None:
        try:
            super().run_application()
        except StopIteration:
            # flask-sock's end of a WebSocket in gunicorn mode: the view is done with the
            # socket, nothing was (or may be) written as a response; gunicorn closes, and
            # so does handle_one_response (the status is still None).
            self.close_connection = True
            return
        self._discard_body_within_deadline()

    def _discard_body_within_deadline(self) -> None:
        """The rest of a body the app did not read (a 413, a 401 before the body) is read
        and dropped before the next request; gunicorn gives that the keep-alive deadline
        and then closes, pywsgi alone would read all of it, however long it is or however
        slowly it comes. (pywsgi's own discard, which follows, then has nothing left.)"""
        if self.keepalive <= 0:
            return
        finished = False
        try:
            with gevent.Timeout(self.keepalive, False):  # False: leave the block quietly
                self.wsgi_input._discard()
                finished = True
        except pywsgi._InvalidClientInput:
            raise  # a malformed chunked body: pywsgi answers it (400) and closes
        except OSError:
            finished = False
        if not finished:
            self.wsgi_input._chunked_input_error = True  # makes pywsgi's discard a no-op
            self.close_connection = True

    def get_environ(self) -> dict[str, Any]:
        self.socket.settimeout(None)  # the head is in; the body has no deadline (as gunicorn)
        environ: dict[str, Any] = super().get_environ()
        # As gunicorn's handler does; simple-websocket takes a WebSocket's socket from here.
        upgrade = self._connection_upgrade_requested()
        environ["gunicorn.socket"] = WebSocketConnection(self.socket) if upgrade else self.socket
        return environ

    def read_request(self, raw_requestline: str) -> bool:
        """What gunicorn refuses with a 400, refused here too: pywsgi alone accepts HTTP/0.9,
        a bare LF, a lower-case method and control bytes in the target."""
        if not raw_requestline.endswith("\r\n"):
            raise _invalid(f"request line not ended by CRLF: {raw_requestline[:100]!r}")
        words = raw_requestline[:-2].split(" ")
        if len(words) != 3:
            raise _invalid(f"malformed request line: {raw_requestline[:100]!r}")
        method, target, version = words
        if not METHOD.fullmatch(method) or version not in VERSIONS:
            raise _invalid(f"invalid method or version: {raw_requestline[:100]!r}")
        if not target or TARGET_INVALID.search(target):
            raise _invalid(f"invalid request target: {raw_requestline[:100]!r}")
        return bool(super().read_request(raw_requestline))

    def MessageClass(self, fp: Any, *args: Any) -> Any:
        """The header block within gunicorn's limits (a line, CRLF included, of at most
        ``limit_request_field_size`` bytes; at most ``limit_request_fields`` lines), parsed
        as pywsgi parses it, and refused where the body's framing would be ambiguous (the
        request-smuggling cases gunicorn refuses)."""
        size, count = self.limit_request_field_size, self.limit_request_fields
        lines: list[bytes] = []
        while True:
            line = fp.readline(size + 1 if size else -1)
            if size and len(line) > size:
                raise HeadersTooLarge(f"a header line over {size} bytes")
            if line in (b"\r\n", b""):
                break
            if not line.endswith(b"\r\n"):
                raise _invalid("a header line not ended by CRLF")
            if line[:1] in (b" ", b"\t"):
                raise _invalid("an obsolete folded header line")
            lines.append(line)
            if count and len(lines) > count:
                raise HeadersTooLarge(f"more than {count} header fields")
        # Split here, not by pywsgi's email.parser: that was ~5 % of a single-event POST's
        # CPU (``bench/ingest.py --profile``).
        headers = pywsgi.OldMessage()
        for line in lines:
            name, colon, value = line[:-2].decode("iso-8859-1").partition(":")
            if not colon or not FIELD_NAME.fullmatch(name):
                raise _invalid(f"malformed header line: {line[:100]!r}")
            if VALUE_INVALID.search(value):
                raise _invalid(f"a control character in the value of {name}")
            if name.lower() in SINGLE_FIELDS and name in headers:
                raise _invalid(f"more than one {name}")
            headers[name] = value.strip(" \t")
        lengths = headers.get_all("Content-Length") or []
        encoding = headers.get_all("Transfer-Encoding") or []
        if lengths and not (lengths[0].isascii() and lengths[0].isdigit()):
            # "+2", "0_2": pywsgi's int() and werkzeug would read different lengths.
            raise _invalid(f"Content-Length {lengths[0][:20]!r}")
        if encoding and (lengths or [e.strip().lower() for e in encoding] != ["chunked"]):
            raise _invalid(f"Transfer-Encoding {encoding!r} (with Content-Length {lengths!r})")
        if encoding and self.request_version == "HTTP/1.0":
            raise _invalid("Transfer-Encoding in an HTTP/1.0 request")
        self._settle_expect(headers)
        return headers

    def _settle_expect(self, headers: Any) -> None:
        """``Expect: 100-continue`` as gunicorn reads it: in any case (pywsgi sends its
        ``100 Continue`` only for the lower-case spelling), and ignored from an HTTP/1.0
        client (RFC 9110 10.1.1). Another expectation is ignored, which RFC 9110 allows;
        gunicorn answers it 417, a status the API's contract does not list."""
        expect = headers.get("Expect")
        if expect is None or expect.lower() != "100-continue":
            return
        del headers["Expect"]
        if self.request_version != "HTTP/1.0":
            headers["Expect"] = "100-continue"

    def _handle_client_error(self, ex: Exception) -> Any:
        if isinstance(ex, (TimeoutError, ConnectionError)):
            return None  # the head did not come in time, or the peer left: close, quietly
        if isinstance(ex, HeadersTooLarge):
            self.log_error("(from %s) %s", self.client_address, ex)
            return ("431", HEADERS_TOO_LARGE)
        return super()._handle_client_error(ex)

    def _write_with_headers(self, data: bytes) -> None:
        # pywsgi's own method, but for the body's write: one sendall when it is small.
        self.headers_sent = True
        self.finalize_headers()  # may choose chunked (a body iterable without a length)
        head = bytearray(b"HTTP/1.1 ")
        head += self.status
        head += b"\r\n"
        for name, value in self.response_headers:
            head += name + b": " + value + b"\r\n"
        head += b"\r\n"
        if self.response_use_chunked or not data or len(data) > COALESCE_MAX_BYTES:
            self._sendall(head)
            self._write(data)
        else:
            head += data
            self._sendall(head)

    def handle_one_response(self) -> None:
        super().handle_one_response()
        if self.status is None:
            # The application never started a response: it took the socket over (a
            # WebSocket) and is done with it. Nothing more on this connection is HTTP.
            self._end_connection()

    def _end_connection(self) -> None:
        """Close the connection through gevent's socket, as gunicorn does, before pywsgi's
        own clean-up: that closes the OS socket under gevent's object (which pywsgi's
        ``rfile`` keeps open), so the fd is gone without the event loop being told, and
        simple-websocket's reader greenlet, which may start only now, then registers a
        watcher on the dead fd: libev aborts the whole worker (SIGABRT). Closed here,
        the socket's ``fileno()`` is -1 and the reader stops at once."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.rfile.close()  # the file object's reference, or close() would wait for it
        self.socket.close()  # tells the loop the fd is closing, wakes its waiters


def install(worker: Any) -> bool:
    """Serve this gevent_pywsgi worker's connections with ``ApiPyWSGIHandler`` and the
    worker's request limits; False (and nothing changed) for another worker class."""
    if not isinstance(worker, GeventPyWSGIWorker):
        return False
    cfg = worker.cfg
    if cfg.limit_request_line > 0:
        # pywsgi refuses a line (CRLF included) of MAX_REQUEST_LINE bytes or more; gunicorn
        # one longer than the limit without its CRLF. Module-wide, in this worker only.
        pywsgi.MAX_REQUEST_LINE = cfg.limit_request_line + 3
    worker.wsgi_handler = type(
        "ApiPyWSGIHandler",
        (ApiPyWSGIHandler,),
        {
            "limit_request_fields": cfg.limit_request_fields,
            "limit_request_field_size": cfg.limit_request_field_size,
            "keepalive": float(cfg.keepalive),
        },
    )
    return True
