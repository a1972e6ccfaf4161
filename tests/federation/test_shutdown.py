"""Stopping a server while a client request waits on a server that never answers.

The drain after SIGTERM lets requests in flight finish; one stuck on another
homeserver must not hold it (nor be cut off without an answer): outbound
federation ends first, and the client gets a Matrix error.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess, http, launch_server


class Blackhole:
    def __init__(self) -> None:
        self.port = 0
        self.connected = threading.Event()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    """A TCP port that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()
    hole = Blackhole()
    hole.port = sock.getsockname()[1]

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)
            hole.connected.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield hole
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        sock.close()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    proc = launch_server("sqlite", None, {"federation_ip_range_blocklist": []})
    try:
        yield proc
    finally:
        proc.stop()


def test_sigterm_answers_a_request_stuck_on_a_silent_server(
        server: ServerProcess, blackhole: Blackhole) -> None:
    status, body = http("POST", server.url("/_matrix/client/v3/register"),
                        {"username": "waiter", "password": "pw-waiter-1",
                         "auth": {"type": "m.login.dummy"}})
    assert status == 200, body
    token = body["access_token"]
    answer: dict[str, Any] = {}

    def ask_remote_profile() -> None:
        answer["reply"] = http(
            "GET", server.url(f"/_matrix/client/v3/profile/@someone:127.0.0.1:{blackhole.port}"),
            token=token, timeout=60)

    asker = threading.Thread(target=ask_remote_profile)
    asker.start()
    assert blackhole.connected.wait(30), "the server never called the remote"
    code = server.stop()
    asker.join(30)
    assert code == 0
    status, body = answer["reply"]
    assert status >= 500 and isinstance(body, dict) and "errcode" in body, (status, body)
