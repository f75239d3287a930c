"""The public API gives a type checker useful types: a user's script, and README's quick start, pass `mypy --strict`
against runcast as it installs (`py.typed`), `assert_type` pins what the main calls return, and misuse is reported.

mypy cannot follow the editable install of a mapped layout (its finder is an import hook), so the test lays out the
installed shape with symlinks — `runcast/` with `shared`, `worker`, `gateway` inside, from pyproject's
`package-dir` — and points MYPYPATH at it. runcast's own modules are checked as an installed package would be
(`follow_imports = silent`: their types are used, their internals not reported); the user's files strictly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests.support.docs import ROOT, python_blocks

USER_SCRIPT = """
import asyncio
from typing import Any, assert_type

from pydantic import BaseModel

from runcast import (
    Agent, AsyncClient, Client, ResetEvent, RunHandle, RuncastError, StreamingChunk, StreamingEvent,
    StreamingEventType, StreamItem, Tool,
)


class Args(BaseModel):
    text: str


async def shout(args: Args) -> str:
    return args.text.upper()


agent = Agent(name="shouter", instructions="Shout.", tools=(Tool("shout", "Shout it.", Args, shout),))
registry: dict[str, Agent] = {"shouter": agent}


def follow(url: str) -> str:
    text = ""
    with Client(url, api_key=None) as client:
        run = client.create_run("shouter", "hello", metadata={"user": "ada"})
        assert_type(run, RunHandle)
        for item in client.stream(run.run_id, run.token, last_event_id=None):
            assert_type(item, StreamItem)
            assert_type(item.id, str | None)
            assert_type(item.event, StreamingEvent | ResetEvent)
            if isinstance(item.event, StreamingEvent) and isinstance(item.event.data, StreamingChunk):
                assert_type(item.event.type, StreamingEventType)
                text += item.event.data.delta
        assert_type(client.status(run.run_id, run.token), dict[str, Any])
    return text


async def follow_async(url: str) -> list[str | None]:
    try:
        async with AsyncClient(url) as client:
            run = await client.create_run("shouter", "hello")
            return [item.id async for item in client.stream(run.run_id, run.token)]
    except RuncastError as exc:
        assert_type(exc.status_code, int | None)
        return []


print(follow, asyncio.run)
"""

MISUSE = """
from runcast import Client, Tool

with Client("http://127.0.0.1:8000") as client:
    run = client.create_run(42, "hello")
    for item in client.stream(run.run_id, run.token):
        print(item.event.data)
    client.stream(run.run_id)
Tool("t", "a tool", dict, print)
"""


def installed_layout(site: Path) -> None:
    """`site/runcast/...` shaped like the installed wheel, by symlinks into the repository."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    package = site / "runcast"
    package.mkdir(parents=True)
    for entry in (ROOT / mapping["runcast"]).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        if name != "runcast":
            (package / name.removeprefix("runcast.")).symlink_to(ROOT / folder)


@pytest.fixture(scope="module")
def mypy(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("mypy", reason="mypy comes with the dev extras (make venv)")
    home = tmp_path_factory.mktemp("types")
    installed_layout(home / "site")
    config = home / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n\n[mypy-runcast.*]\nfollow_imports = silent\n")

    def check(*sources: str) -> subprocess.CompletedProcess[str]:
        files = []
        for index, source in enumerate(sources):
            files.append(home / f"user_{index}.py")
            files[-1].write_text(textwrap.dedent(source))
        command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(home / "cache")]
        env = {"MYPYPATH": str(home / "site"), "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [*command, *map(str, files)], cwd=home, env=env, capture_output=True, text=True, timeout=300
        )

    return check


def test_a_users_script_type_checks_strictly_with_precise_types(mypy) -> None:
    result = mypy(USER_SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readmes_quick_start_type_checks_strictly(mypy) -> None:
    readme = [block.source for block in python_blocks() if block.doc.name == "README.md" and block.runs]
    assert readme
    result = mypy(*readme)
    assert result.returncode == 0, result.stdout + result.stderr


def test_misusing_the_api_is_reported_where_it_happens(mypy) -> None:
    result = mypy(MISUSE)
    out = result.stdout
    assert result.returncode == 1
    assert 'Argument 1 to "create_run" of "Client" has incompatible type "int"; expected "str"' in out
    assert 'Item "ResetEvent" of "StreamingEvent | ResetEvent" has no attribute "data"' in out
    assert 'Missing positional argument "token" in call to "stream" of "Client"' in out
    assert 'Argument 3 to "Tool" has incompatible type' in out


def test_every_public_name_and_its_public_methods_have_a_docstring() -> None:
    import inspect

    import runcast

    missing = []
    for name in runcast.__all__:
        obj = getattr(runcast, name)
        generated = inspect.isclass(obj) and (obj.__doc__ or "").startswith(f"{obj.__name__}(")  # a dataclass's
        if not (obj.__doc__ or "").strip() or generated:
            missing.append(name)
        for attribute, value in vars(obj).items() if inspect.isclass(obj) else ():
            function = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
            if not attribute.startswith("_") and callable(function) and not (function.__doc__ or "").strip():
                missing.append(f"{name}.{attribute}")
    assert not missing, f"public API without a docstring: {missing}"
