"""What a test needs from the machine (redis-server, nginx, chromium, node, ...): skipped with the install hint on a
developer's machine that lacks it, a failure under CI=true, where `.ci/run` must have installed it — CI never skips a
test for a missing tool."""

from __future__ import annotations

import os

import pytest

from tests.support.redis_server import redis_server_available

ON_CI = os.environ.get("CI") == "true"

NEEDS_REDIS_SERVER = "needs a real redis-server (apt-get install -y redis-server; .ci/run installs it)"


def require(available: bool, missing: str) -> None:
    """Skip (off CI) or fail (CI=true) the calling test when `available` is false; `missing` says what and how."""
    if available:
        return
    if ON_CI:
        pytest.fail(f"CI=true: this test {missing}, which the machine lacks; .ci/run must install it", pytrace=False)
    pytest.skip(missing)


def require_redis_server() -> None:
    require(redis_server_available(), NEEDS_REDIS_SERVER)


real_redis_server = pytest.mark.skipif(not redis_server_available() and not ON_CI, reason=NEEDS_REDIS_SERVER)
"""A module or test mark: skipped off CI without redis-server; under CI=true it runs (and its fixtures fail loudly)."""
