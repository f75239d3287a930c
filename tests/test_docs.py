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
5. The rest is checked cheaply: a `runcast ...` line in any block names a real subcommand and options; `make X` a
   Makefile target; `python -m X --opt` a module that accepts `--opt`; every `RUNCAST_*` name is a setting (or a
   variable of the CLI, compose or the tests) and every setting is documented; every repository path and `runcast.*`
   name in backticks exists; every relative link and #anchor resolves; each doc has one `#` title and an intro.
6. docs/http-api.md's endpoint reference is generated from the app's OpenAPI (`make docs`); tests/test_openapi_doc.py
   fails when it is out of date.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from redis import Redis

from runcast import Client
from runcast.cli import build_parser
from runcast.shared.settings import Settings
from tests.support.docs import (
    ROOT,
    Block,
    all_blocks,
    all_markers,
    doc_files,
    doc_text,
    parse,
    python_blocks,
    run_python,
    script_for,
)
from tests.support.processes import GatewayProcess, WorkerProcess, start_all
from tools.openapi_doc import anchor

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
                pytest.skip("needs a real redis-server for the doc's gateway and worker (CI installs it)")
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


# ---------------------------------------------------------------------------------------------- commands in blocks


def command_lines() -> Iterator[tuple[Block, list[str]]]:
    """Each simple command in a non-Python block, as words (env assignments, `$ ` and `[`/`]` of usage lines gone)."""
    for block in all_blocks():
        if block.lang in ("python", "py", "js", "html", "json", "yaml"):
            continue
        for line in block.source.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line.removeprefix("$ "))  # comments (not `#` inside a word)
            for command in re.split(r"&&|\|\||;|\|", line):
                try:
                    words = shlex.split(command.replace("[", " ").replace("]", " "))
                except ValueError:
                    continue
                while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                    words = words[1:]
                if words and words[0] == "export":
                    continue
                if words:
                    yield block, words


def options_of(parser: object) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}  # type: ignore[attr-defined]


def test_runcast_command_lines_name_real_subcommands_and_options() -> None:
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices  # type: ignore[union-attr]
    bad, seen = [], 0
    for block, words in command_lines():
        if Path(words[0]).name != "runcast":
            continue
        seen += 1
        sub = words[1] if len(words) > 1 else ""
        if sub not in commands:
            bad.append(f"{block.id}: `runcast {sub}` is not a command ({', '.join(commands)})")
            continue
        unknown = [
            w.split("=")[0] for w in words[2:] if w.startswith("-") and w.split("=")[0] not in options_of(commands[sub])
        ]
        bad += [f"{block.id}: `runcast {sub}` has no option {option}" for option in unknown]
    assert seen, "the docs show no runcast command at all?"
    assert not bad, "\n".join(bad)


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


@cache
def module_help(module: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"python -m {module} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


def test_make_targets_and_python_modules_in_blocks_exist() -> None:
    bad = []
    for block, words in command_lines():
        if words[0] == "make":
            bad += [f"{block.id}: no make target {w}" for w in words[1:] if "=" not in w and w not in make_targets()]
        elif Path(words[0]).name.startswith("python") and len(words) > 2 and words[1] == "-m":
            module = words[2]
            if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
                bad.append(f"{block.id}: no module {module}")
                continue
            options = [w.split("=")[0] for w in words[3:] if w.startswith("--")]
            if options and module not in ("pytest",):
                text = module_help(module)
                bad += [f"{block.id}: `python -m {module}` has no option {o}" for o in options if o not in text]
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------------------- settings, paths, links


def documented_variables() -> set[str]:
    return set(re.findall(r"\bRUNCAST_[A-Z0-9_]*[A-Z0-9]\b", doc_text()))


def settings_variables() -> set[str]:
    return {f"RUNCAST_{name.upper()}" for name in Settings.model_fields}


def other_variables() -> set[str]:
    """Variables read outside Settings: the CLI's, docker compose's, the tests'."""
    sources = ["runcast/cli.py", "docker-compose.yml", "tests/conftest.py", "Makefile"]
    return {name for source in sources for name in re.findall(r"RUNCAST_[A-Z0-9_]+", (ROOT / source).read_text())}


def test_every_documented_variable_exists() -> None:
    unknown = documented_variables() - settings_variables() - other_variables()
    assert not unknown, f"the docs name variables runcast does not read: {sorted(unknown)}"


def test_every_setting_is_documented() -> None:
    missing = settings_variables() - documented_variables()
    assert not missing, f"settings the docs never mention (add them to docs/deployment.md): {sorted(missing)}"


PATH_LIKE = re.compile(r"^[\w.-]+(/[\w.*-]+)*/?$")
FILE_EXTENSIONS = (".py", ".conf", ".yml", ".yaml", ".js", ".html", ".css", ".toml", ".md", ".png", ".sh")


def tracked_files() -> list[str]:
    command = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]  # new files count before their commit
    listed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return listed.split()


def code_spans(doc: Path) -> Iterator[str]:
    for token in MarkdownIt("commonmark").parse(doc.read_text()):
        for child in token.children or ():
            if child.type == "code_inline":
                yield child.content


def test_every_repository_path_in_backticks_exists() -> None:
    files = tracked_files() + [str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md")]
    names = {Path(name).name for name in files} | {f"{block.module}.py" for block in python_blocks() if block.module}
    bad = []
    for doc in doc_files():
        for span in code_spans(doc):
            if not PATH_LIKE.match(span) or span.startswith(("runcast.", "http")):
                continue
            if "/" in span:
                if span.endswith("/"):
                    found = (ROOT / span).is_dir()
                else:
                    found = any(Path(name).match(span) for name in files)
                if not found and (span.endswith(FILE_EXTENSIONS) or span.endswith("/")):
                    bad.append(f"{doc.name}: `{span}`")
            elif span.endswith(FILE_EXTENSIONS) and not span.startswith(".") and span not in names:
                if not any(Path(name).match(span) for name in files):
                    bad.append(f"{doc.name}: `{span}`")
    assert not bad, "paths that do not exist in the repository:\n" + "\n".join(bad)


def test_every_test_named_in_backticks_exists() -> None:
    defined = set(
        re.findall(r"def (test_\w+)", "".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py")))
    )
    bad = [
        f"{doc.name}: `{span}`"
        for doc in doc_files()
        for span in code_spans(doc)
        if re.fullmatch(r"test_\w+", span) and span not in defined
    ]
    assert not bad, "tests the docs cite that do not exist:\n" + "\n".join(bad)


def resolves(dotted: str) -> bool:
    """`runcast.a.b` (a module) or `runcast.a.b.Name` (a name in a module), or `module:attr`."""
    module, _, attr = dotted.partition(":")
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            found = None
        if found is None:
            continue
        value: object = importlib.import_module(name)
        for part in [*parts[cut:], *([attr] if attr else [])]:
            if not hasattr(value, part):
                return False
            value = getattr(value, part)
        return True
    return False


def test_every_runcast_name_in_backticks_resolves() -> None:
    bad = []
    for doc in doc_files():
        for span in code_spans(doc):
            match = re.fullmatch(r"(runcast(\.\w+)+(:\w+)?)(\(.*\))?", span)
            if match and not span.endswith(FILE_EXTENSIONS) and not resolves(match[1]):
                bad.append(f"{doc.name}: `{span}`")
    assert not bad, "names that do not exist:\n" + "\n".join(bad)


def anchors(doc: Path) -> set[str]:
    tokens = MarkdownIt("commonmark").parse(doc.read_text())
    return {anchor(tokens[i + 1].content) for i, token in enumerate(tokens) if token.type == "heading_open"}


def test_every_relative_link_and_anchor_resolves() -> None:
    bad = []
    for doc in doc_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            if not linked.exists():
                bad.append(f"{doc.name}: link to {target}: no such file")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                bad.append(f"{doc.name}: link to {target}: no heading #{fragment} in {linked.name}")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------------------------- structure


def test_each_doc_has_one_title_then_an_intro_and_no_skipped_heading_level() -> None:
    bad = []
    for doc in doc_files():
        tokens = MarkdownIt("commonmark").parse(doc.read_text())
        levels = [int(token.tag[1]) for token in tokens if token.type == "heading_open"]
        if levels[:1] != [1] or levels.count(1) != 1:
            bad.append(f"{doc.name}: needs exactly one `#` title, first")
        if any(later > earlier + 1 for earlier, later in itertools.pairwise(levels)):
            bad.append(f"{doc.name}: a heading skips a level ({levels})")
        first_after_title = next((t.type for t in tokens[3:] if not t.type.startswith("html")), None)
        if first_after_title != "paragraph_open":
            bad.append(f"{doc.name}: the title must be followed by an intro paragraph")
    assert not bad, "\n".join(bad)


def test_readme_is_short_and_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    unlinked = [doc.name for doc in (ROOT / "docs").glob("*.md") if f"(docs/{doc.name})" not in readme]
    assert not unlinked, f"README's table of docs misses {unlinked}"
