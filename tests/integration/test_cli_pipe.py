"""``smtp-appliance queue list | head`` and such through the real command and a real
pipe: when the reader goes away the command stops quietly with status 141 (what a
shell reports for a command killed by SIGPIPE), no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("smtp-appliance"))
BROKEN_PIPE = 141


def _config(tmp_path: Path) -> Path:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "00-test.toml").write_text(f'[queue]\ndirectory = "{tmp_path / "spool"}"\n')
    return conf


def _fill_queue(spool: Path, messages: int, recipients: int) -> None:
    """Queued messages in the spool layout (docs/spool.md), long lines in the listing."""
    queue = spool / "queue"
    queue.mkdir(parents=True)
    for i in range(messages):
        qid = f"{i:013X}ABCDEF0"
        (queue / f"{qid}.msg").write_bytes(b"Subject: x\r\n\r\nx\r\n")
        (queue / f"{qid}.json").write_text(json.dumps({
            "mail_from": {"address": "sender@example.org", "params": {}},
            "recipients": [{"address": f"rcpt{n}@example.net"} for n in range(recipients)],
            "received_at": "2024-01-01T00:00:00Z", "size": 17}))


def test_queue_list_into_a_reader_that_stops_after_one_line(tmp_path):
    conf = _config(tmp_path)
    _fill_queue(tmp_path / "spool", messages=40, recipients=400)  # ~0.8 MB listed
    proc = subprocess.Popen([CLI, "queue", "list", "--config-dir", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # like head -1
    err = proc.stderr.read()
    assert proc.wait(60) == BROKEN_PIPE
    assert first.startswith(b"0000000000000ABCDEF0 ")
    assert err == b""


@pytest.mark.parametrize("command", [["check-config"], ["plugins"], ["queue", "count"]])
def test_output_into_a_pipe_already_closed(tmp_path, command):
    conf = _config(tmp_path)
    (tmp_path / "spool" / "queue").mkdir(parents=True)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([CLI, *command, "--config-dir", str(conf)],
                            stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    os.close(read_end)  # gone before the command writes its first line
    err = proc.stderr.read()
    assert proc.wait(60) == BROKEN_PIPE
    assert err == b""


def test_queue_list_whole_output_still_exits_0(tmp_path):
    conf = _config(tmp_path)
    _fill_queue(tmp_path / "spool", messages=3, recipients=2)
    done = subprocess.run([CLI, "queue", "list", "--config-dir", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "-- 3 message(s)"
