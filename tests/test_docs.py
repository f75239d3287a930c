"""README.md and docs/*.md are executable: their code runs, their commands, settings, paths and links exist.

The convention, for everyone who writes docs:

1. A ```python block is a program a reader can paste and run. The test runs each block alone, in a fresh `python`
   process of the project's venv, in a scratch folder of its doc file, and it must exit 0. Write whole scripts:
   imports included, `asyncio.run(main())` rather than a top-level `await`; an `assert` shows what the reader should
   see. (`ruff format`, run by `make lint`, formats these blocks too.)
2. `http://127.0.0.1:8000` is the gateway. A block that names it runs against a real `runcast gateway` and
   `runcast worker` on a test Redis, one pair per doc file, with the URL replaced by theirs; `redis://127.0.0.1:6379/0`
   is replaced by that Redis. The built-in agents (`echo`, `demo`, `triage`) are there, driven offline by the
   scripted model.
3. Blocks share setup through files: a block whose first line is `# name.py ...` is also the file `name.py` in the
   doc's scratch folder, written before any block of that doc runs, so other blocks can `import name`. When such a
   block assigns a top-level `registry`, the doc's worker runs with `RUNCAST_AGENTS=name:registry` (several: merged),
   exactly as a user would start it, and every agent in it is run to `complete` through the gateway.
4. A ```python block that cannot run alone (a fragment, a real model endpoint, the network) gets the line
   `<!-- docs-test: skip (why) -->` right before it. The reason is required; skipped blocks are reported as skipped
   tests with their reason, and `test_skipped_blocks_are_few_and_explained` lists them. Code that only illustrates
   uses another fence: ```text, ```bash, ```js, ```html.
5. The rest is checked cheaply (tests/test_docs_references.py): a `runcast ...` line in any block names a real
   subcommand and options; `make X` a Makefile target; `python -m X --opt` a module that accepts `--opt`; every
   `RUNCAST_*` name is a setting (or a variable of the CLI, compose or the tests) and every setting is documented;
   every repository path, `runcast.*` name and test name in backticks exists; every relative link and #anchor
   resolves; each doc has one `#` title, then an intro paragraph, and headings that go down one level at a time.
6. docs/http-api.md's endpoint reference is generated from the app's OpenAPI (`make docs`); tests/test_openapi_doc.py
   fails when it is out of date.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from runcast import Client
from tests.support.docs import (
    ROOT,
    Block,
    all_markers,
    parse,
    python_blocks,
    run_python,
    script_for,
)
from tests.support.processes import GatewayProcess, WorkerProcess, start_all
from tests.support.requirements import require_redis_server

# ---------------------------------------------------------------------------------------------------------- running


class DocSandbox:
    """A doc file's scratch folder (its module blocks written as files) and, on first need, its gateway + worker."""

    def __init__(self, doc: Path, folder: Path, redis_url: str | None) -> None:
        self.doc = doc
        self.folder = folder
        self.redis_url = redis_url
        self.procs: tuple[GatewayProcess, WorkerProcess] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        blocks = [block for block in parse(doc)[0] if block.runs]
        self.modules = {block.module: block for block in blocks if block.module}
        for name, block in self.modules.items():
            (folder / f"{name}.py").write_text(block.source)
        self.registries = [name for name, block in self.modules.items() if block.defines_registry]

    def agents_setting(self) -> str | None:
        """RUNCAST_AGENTS for this doc's worker: its one registry as documented, several merged, else the default."""
        if len(self.registries) <= 1:
            return f"{self.registries[0]}:registry" if self.registries else None
        merged = "\n".join(f"import {name}" for name in self.registries)
        merged += "\nregistry = {" + ", ".join(f"**{name}.registry" for name in self.registries) + "}\n"
        (self.folder / "_docs_registry.py").write_text(merged)
        return "_docs_registry:registry"

    def gateway_url(self) -> str:
        if self.procs is None:
            if self.redis_url is None:
                require_redis_server()
            Redis.from_url(self.redis_url).flushdb()
            env = {"RUNCAST_SCRIPTED_DELAY_MS": "5"}
            agents = self.agents_setting()
            worker = WorkerProcess(self.redis_url, **env, **({"RUNCAST_AGENTS": agents} if agents else {}))
            # As a user starts it: the `runcast` console script, in the folder that holds the agents' module.
            worker.args, worker.cwd = [str(Path(sys.executable).with_name("runcast")), "worker"], self.folder
            procs = (GatewayProcess(self.redis_url, **env), worker)
            start_all(*procs)
            self.procs = procs
        return self.procs[0].url

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        url = self.gateway_url() if block.needs_gateway else None
        script = self.folder / f"block_{block.line}.py"
        script.write_text(script_for(block, url, self.redis_url if url else None))
        env = {name: value for name, value in os.environ.items() if not name.startswith("RUNCAST_")}
        return run_python(script, self.folder, env)

    def close(self) -> None:
        for proc in self.procs or ():
            proc.stop()


class Sandboxes:
    """One sandbox per doc file, made on first use; each doc's gateway and worker get a Redis database of their own
    (their own agents list and job queue)."""

    def __init__(self, root: Path, redis_url: str | None) -> None:
        self.root = root
        self.redis_url = redis_url
        self.made: dict[Path, DocSandbox] = {}

    def __getitem__(self, doc: Path) -> DocSandbox:
        if doc not in self.made:
            url = None
            if self.redis_url is not None:
                url = re.sub(r"/\d*$", "", self.redis_url) + f"/{1 + len(self.made) % 15}"
            self.made[doc] = DocSandbox(doc, self.root / doc.stem, url)
        return self.made[doc]

    def close(self) -> None:
        for sandbox in self.made.values():
            sandbox.close()


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory: pytest.TempPathFactory, redis_url: str | None) -> Iterator[Sandboxes]:
    made = Sandboxes(tmp_path_factory.mktemp("docs"), redis_url)
    yield made
    made.close()


@pytest.mark.parametrize("block", python_blocks(), ids=lambda block: block.id)
def test_python_block_runs(block: Block, sandboxes: Sandboxes) -> None:
    if block.skip is not None:
        pytest.skip(f"docs-test: skip ({block.skip})")
    result = sandboxes[block.doc].run(block)
    assert result.returncode == 0, (
        f"{block.id} failed (exit {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )


def registry_blocks() -> list[Block]:
    return [block for block in python_blocks() if block.runs and block.module and block.defines_registry]


@pytest.mark.parametrize("block", registry_blocks(), ids=lambda block: block.id)
def test_documented_registry_loads_and_each_agent_runs_to_complete(block: Block, sandboxes: Sandboxes) -> None:
    sandbox = sandboxes[block.doc]
    check = sandbox.folder / "_check_registry.py"
    check.write_text(
        "import json\nfrom runcast.worker.agents import load_registry\n"
        f"print(json.dumps(sorted(load_registry('{block.module}:registry'))))\n"
    )
    loaded = run_python(check, sandbox.folder, dict(os.environ))
    assert loaded.returncode == 0, f"load_registry('{block.module}:registry') failed:\n{loaded.stderr[-3000:]}"
    names = json.loads(loaded.stdout)
    assert names, f"{block.id}: the registry is empty"
    with Client(sandbox.gateway_url()) as client:
        for name in names:
            run = client.create_run(name, "What is 6 * 7?")
            types = [item.type for item in client.stream(run.run_id, run.token)]
            assert types[0] == "start" and types[-1] == "complete", f"agent {name!r} of {block.id}: {types}"


# ----------------------------------------------------------------------------------------------------- the markers


def test_every_marker_is_a_skip_with_a_reason_right_before_a_python_block() -> None:
    python_lines = {(block.doc, block.line) for block in python_blocks()}
    bad = []
    for marker in all_markers():
        where = f"{marker.doc.relative_to(ROOT)}:{marker.line}"
        if not re.fullmatch(r"skip\s*\(\s*\S.*\)", marker.body):
            bad.append(f"{where}: '{marker.body}' is not 'skip (reason)'")
        elif not marker.before_fence or (marker.doc, marker.line + 1) not in python_lines:
            bad.append(f"{where}: a skip marker must sit on the line right before a ```python block")
    assert not bad, "\n".join(bad)


def test_the_parser_honours_skip_markers_and_names_module_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "sample.md"
    doc.write_text(
        "# Sample\n\nIntro.\n\n"
        "<!-- docs-test: skip (needs a model endpoint) -->\n```python\nimport nowhere\n```\n\n"
        "```python\n# mymod.py — imported by the next block\nregistry = {}\n```\n\n"
        "<!-- docs-test: skip () -->\n```python\nprint(1)\n```\n\n"
        "<!-- docs-test: skip (a marker before a paragraph applies to nothing) -->\n\ntext\n\n"
        "```bash\nrunsome --thing\n```\n"
    )
    blocks, markers = parse(doc)
    assert [(b.lang, b.skip, b.module, b.runs) for b in blocks] == [
        ("python", "needs a model endpoint", None, False),
        ("python", None, "mymod", True),
        ("python", None, None, True),  # an empty reason does not skip (and the marker test flags it)
        ("bash", None, None, False),
    ]
    assert blocks[1].defines_registry and not blocks[0].needs_gateway
    assert [m.before_fence for m in markers] == [True, True, False]


def test_skipped_blocks_are_few_and_explained() -> None:
    blocks = python_blocks()
    skipped = [block for block in blocks if block.skip is not None]
    print(f"\n{len(blocks)} python blocks in README/docs: {len(blocks) - len(skipped)} run, {len(skipped)} skipped")
    for block in skipped:
        print(f"  skipped {block.id}: {block.skip}")
    assert all(block.skip for block in skipped)
    assert len(skipped) * 4 <= len(blocks), "most python blocks in the docs must run"


def test_readme_quick_start_runs() -> None:
    """The quick start defines an agent module and follows one of its runs through a gateway: both are run above."""
    readme = [block for block in python_blocks() if block.doc.name == "README.md"]
    assert any(block.runs and block.defines_registry and block.module for block in readme)
    assert any(block.runs and block.needs_gateway for block in readme)
