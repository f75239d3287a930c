"""The optional-extra check every framework adapter's tests make: runcast imports without the framework, and the
adapter's `from_x(...)` names the extra to install."""

from __future__ import annotations

import subprocess
import sys

_CODE = """
import sys
sys.modules[{module!r}] = None  # as if the framework were not installed
import runcast
from runcast import Agent, Client, RunnableAgent, publisher, {factory}
import runcast.worker.settings, runcast.worker.job, runcast.gateway.app
assert all(getattr(runcast, name) is not None for name in runcast.__all__)
try:
    {factory}({arguments})
except runcast.MissingExtra as exc:
    print(exc)
"""


def check_runcast_imports_without(module: str, factory: str, arguments: str, *, framework: str, package: str,
                                  extra: str) -> None:  # fmt: skip
    """In a fresh interpreter where `module` cannot be imported: `import runcast` and every public name work, and
    `runcast.<factory>(<arguments>)` raises `MissingExtra` whose message names the package and the extra."""
    code = _CODE.format(module=module, factory=factory, arguments=arguments)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"runcast's {framework} adapter needs {package}, which is not installed" in result.stdout, result.stdout
    assert f"pip install 'runcast[{extra}]'" in result.stdout, result.stdout
