"""A loopback TCP proxy that can cut every open connection: a server-side disconnect as a client really sees it."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.ports import free_port


class SeveringProxy:
    """Forwards 127.0.0.1:<port> to `target_port`; `sever()` closes all open connections from the server side.

    `requests` keeps the first bytes each connection sent (the HTTP request head), so a test can see what a client
    asked for when it reconnected (e.g. its `Last-Event-ID`).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.requests: list[bytes] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> SeveringProxy:
        await self.up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.down()

    async def up(self) -> None:
        """Listen (again) on the same port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def down(self) -> None:
        """Cut every connection and stop listening: new connections are refused, like a gateway that is down."""
        if self._server is not None:
            self._server.close()
            self.sever()
            await self._server.wait_closed()
            self._server = None

    def pause(self) -> None:
        """Hold every byte clients send (connections stay open; answers to what already got through still arrive):
        a stalled network as the server sees it. Whatever a client sends meanwhile reaches the server on `resume()`."""
        self._flowing.clear()

    def resume(self) -> None:
        """Deliver what was held, in order, and flow again."""
        self._flowing.set()

    def sever(self) -> None:
        """Close every open connection, both legs, as a crashing server or a broken network would."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, upstream_writer}
        index = len(self.requests)
        self.requests.append(b"")

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    if record and len(self.requests[index]) < 4096:
                        self.requests[index] += data
                    if record:  # client -> server
                        await self._flowing.wait()
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        await asyncio.gather(pipe(client_reader, upstream_writer, True), pipe(upstream_reader, client_writer, False))
        self._writers -= {client_writer, upstream_writer}
