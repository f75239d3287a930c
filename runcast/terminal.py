"""Terminal views of a run for `runcast run` / `runcast tail`: a live rich view on a TTY, plain lines otherwise.

Both views take the same `StreamItem`s from the client. The plain view writes streamed text as it arrives and
one bracketed line per structural event (`[tool_call] ...`), so pipes and tests get stable, greppable output. The
live view prints finished parts (text lines, tool cards, agent switches) permanently and keeps only the part still
changing, plus a status line, in a rich `Live` region.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.rule import Rule
from rich.segment import Segment
from rich.text import Text

from runcast.shared.client import ResetEvent, StreamItem

STATUS_OF_TERMINAL = {"complete": "completed", "cancelled": "cancelled", "error": "failed"}


def _data(item: StreamItem) -> dict[str, Any]:
    event = item.event
    if isinstance(event, ResetEvent):
        return {"requested": event.requested, "first_available": event.first_available, "reason": event.reason}
    return event.to_dict()["data"] or {}


def _compact(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def switch_names(data: dict[str, Any]) -> tuple[str, str]:
    """(from, to) of an agent_switch, whatever the producer named the fields."""
    source = data.get("from_agent") or data.get("previous_agent") or data.get("from") or "?"
    target = data.get("to_agent") or data.get("agent_name") or data.get("new_agent") or data.get("to") or "?"
    return str(source), str(target)


def final_status(item: StreamItem) -> str:
    if item.type == "complete":
        return "completed"
    return "cancelled" if _data(item).get("error_type") == "cancelled" else "failed"


@dataclass
class Progress:
    """What the status line shows."""

    run_id: str
    agent: str = ""
    status: str = "connecting"
    events: int = 0
    last_event_id: str | None = None
    reconnects: int = 0
    started: float = 0.0

    def line(self) -> str:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        return (
            f"{self.status} · run {self.run_id[:8]} · agent {self.agent or '?'} · {self.events} events · "
            f"last id {self.last_event_id or '-'} · reconnects {self.reconnects} · {elapsed:.1f}s"
        )


class RunView(Protocol):
    progress: Progress

    def show(self, item: StreamItem) -> None: ...

    def note(self, message: str) -> None: ...

    def close(self) -> None: ...


class PlainView:
    """Plain text for pipes: deltas as they come, one `[type] ...` line per other event; notes go to stderr."""

    def __init__(self, progress: Progress, out: TextIO, err: TextIO, *, as_json: bool = False) -> None:
        self.progress = progress
        self.out = out
        self.err = err
        self.as_json = as_json
        self._mid_line = False

    def _line(self, text: str) -> None:
        if self._mid_line:
            self.out.write("\n")
            self._mid_line = False
        self.out.write(text + "\n")
        self.out.flush()

    def show(self, item: StreamItem) -> None:
        if self.as_json:
            event = _data(item) if isinstance(item.event, ResetEvent) else item.event.to_dict()
            self._line(json.dumps({"id": item.id, "type": item.type, "event": event}, default=str))
            return
        data = _data(item)
        match item.type:
            case "chunk":
                self.out.write(data.get("delta", ""))
                self.out.flush()
                self._mid_line = True
            case "start":
                self._line(f"[start] agent={data.get('agent_name')} model={data.get('model_name')}")
            case "tool_call":
                args = _compact(data.get("arguments"))
                self._line(f"[tool_call] {data.get('tool_name')} {args} ({data.get('call_id')})")
            case "tool_result":
                took = data.get("execution_time_ms")
                timing = f" ({took:.1f} ms)" if isinstance(took, int | float) else ""
                status = data.get("status")
                suffix = "" if status in (None, "completed", "success") else f" [{status}]"
                self._line(f"[tool_result] {data.get('tool_name')} -> {_compact(data.get('result'))}{timing}{suffix}")
            case "agent_switch":
                self._line("[agent_switch] {} -> {}".format(*switch_names(data)))
            case "metadata" if "events_lost" in data:
                lost = data["events_lost"]
                self._line(f"[events_lost] entries after {lost.get('after')} through {lost.get('through')} were lost")
            case "metadata":
                self._line(
                    f"[metadata] agent={data.get('agent_name')} turns={data.get('turn_count')} "
                    f"tokens={data.get('total_tokens')} time_ms={data.get('execution_time_ms')}"
                )
            case "reset":
                self._line(
                    f"[reset] events after {data['requested']} were trimmed; continuing from {data['first_available']}"
                )
            case "error":
                self._line(f"[error] {data.get('error_type')}: {data.get('detail')}")
            case "complete":
                self._line("[complete]")
            case _:
                self._line(f"[{item.type}] {_compact(data)}")

    def note(self, message: str) -> None:
        self.err.write(f"runcast: {message}\n")
        self.err.flush()

    def close(self) -> None:
        if self._mid_line:
            self.out.write("\n")
            self._mid_line = False
        self.out.flush()


class _Tail:
    """Renders a renderable but keeps only its last `max_lines` lines, so the live region never outgrows the screen."""

    def __init__(self, renderable: RenderableType, max_lines: int) -> None:
        self.renderable = renderable
        self.max_lines = max(1, max_lines)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options, pad=False)
        for line in lines[-self.max_lines :]:
            yield from line
            yield Segment.line()


class LiveView:
    """The rich view: finished parts are printed above; the text still streaming and a status line stay live."""

    def __init__(self, progress: Progress, console: Console) -> None:
        self.progress = progress
        self.console = console
        self._text = Text()
        self._text_agent = ""
        self._calls: dict[str, dict[str, Any]] = {}
        self._live = Live(console=console, refresh_per_second=12, transient=True, get_renderable=self._render)
        self._live.start()

    def _render(self) -> RenderableType:
        status_style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(self.progress.status, "cyan")
        status = Text("● ", style=status_style) + Text(self.progress.line(), style="dim")
        pending = [self._tool_card(call, None) for call in self._calls.values()]
        return Group(_Tail(self._text, max(3, self.console.height - 4 - 6 * len(pending))), *pending, status)

    def _print(self, renderable: RenderableType) -> None:
        self._live.console.print(renderable)

    def _flush_text(self) -> None:
        if self._text.plain:
            self._print(self._text)
            self._text = Text()

    @staticmethod
    def _tool_card(call: dict[str, Any], result: dict[str, Any] | None) -> Panel:
        body = Text(f"arguments {_compact(call.get('arguments'), 400)}", style="bold")
        if result is None:
            body.append("\n… running", style="dim")
            border = "yellow"
        else:
            took = result.get("execution_time_ms")
            timing = f"  ({took:.1f} ms)" if isinstance(took, int | float) else ""
            body.append(f"\nresult    {_compact(result.get('result'), 400)}{timing}")
            border = "green" if result.get("status") in (None, "completed", "success") else "red"
        return Panel(body, title=f"tool · {call.get('tool_name')}", title_align="left", border_style=border)

    def show(self, item: StreamItem) -> None:
        data = _data(item)
        match item.type:
            case "chunk":
                self._text.append(data.get("delta", ""))
                head, sep, rest = self._text.plain.rpartition("\n")
                if sep:  # whole lines are final: print them once, keep streaming the rest
                    self._print(Text(head))
                    self._text = Text(rest)
            case "start":
                self._print(Rule(f"{data.get('agent_name')} · {data.get('model_name')}", style="cyan"))
            case "tool_call":
                self._flush_text()
                self._calls[str(data.get("call_id"))] = data
            case "tool_result":
                call = self._calls.pop(str(data.get("call_id")), {"tool_name": data.get("tool_name")})
                self._print(self._tool_card(call, data))
            case "agent_switch":
                self._flush_text()
                self._print(Rule("agent switch: {} → {}".format(*switch_names(data)), style="magenta"))
            case "reset":
                self._flush_text()
                self._print(
                    Text(
                        f"⚠ events after {data['requested']} were trimmed; continuing from {data['first_available']}",
                        style="yellow",
                    )
                )
            case "error":
                self._flush_text()
                self._print(
                    Panel(
                        Text(str(data.get("detail"))),
                        title=f"error · {data.get('error_type')}",
                        border_style="red",
                        title_align="left",
                    )
                )
            case "complete" | "metadata":
                pass
        self._live.refresh()

    def note(self, message: str) -> None:
        self._print(Text(message, style="dim italic"))

    def close(self) -> None:
        self._flush_text()
        for call in self._calls.values():
            self._print(self._tool_card(call, None))
        self._calls.clear()
        self._live.stop()
        status_style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(self.progress.status, "cyan")
        self.console.print(Text("● ", style=status_style) + Text(self.progress.line()))


def make_view(progress: Progress, out: TextIO, err: TextIO, *, as_json: bool = False) -> RunView:
    """The live view when stdout is a terminal, plain text otherwise (or when JSON lines are asked for)."""
    console = Console(file=out)
    if console.is_terminal and not as_json:
        return LiveView(progress, console)
    return PlainView(progress, out, err, as_json=as_json)
