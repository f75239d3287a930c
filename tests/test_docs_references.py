"""What the docs name exists: `runcast` commands and options, make targets and modules in code blocks, settings
(both ways), repository paths, `runcast.*` names and test names in backticks, relative links and anchors; and each
doc's shape. Part of the docs convention written at the top of tests/test_docs.py."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from markdown_it import MarkdownIt

from runcast.cli import build_parser
from runcast.shared.settings import Settings
from tests.support.docs import ROOT, Block, all_blocks, doc_files, doc_text, python_blocks
from tools.openapi_doc import anchor

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
