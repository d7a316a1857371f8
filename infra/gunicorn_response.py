"""One socket write per small response in the API's gunicorn workers.

gunicorn's ``Response`` sends the status line and headers with one ``sendall`` and the body
with another. Nearly every API answer is a few hundred bytes (an ingest 202 is ~90), so a
request costs two system calls and, on the client's side, two segments to read. Profiles
of single-event ingest put the header write alone at ~7 % of a worker's CPU.

``CoalescingResponse`` keeps the header bytes until the first body write and sends both
with one ``sendall``; a response without a body, a chunked one and the end of every
response flush them first, so what reaches the client is byte for byte what gunicorn would
have sent. (A file wrapper is written through ``write`` rather than ``sendfile``.)

``install()`` makes gunicorn build it for every HTTP/1.x request of the worker it runs in;
it changes nothing if this gunicorn's ``Response`` is not shaped as expected
(``send_headers`` and ``_emit_body``, gunicorn >= 25).
"""

from __future__ import annotations

from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

_Base: Any = wsgi.Response


class CoalescingResponse(_Base):  # type: ignore[misc]
    headers_sent: bool  # set by gunicorn's __init__
    _held_headers: bytes = b""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        self._held_headers = util.to_bytestring("{}\r\n".format("".join(lines)), "latin-1")
        # "Sent" as far as gunicorn is concerned: the status can no longer change, and an
        # error from here on closes the connection instead of writing a second status line.
        self.headers_sent = True

    def _flush_headers(self) -> None:
        if self._held_headers:
            held, self._held_headers = self._held_headers, b""
            util.write(self.sock, held)

    def _emit_body(self, data: bytes) -> None:
        if self._held_headers and not self.chunked:
            held, self._held_headers = self._held_headers, b""
            util.write(self.sock, held + data)
            return
        self._flush_headers()
        super()._emit_body(data)

    def sendfile(self, respiter: Any) -> bool:
        # gunicorn's sendfile() writes the file right after send_headers(), which here only
        # holds them. Declining makes write_file() send the file through write() instead
        # (the API serves no large files).
        return False

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        self._flush_headers()
        super().close()


def install() -> bool:
    """Use ``CoalescingResponse`` for this process's HTTP/1.x responses; False (and nothing
    changed) if gunicorn's ``Response`` lacks the methods it builds on."""
    if not all(hasattr(_Base, name) for name in ("send_headers", "_emit_body", "close")):
        return False
    wsgi.Response = CoalescingResponse
    return True
