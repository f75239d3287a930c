"""docker-compose.yml and the load balancer config, checked with Debian's `docker-compose config` (no engine needed):
the file is valid, refuses to start without RUNCAST_SECRET, and has the shape the README promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.requirements import require

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


@pytest.fixture(scope="module")
def compose_bin() -> str:
    binary = shutil.which("docker-compose")
    require(binary is not None, "needs docker-compose (apt-get install -y docker-compose)")
    assert binary is not None
    return binary


def compose(binary: str, *args: str, secret: str | None = "s3cret-for-config-check") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCAST_")}
    if secret is not None:
        env["RUNCAST_SECRET"] = secret
    return subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def config(compose_bin: str) -> dict[str, Any]:
    done = compose(compose_bin, "config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def services_running(config: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    return {
        name: service for name, service in config["services"].items() if command_of(service)[:2] == ["runcast", role]
    }


def test_compose_file_is_valid(compose_bin: str):
    done = compose(compose_bin, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_compose_refuses_to_start_without_a_shared_secret(compose_bin: str):
    done = compose(compose_bin, "config", "-q", secret=None)
    assert done.returncode != 0
    assert "RUNCAST_SECRET" in done.stderr and "set RUNCAST_SECRET" in done.stderr


def test_two_gateways_and_two_workers_share_redis_and_one_secret(config: dict[str, Any]):
    gateways = services_running(config, "gateway")
    workers = services_running(config, "worker")
    assert len(gateways) == 2 and len(workers) == 2
    for service in [*gateways.values(), *workers.values()]:
        env = service["environment"]
        assert env["RUNCAST_SECRET"] == "s3cret-for-config-check"
        assert env["RUNCAST_REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / "deploy" / "Dockerfile").is_file()
    for service in gateways.values():
        assert "/readyz" in " ".join(service["healthcheck"]["test"])


def test_redis_keeps_an_append_only_file(config: dict[str, Any]):
    redis = config["services"]["redis"]
    command = command_of(redis)
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") or "/data" in str(volume) for volume in redis["volumes"])
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])


def test_load_balancer_fronts_every_gateway_and_waits_for_them_to_be_ready(config: dict[str, Any]):
    lb = config["services"]["lb"]
    assert any("nginx.conf" in str(volume) for volume in lb["volumes"])
    assert set(lb["depends_on"]) == set(services_running(config, "gateway"))
    assert all(dep["condition"] == "service_healthy" for dep in lb["depends_on"].values())
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):8000\b", NGINX_CONF.read_text(), re.MULTILINE)
    assert sorted(upstreams) == sorted(services_running(config, "gateway"))


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.endswith(";"):
            name, _, value = line[:-1].partition(" ")
            found.setdefault(name, []).append(value.strip())
    return found


def test_load_balancer_streams_sse_unbuffered_with_long_timeouts_and_upgrades_websockets():
    conf = directives(NGINX_CONF.read_text())
    assert conf["proxy_buffering"] == ["off"]
    assert conf["proxy_cache"] == ["off"]
    assert conf["proxy_http_version"] == ["1.1"]
    assert conf["proxy_read_timeout"] == ["1h"] and conf["proxy_send_timeout"] == ["1h"]
    headers = dict(value.split(None, 1) for value in conf["proxy_set_header"])
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert "$request " not in NGINX_CONF.read_text() + " ", "access logs must not carry ?token= (log $uri)"
