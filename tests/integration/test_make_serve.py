"""``make serve`` and ``make check-config`` run from an environment with only the
product and the example plugin: the test-only fixture plugins are installed by
``make test`` alone, so they never show in an admin's ``plugins``, ``check-config``
or error messages. Read from the Makefile's own recipes (``make -n -B``: printed,
not run), and from the serve environment itself when it exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not shutil.which("make"), reason="needs make")


def recipes(target: str) -> list[str]:
    done = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), target],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.replace("\\\n", " ").splitlines()  # one line per command


def venv_of(lines: list[str], command: str) -> str:
    """The virtualenv whose ``bin/`` runs ``smtp-appliance COMMAND``."""
    [line] = [x for x in lines if f"/bin/smtp-appliance {command}" in x]
    return re.search(r"(\S+)/bin/smtp-appliance", line).group(1)


@pytest.mark.parametrize("target, command", [("serve", "serve"),
                                             ("check-config", "check-config")])
def test_the_admin_targets_install_no_fixture_plugin(target, command):
    lines = recipes(target)
    venv = venv_of(lines, command)
    installs = [x for x in lines if f"{venv}/bin/python -m pip install" in x]
    assert installs, lines  # the product is installed into that environment...
    assert any("examples/sender-blocklist" in x for x in installs)
    # ...and the fixture plugins never are, whether or not `make test` ran before
    assert not any("fixture_plugins" in x for x in installs)
    test_installs = [x for x in recipes("test") if f"{venv}/bin/python -m pip" in x]
    assert not any("fixture_plugins" in x for x in test_installs)


def test_the_serve_environment_lists_no_test_plugin():
    venv = venv_of(recipes("serve"), "serve")
    binary = ROOT / venv / "bin" / "smtp-appliance"
    if not binary.exists():
        pytest.skip(f"{venv} not built here (make serve builds it)")
    listed = subprocess.run([str(binary), "plugins", "--config-dir", str(ROOT / "conf.d")],
                            capture_output=True, text=True, timeout=60)
    assert "sender-blocklist" in listed.stdout
    assert not re.search(r"\btest-", listed.stdout), listed.stdout
