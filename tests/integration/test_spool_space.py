"""A large message needs its size in free space once, not twice: the body staged in
the spool's tmp/ is moved into queue/ as it is stored, not copied beside it
(docs/spool.md). Measured through the real server on a small tmpfs holding the
whole spool, with room for one copy of a 10 MiB message but not two."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Appliance

MIB = 1024 * 1024


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 16 MiB tmpfs (root only: skipped where mounting is not allowed)."""
    mnt = tmp_path / "spool"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_10_mib_message_fits_on_a_disk_with_room_for_one_copy(tmp_path, small_tmpfs):
    body = (b"x" * 76 + b"\r\n") * (10 * MIB // 78)
    msg = b"Subject: big\r\n\r\n" + body
    assert 10 * MIB - 100 < len(msg) and 2 * len(msg) > 16 * MIB  # two copies cannot fit
    app = Appliance(tmp_path / "app", '[limits]\nmax_message_size = "20 MiB"\n',
                    {"mta": {}}, None)
    (app.config_dir / "60-spool.toml").write_text(
        f'[queue]\ndirectory = "{small_tmpfs}"\n')
    app.spool = Path(small_tmpfs)
    app.start()
    try:
        with smtplib.SMTP("127.0.0.1", app.port, timeout=60) as c:
            assert c.sendmail("a@example.org", ["b@example.net"], msg) == {}
    finally:
        app.stop()
    [env] = app.queued()
    stored = env.with_suffix(".msg").read_bytes()
    assert stored.endswith(body) and b"Subject: big\r\n" in stored
    assert list((Path(small_tmpfs) / "tmp").iterdir()) == []
