"""Sampling profiles of a worker process during a benchmark cell (py-spy), summarised as the top functions.

`py-spy record --format raw` writes collapsed stacks (`frame;frame;... count`, root first); `summarize` turns
them into the functions where samples were taken (self) and the ones most often on the stack (inclusive).
py-spy is optional (`pip install py-spy`): without it `--profile` is skipped with a notice.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:)]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Recorder:
    """`py-spy record --gil` (samples holding the GIL: the process working, not waiting) on one pid until `stop()`."""

    def __init__(self, pid: int, path: Path, rate: int = 250) -> None:
        binary = py_spy()
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        if binary is None:
            return
        args = [binary, "record", "--pid", str(pid), "--rate", str(rate), "--gil", "--format", "raw", "-o", str(path)]
        self.proc = subprocess.Popen([*args, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> Path | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return self.path if self.path.exists() else None


def _name(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (package/file.py)`: lines dropped, so a function is one entry."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    short = file.split("site-packages/", 1)[1] if "site-packages/" in file else "/".join(Path(file).parts[-2:])
    return f"{match['func']} ({short})"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self samples and by inclusive samples (each function counted once per stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame) for frame in stack.split(";") if frame and not frame.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    share = lambda c: round(100 * c / max(total, 1), 1)  # noqa: E731
    return {
        "samples": total,
        "self": [(name, share(c)) for name, c in own.most_common(top)],
        "inclusive": [(name, share(c)) for name, c in inclusive.most_common(top * 2)],
    }
