"""The packages, built once per test session by ``make package`` (shared by the
pytest-xdist workers: the first builds under a lock, the others reuse it)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def packages(tmp_path_factory) -> Path:
    """The directory holding the .deb (and the .rpm when rpmbuild is installed)."""
    if not shutil.which("dpkg-buildpackage") or not shutil.which("dh"):
        pytest.skip("dpkg-buildpackage and debhelper are not installed (make deps-system)")
    # This session's directory: under pytest-xdist, the parent of the worker's own.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    out = shared / "packages"
    with open(shared / "packages.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "built").exists():
            done = subprocess.run(["make", "-C", str(ROOT), "package", f"PACKAGE_DIR={out}"],
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            (out / "built").write_text(done.stdout)
    return out


def deb(packages: Path) -> Path:
    (found,) = packages.glob("smtp-appliance_*.deb")
    return found
