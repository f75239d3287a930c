"""README.md and docs/*.md as the docs test sees them: their code blocks, skip markers, and what each block needs.

The convention itself is written once, at the top of tests/test_docs.py.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED_URL = "http://127.0.0.1:8000"
"""The gateway address the docs use; the test puts its own gateway's address in its place."""
DOCUMENTED_REDIS = "redis://127.0.0.1:6379/0"
"""The Redis of that gateway and its worker, for blocks that read a run's stream directly (never the machine's)."""

PYTHON_FENCES = {"python", "py"}
MARKER = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->", re.DOTALL)
SKIP = re.compile(r"^\s*skip\s*\((?P<reason>[^)]*\S[^)]*)\)\s*$")
MODULE_LINE = re.compile(r"^#\s*(?P<name>[A-Za-z_]\w*)\.py\b")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""

    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    source: str
    skip: str | None  # the reason given by a skip marker right before the block

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in PYTHON_FENCES and self.skip is None

    @property
    def module(self) -> str | None:
        """`name` when the block's first line is a comment `# name.py ...`: the block is that file, and the other
        blocks of its doc can import it."""
        match = MODULE_LINE.match(self.source)
        return match["name"] if match else None

    @property
    def defines_registry(self) -> bool:
        """The block assigns a top-level `registry` (a mapping name → Agent a worker can load)."""
        for node in ast.parse(self.source).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "registry" for t in targets):
                return True
        return False

    @property
    def needs_gateway(self) -> bool:
        return DOCUMENTED_URL in self.source or DOCUMENTED_REDIS in self.source


@dataclass(frozen=True)
class Marker:
    doc: Path
    line: int
    body: str
    before_fence: bool


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@cache
def parse(doc: Path) -> tuple[tuple[Block, ...], tuple[Marker, ...]]:
    """The doc's fenced blocks and its `docs-test:` markers (a marker applies to the fence right after it)."""
    tokens = MarkdownIt("commonmark").parse(doc.read_text())
    blocks: list[Block] = []
    markers: list[Marker] = []
    for index, token in enumerate(tokens):
        if token.type == "html_block" and (match := MARKER.search(token.content)):
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            before_fence = following is not None and following.type == "fence"
            markers.append(Marker(doc, token.map[0] + 1 if token.map else 0, match["body"].strip(), before_fence))
        elif token.type == "fence":
            skip = None
            if markers and markers[-1].before_fence and index > 0 and tokens[index - 1].type == "html_block":
                found = SKIP.match(markers[-1].body)
                skip = found["reason"].strip() if found else None
            lang = token.info.split()[0] if token.info.strip() else ""
            blocks.append(Block(doc, token.map[0] + 1 if token.map else 0, lang, token.content, skip))
    return tuple(blocks), tuple(markers)


def all_blocks() -> list[Block]:
    return [block for doc in doc_files() for block in parse(doc)[0]]


def all_markers() -> list[Marker]:
    return [marker for doc in doc_files() for marker in parse(doc)[1]]


def python_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.lang in PYTHON_FENCES]


def doc_text() -> str:
    return "\n".join(doc.read_text() for doc in doc_files())


def script_for(block: Block, gateway_url: str | None = None, redis_url: str | None = None) -> str:
    """The block's source with the documented addresses replaced by the test's own."""
    source = block.source
    if gateway_url is not None:
        source = source.replace(DOCUMENTED_URL, gateway_url)
        source = source.replace(DOCUMENTED_URL.replace("http", "ws", 1), gateway_url.replace("http", "ws", 1))
    if redis_url is not None:
        source = source.replace(DOCUMENTED_REDIS, redis_url)
    return source


def run_python(script: Path, cwd: Path, env: dict[str, str], timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run a script with this test run's interpreter (the project's venv), in `cwd`."""
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
