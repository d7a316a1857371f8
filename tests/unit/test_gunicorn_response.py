"""infra/gunicorn_response.py: the bytes on the wire are gunicorn's own, in fewer writes."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi

from infra.gunicorn_response import CoalescingResponse


class RecordingSocket:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


class Request:
    def __init__(self, method: str = "GET", version: tuple[int, int] = (1, 1)) -> None:
        self.method = method
        self.version = version

    def should_close(self) -> bool:
        return False


def serve(
    response_class: Any, method: str, status: str, headers: list[tuple[str, str]], body: list[bytes]
) -> list[bytes]:
    sock = RecordingSocket()
    response = response_class(Request(method), sock, Config())
    response.start_response(status, headers)
    for chunk in body:
        response.write(chunk)
    response.close()
    # The Date header is the only part that depends on when the response was made.
    return [re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", w) for w in sock.writes]


CASES: dict[str, tuple[str, str, list[tuple[str, str]], list[bytes]]] = {
    "ingest 202": (
        "POST",
        "202 ACCEPTED",
        [("Content-Type", "application/json"), ("Content-Length", "24")],
        [b'{"id":"x","status":"ok"}'],
    ),
    "streamed, chunked": ("GET", "200 OK", [("Content-Type", "text/csv")], [b"a,b\n", b"1,2\n"]),
    "no body (204)": ("DELETE", "204 NO CONTENT", [], []),
    "HEAD with a length": ("HEAD", "200 OK", [("Content-Length", "5")], [b"hello"]),
    "several writes, with a length": (
        "GET",
        "200 OK",
        [("Content-Length", "6")],
        [b"abc", b"def"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_bytes_as_gunicorn(case: str) -> None:
    method, status, headers, body = CASES[case]
    ours = serve(CoalescingResponse, method, status, headers, body)
    theirs = serve(wsgi.Response, method, status, headers, body)
    assert b"".join(ours) == b"".join(theirs)
    assert b"".join(ours).startswith(b"HTTP/1.1 " + status.encode())


def test_small_response_is_one_write() -> None:
    method, status, headers, body = CASES["ingest 202"]
    writes = serve(CoalescingResponse, method, status, headers, body)
    assert len(writes) == 1
    assert writes[0].endswith(b"\r\n\r\n" + body[0])
    assert len(serve(wsgi.Response, method, status, headers, body)) == 2


def test_chunked_response_sends_headers_before_the_first_chunk() -> None:
    writes = serve(CoalescingResponse, *CASES["streamed, chunked"])
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in writes[0]
    assert writes[-1] == b"0\r\n\r\n"


def test_file_wrapper_is_written_through_write() -> None:
    sock = RecordingSocket()
    response = CoalescingResponse(Request(), sock, Config())
    response.start_response("200 OK", [("Content-Length", "4")])
    file_wrapper: Callable[..., Any] = wsgi.FileWrapper
    response.write_file(file_wrapper(io.BytesIO(b"data")))
    response.close()
    assert len(sock.writes) == 1
    assert sock.writes[0].endswith(b"\r\n\r\ndata")
