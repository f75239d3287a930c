"""runcast installs as one namespace, `runcast.*`, and lives beside an application's own `shared`, `worker` and
`gateway` packages: the wheel is built, installed into a fresh venv next to such an app, and both are imported in one
process; the console script starts the demo and the gateway from that venv."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import sysconfig
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import Process, runcast_env

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"runcast": "runcast", "shared": "runcast.shared", "worker": "runcast.worker", "gateway": "runcast.gateway"}


def _source_packages() -> set[str]:
    """Every package in the repository's top-level folders, by the name it installs under."""
    found = set()
    for folder, installed in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([installed, *relative]))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("runcast-*.whl"))


def test_wheel_holds_every_package_under_the_runcast_namespace_only(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"runcast"}, f"the wheel installs other top-level names: {top_level}"
    packaged = {name.rsplit("/", 1)[0].replace("/", ".") for name in names if name.endswith("/__init__.py")}
    assert packaged == _source_packages(), "pyproject's package list and the source folders disagree"
    assert "runcast/py.typed" in names
    assert {"runcast/gateway/static/index.html", "runcast/gateway/static/runcast.js"} <= set(names)


def test_code_imports_runcast_names_only():
    """`import shared` would work inside the repository (its root is on sys.path) and load a second copy of a module
    under another name; only `runcast.*` names exist once installed."""
    bare = re.compile(r"^\s*(from|import) (shared|worker|gateway)\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in (*FOLDERS, "tests", "bench", "tools")
        for path in (ROOT / folder).rglob("*.py")
        if path != Path(__file__).resolve() and bare.search(path.read_text())  # (this file's app imports its own)
    ]
    assert not offenders


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed. Its dependencies come from this test run's environment through a
    plain path entry (not the dev install: that one's editable finder lives in a .pth a path entry does not run)."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    python = home / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    return home


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's backend with the generic package names runcast must not take."""
    app = tmp_path_factory.mktemp("app")
    for name in ("shared", "worker", "gateway"):
        (app / name).mkdir()
        (app / name / "__init__.py").write_text(f"OWNER = 'the app\\'s own {name}'\n")
    return app


def run_in(venv: Path, cwd: Path, code: str) -> str:
    result = subprocess.run(
        [venv / "bin" / "python", "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_an_app_with_its_own_shared_worker_gateway_imports_runcast_beside_them(venv: Path, app_dir: Path):
    out = run_in(
        venv,
        app_dir,
        """
        import gateway, shared, worker
        from runcast import Agent, AsyncClient, Client, StreamingEvent, Tool
        from runcast.gateway.app import create_app
        from runcast.worker.agents import default_registry
        import runcast
        print(shared.OWNER, worker.OWNER, gateway.OWNER, sep="\\n")
        print(runcast.__file__)
        print(sorted(default_registry), create_app.__module__, Client.__module__, AsyncClient.__name__)
        """,
    )
    lines = out.splitlines()
    assert lines[:3] == ["the app's own shared", "the app's own worker", "the app's own gateway"]
    assert lines[3].startswith(str(venv)), f"runcast was imported from {lines[3]}, not the installed wheel"
    assert lines[4] == "['chat', 'demo', 'echo', 'triage'] runcast.gateway.app runcast.shared.sync_client AsyncClient"


def test_public_api_resolves_and_the_gateway_never_loads_the_worker(venv: Path, app_dir: Path):
    out = run_in(
        venv,
        app_dir,
        """
        import sys
        import runcast.gateway.app
        print(sorted(name for name in sys.modules if name.startswith("runcast.worker")))
        import runcast
        print([name for name in runcast.__all__ if getattr(runcast, name, None) is None])
        """,
    )
    assert out.splitlines() == ["[]", "[]"]


def test_console_script_help_from_the_venv(venv: Path, app_dir: Path):
    result = subprocess.run([venv / "bin" / "runcast", "--help"], cwd=app_dir, capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("demo", "gateway", "worker", "run", "tail"):
        assert command in result.stdout


@contextlib.contextmanager
def serving(venv: Path, app_dir: Path, args: list[str], env: dict[str, str]) -> Iterator[str]:
    """`runcast <args>` from the venv's console script, run in the app's folder; yields its URL once ready."""
    port = free_port()
    proc = Process([str(venv / "bin" / "runcast"), *args, "--port", str(port)], env, cwd=app_dir).start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            assert proc.alive(), proc.log()
            assert time.monotonic() < deadline, f"not ready:\n{proc.log()}"
            time.sleep(0.1)
        yield url
    finally:
        proc.stop()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_runcast_demo_starts_from_the_venv_and_streams(venv: Path, app_dir: Path):
    env = {"PATH": "", "RUNCAST_REDIS_URL": "redis://127.0.0.1:1/0", "RUNCAST_SCRIPTED_DELAY_MS": "1"}
    with serving(venv, app_dir, ["demo"], env) as url:
        run = httpx.post(f"{url}/v1/runs", json={"agent": "echo", "input": "from the wheel"}).json()
        text = httpx.get(f"{run['events_url']}?token={run['token']}", timeout=10).text
        assert "event: complete" in text and "wheel" in text


def test_runcast_gateway_starts_from_the_venv(venv: Path, app_dir: Path, real_redis_url: str):
    with serving(venv, app_dir, ["gateway"], runcast_env(real_redis_url)) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "runcast gateway"
