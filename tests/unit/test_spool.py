"""The spool's commit protocol and recovery, on a real filesystem."""

import json
import os

import pytest

from appliance.mail.headers import Headers
from appliance.mail.message import SPILL_THRESHOLD, Message, MessageReader
from appliance.spool import Spool, new_queue_id


def message(tmp_path, body: bytes) -> Message:
    r = MessageReader(str(tmp_path), 10**8, 65536)
    for i in range(0, len(body), 4096):
        r.feed(body[i:i + 4096])
    r.finish()
    return Message(r.headers, r.body)


@pytest.mark.parametrize("size", [10, SPILL_THRESHOLD * 3])  # in memory, spilled to a file
def test_commit_whole_message_and_envelope(tmp_path, size):
    spool = Spool(tmp_path / "s")
    spool.prepare()
    raw = b"Subject: s\r\n\r\n" + (b"a" * 78 + b"\r\n") * (size // 80 + 1)
    qid = new_queue_id()
    path = spool.commit(qid, message(spool.tmp, raw), {"queue_id": qid})
    assert path.read_bytes() == raw
    env = json.loads((spool.queue / f"{qid}.json").read_text())
    assert env["size"] == len(raw)
    assert spool.ids() == [qid] and spool.count() == 1
    assert os.listdir(spool.tmp) == []


def test_a_staged_body_is_moved_into_the_queue_not_copied(tmp_path):
    spool = Spool(tmp_path / "s")
    spool.prepare()
    raw = b"Subject: s\r\n\r\n" + (b"a" * 78 + b"\r\n") * (4 * 1024 * 1024 // 80)
    m = message(spool.tmp, raw)
    staged = os.dup(m.body._file.fileno())  # watch the staging file's blocks
    try:
        assert os.fstat(staged).st_blocks * 512 > len(raw) // 2
        path = spool.commit(new_queue_id(), m, {})
        assert path.read_bytes() == raw
        # every whole block given back as it moved (punched out; a partial block at
        # each end may stay): the disk held the body once, plus one chunk in flight
        assert os.fstat(staged).st_blocks * 512 <= 2 * os.fstatvfs(staged).f_bsize
    finally:
        os.close(staged)
    with pytest.raises(ValueError, match="moved"):
        m.open_body()


def test_failed_commit_leaves_nothing(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "s")
    spool.prepare()
    qid = new_queue_id()
    real_rename = os.rename
    calls = []

    def failing_rename(a, b):  # fail the second rename: the commit mark
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_rename(a, b)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError):
        spool.commit(qid, message(spool.tmp, b"S: x\r\n\r\nb\r\n"), {})
    assert os.listdir(spool.queue) == [] and os.listdir(spool.tmp) == []


def test_group_commit_one_failure_fails_alone(tmp_path, monkeypatch):
    """In a group, a message that cannot be staged (disk full) gets its error and
    leaves no file; the others are committed with one directory fsync."""
    spool = Spool(tmp_path / "s")
    spool.prepare()
    ids = [new_queue_id() for _ in range(3)]
    real_open, real_fsync = open, os.fsync
    dir_fsyncs = []

    def full_for_second(path, *args, **kw):
        if str(path).endswith(f"{ids[1]}.json"):
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kw)

    def counting_fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            dir_fsyncs.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr("builtins.open", full_for_second)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    results = spool.commit_many(
        [(qid, message(spool.tmp, b"S: x\r\n\r\nb\r\n"), {"queue_id": qid}) for qid in ids])
    assert results[0] == spool.queue / f"{ids[0]}.msg"
    assert isinstance(results[1], OSError) and results[1].errno == 28
    assert results[2] == spool.queue / f"{ids[2]}.msg"
    assert spool.ids() == sorted([ids[0], ids[2]])
    assert os.listdir(spool.tmp) == []
    assert len(dir_fsyncs) == 1


def test_recover_removes_uncommitted(tmp_path):
    spool = Spool(tmp_path / "s")
    spool.prepare()
    (spool.tmp / "X.msg").write_bytes(b"partial")
    (spool.queue / "ORPHAN.msg").write_bytes(b"no envelope")
    (spool.queue / "OK.msg").write_bytes(b"m")
    (spool.queue / "OK.json").write_text("{}")
    removed = spool.recover(grace=0)
    assert len(removed) == 2
    assert sorted(os.listdir(spool.queue)) == ["OK.json", "OK.msg"]


def test_queue_ids_sort_by_time_and_are_unique():
    ids = [new_queue_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    times = [i[:13] for i in ids]
    assert times == sorted(times)  # arrival order, to the microsecond
    assert all(len(i) == 20 and i.isalnum() for i in ids)


def test_reader_limits(tmp_path):
    r = MessageReader(str(tmp_path), 100, 50)
    r.feed(b"Subject: " + b"x" * 60 + b"\r\n")
    assert r.error is not None and r.error.code == 552
    r = MessageReader(str(tmp_path), 30, 1000)
    assert r.feed(b"S: 1\r\n\r\n") is not None
    r.feed(b"y" * 30)
    assert r.error.code == 552 and r.error.enhanced == "5.3.4"
    r = MessageReader(str(tmp_path), 1000, 1000)
    assert r.feed(b"\r\nno headers\r\n") is not None and len(r.headers) == 0
    assert Message(r.headers, r.body).as_bytes() == b"\r\nno headers\r\n"
    assert isinstance(r.headers, Headers)
