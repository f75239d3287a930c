"""docs/frameworks.md's Python examples run as written (offline), each in a fresh interpreter; a block marked
`<!-- docs-test: skip (reason) -->` is only compiled."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "frameworks.md"
BLOCK = re.compile(r"(?P<marker><!-- docs-test: skip \([^)]*\) -->\n)?```python\n(?P<code>.*?)```", re.DOTALL)
BLOCKS = [(m["code"], m["marker"] is not None) for m in BLOCK.finditer(DOC.read_text())]


def test_the_doc_has_examples_and_every_skip_says_why():
    assert len(BLOCKS) >= 3
    assert "<!-- docs-test: skip -->" not in DOC.read_text()


@pytest.mark.parametrize(("code", "skipped"), BLOCKS, ids=[f"block{n}" for n in range(len(BLOCKS))])
def test_a_python_example_runs_as_written(code: str, skipped: bool, tmp_path: Path):
    compile(code, str(DOC), "exec")
    if skipped:
        return
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
