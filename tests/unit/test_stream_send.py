"""Sending to a live-tail client that has started to close ends the session quietly
(``ConnectionClosed``), rather than as an error logged with a traceback."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from simple_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

from api.stream.views import send_messages


@dataclass
class Socket:
    written: list[bytes] = field(default_factory=list)

    def send(self, data: bytes) -> int:
        self.written.append(data)
        return len(data)


@dataclass
class Session:
    """The parts of simple_websocket's ``Server`` that ``send_messages`` uses."""

    ws: WSConnection
    sock: Socket = field(default_factory=Socket)
    connected: bool = True
    close_reason: int = 1000
    close_message: str | None = None


def open_server() -> tuple[WSConnection, WSConnection]:
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    list(client.events())
    return client, server


def test_frames_go_out_in_one_write() -> None:
    _, server = open_server()
    session = Session(server)
    send_messages(session, ["a", "bc"])  # type: ignore[arg-type]
    assert session.sock.written == [b"\x81\x01a\x81\x02bc"]


def test_a_client_that_started_closing_ends_the_session() -> None:
    client, server = open_server()
    server.receive_data(client.send(CloseConnection(code=1000)))
    list(server.events())  # wsproto now refuses to build a message frame
    session = Session(server)
    with pytest.raises(ConnectionClosed):
        send_messages(session, ["late"])  # type: ignore[arg-type]
    assert session.sock.written == []


def test_a_closed_session_sends_nothing() -> None:
    _, server = open_server()
    session = Session(server, connected=False)
    with pytest.raises(ConnectionClosed):
        send_messages(session, ["late"])  # type: ignore[arg-type]
    assert session.sock.written == []
