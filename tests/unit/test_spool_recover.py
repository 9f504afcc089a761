"""Start-up recovery with two processes on one spool: it removes what a dead writer
left, never what a running one is writing (each file is locked while in flight)."""

import os
import subprocess
import sys
import time
from pathlib import Path

from appliance.spool import RECOVER_GRACE, Spool

# A second process commits one message and stops between the two renames (the .msg
# in queue/, the .json still in tmp/), as a worker preempted mid-commit would, until
# it reads a line on stdin.
WRITER = r"""
import os, sys
from appliance.mail.headers import Headers
from appliance.mail.message import Message, MessageReader
from appliance.spool import Spool

spool = Spool(sys.argv[1])
reader = MessageReader(sys.argv[1], 10**6, 65536)
reader.feed(b"Subject: in flight\r\n\r\nbody\r\n")
reader.finish()
real_rename, renames = os.rename, []

def rename(src, dst):
    real_rename(src, dst)
    renames.append(dst)
    if len(renames) == 1:
        print("paused", flush=True)
        sys.stdin.readline()

os.rename = rename
spool.commit("INFLIGHT", Message(reader.headers, reader.body), {"recipients": []})
print("committed", flush=True)
"""


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_recover_leaves_another_process_in_flight_files(tmp_path):
    spool = Spool(tmp_path / "s")
    spool.prepare()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(spool.directory)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "paused\n"
        in_flight = [spool.queue / "INFLIGHT.msg", spool.tmp / "INFLIGHT.json"]
        assert all(p.exists() for p in in_flight)
        for p in in_flight:  # old enough: only the lock protects them
            age(p, RECOVER_GRACE * 2)
        # what a dead writer left: unlocked and old
        (spool.tmp / "DEAD.msg").write_bytes(b"partial")
        (spool.queue / "DEAD2.msg").write_bytes(b"no envelope")
        for name in (spool.tmp / "DEAD.msg", spool.queue / "DEAD2.msg"):
            age(name, RECOVER_GRACE * 2)
        removed = spool.recover()
        assert sorted(Path(p).name for p in removed) == ["DEAD.msg", "DEAD2.msg"]
        assert all(p.exists() for p in in_flight)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "committed\n"
        assert writer.wait(30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert spool.ids() == ["INFLIGHT"]
    assert spool.get("INFLIGHT").message_path.read_bytes().endswith(b"body\r\n")


def test_recover_leaves_young_unlocked_files(tmp_path):
    """A file just created, not yet locked by its writer, is not removed."""
    spool = Spool(tmp_path / "s")
    spool.prepare()
    (spool.tmp / "NEW.msg").write_bytes(b"just created")
    assert spool.recover() == []
    assert spool.recover(grace=0) == [str(spool.tmp / "NEW.msg")]
