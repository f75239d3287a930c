"""Stalled viewers: raw TCP clients that send their request (SSE GET or WebSocket upgrade) and then do not read, with a
small receive buffer, until a test tells one to read what it was sent. Shared by tests/test_stalled_viewers.py and
`bench/stalled.py`.

Parsing is left to libraries: h11 for the HTTP response (chunked body), websockets' sans-I/O client for the WebSocket;
only SSE frames (`id:`/`event:`/`data:` lines) are split here.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

import h11
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

SMALL_RCVBUF = 4096
TERMINAL = ("complete", "error")


@dataclass
class Outcome:
    """What a viewer received: complete events in order (id, type), and how its connection ended: `terminal`
    (it saw the terminal event), `eof`/`reset` (the connection ended without it), `close <code>` (WebSocket)."""

    events: list[tuple[str, str]] = field(default_factory=list)
    ended: str = ""
    status: int | None = None

    @property
    def last_id(self) -> str | None:
        return self.events[-1][0] if self.events else None


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """(id, event type) of every complete SSE frame with data in `body` (a frame cut off at the end is left out)."""
    events = []
    frames = body.decode(errors="replace").split("\n\n")
    for frame in frames[:-1]:  # the last piece is unterminated (or empty)
        fields: dict[str, str] = {}
        for line in frame.split("\n"):
            name, sep, value = line.partition(":")
            if sep and name:
                fields.setdefault(name, value.removeprefix(" "))
        if "data" in fields and "id" in fields:
            events.append((fields["id"], fields.get("event", "message")))
    return events


class StalledViewer:
    """One viewer connection that does not read until `read_all` is called."""

    def __init__(
        self,
        host: str,
        port: int,
        run_id: str,
        token: str,
        *,
        websocket: bool = False,
        last_event_id: str | None = None,
        rcvbuf: int = SMALL_RCVBUF,
    ) -> None:
        self.host, self.port, self.websocket = host, port, websocket
        self.run_id, self.token = run_id, token
        params = {"token": token}
        if last_event_id is not None:
            params["last_event_id"] = last_event_id
        self.path = f"/v1/runs/{run_id}/{'ws' if websocket else 'events'}?{urlencode(params)}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the TCP window
        self._ws: ClientProtocol | None = None
        self._http: h11.Connection | None = None

    def open(self) -> StalledViewer:
        self.sock.connect((self.host, self.port))
        if self.websocket:
            self._ws = ClientProtocol(parse_uri(f"ws://{self.host}:{self.port}{self.path}"), max_size=None)
            self._ws.send_request(self._ws.connect())
            self.sock.sendall(b"".join(self._ws.data_to_send()))
        else:
            self._http = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method="GET", target=self.path, headers=[("Host", self.host), ("Accept", "text/event-stream")]
            )
            self.sock.sendall(self._http.send(request) + self._http.send(h11.EndOfMessage()))
        return self

    def close(self) -> None:
        self.sock.close()

    def read_all(self, timeout_s: float = 60.0) -> Outcome:
        """Read until the terminal event, the end of the connection, or `timeout_s` (then `ended` is 'timeout')."""
        self.sock.settimeout(1.0)
        deadline = time.monotonic() + timeout_s
        outcome = Outcome()
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                outcome.ended = "timeout"
                break
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionError:
                outcome.ended = "reset"
                break
            if self.websocket:
                if self._read_ws(data, outcome):
                    break
            elif self._read_sse(data, body, outcome):
                break
        if not self.websocket:
            outcome.events = sse_events(bytes(body))
            if outcome.events and outcome.events[-1][1] in TERMINAL:
                outcome.ended = "terminal"
        self.close()
        return outcome

    def _read_sse(self, data: bytes, body: bytearray, outcome: Outcome) -> bool:
        http = self._http
        assert http is not None
        http.receive_data(data)
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError:  # the connection ended inside the body
                outcome.ended = "eof"
                return True
            if event is h11.NEED_DATA:
                if not data:
                    outcome.ended = "eof"
                    return True
                return False
            if isinstance(event, h11.Response):
                outcome.status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                outcome.ended = "eof"
                return True

    def _read_ws(self, data: bytes, outcome: Outcome) -> bool:
        ws = self._ws
        assert ws is not None
        if data:
            ws.receive_data(data)
        else:
            ws.receive_eof()
        for event in ws.events_received():
            if isinstance(event, Response):
                outcome.status = event.status_code
            elif event.opcode is Opcode.TEXT:
                message = json.loads(event.data)
                outcome.events.append((message["id"], message["event"]["type"]))
            elif event.opcode is Opcode.CLOSE:
                code = ws.close_rcvd.code if ws.close_rcvd is not None else 1005
                outcome.ended = "terminal" if outcome.events and outcome.events[-1][1] in TERMINAL else f"close {code}"
                return True
        if not data:
            outcome.ended = "eof"
            return True
        return False


def open_stalled(base_url: str, run_id: str, token: str, count: int, *, websocket: bool = False) -> list[StalledViewer]:
    host, _, port = base_url.removeprefix("http://").partition(":")
    return [StalledViewer(host, int(port), run_id, token, websocket=websocket).open() for _ in range(count)]
