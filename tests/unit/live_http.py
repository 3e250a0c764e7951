"""A real HTTP server (uvicorn on 127.0.0.1, an ephemeral port) for an ASGI app, and a raw chunked
client that counts the bytes it sends: what serving tests use to show a limit holds on the wire."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@contextmanager
def live_server(app: ASGIApp) -> Iterator[tuple[str, int]]:
    """(host, port) of `app` served by uvicorn in a thread, until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
        assert thread.is_alive(), "uvicorn exited while starting"
        time.sleep(0.02)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield host, port
    finally:
        server.should_exit = True
        thread.join(timeout=20)


class BodyCounter:
    """ASGI middleware counting the request-body bytes the app actually read (`received`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting() -> Message:
            message = await receive()
            self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


@dataclass
class ChunkedResult:
    status: int
    sent: int  # body bytes the client got onto the socket before the answer came
    head: bytes  # status line and headers of the answer


def post_chunked(address: tuple[str, int], path: str, total: int, headers: dict[str, str] | None = None,
                 chunk: int = 64 * 1024) -> ChunkedResult:
    """POST `total` bytes of `x` with Transfer-Encoding: chunked, stopping as soon as the server answers."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {address[0]}", "Content-Type: application/json", "Transfer-Encoding: chunked"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    framed = f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n"
    sent = 0
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answered = selectors.DefaultSelector()  # epoll: select() fails on descriptors >= 1024 in a long session
        answered.register(sock, selectors.EVENT_READ)
        while sent < total:
            if answered.select(timeout=0):
                break
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):  # the server stopped reading
                break
            sent += chunk
        answered.close()
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                break
            head += data
    return ChunkedResult(int(head.split(b" ", 2)[1]), sent, head)
