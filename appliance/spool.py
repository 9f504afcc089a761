"""The on-disk spool: durable hand-off of accepted messages (see docs/spool.md).

Layout under the queue directory::

    tmp/             staging (spilled bodies, files being committed)
    queue/ID.msg     the message as received, our Received field on top
    queue/ID.json    the envelope; its presence is the commit mark
    queue/ID.state   the delivery state: one JSON object a line, appended and fsynced

Commit: write ID.msg and ID.json in tmp/, fsync both, rename the .msg then the
.json into queue/, fsync queue/. A crash at any instant leaves either both files
in queue/ (committed: the client may have had its 250) or no .json (never
acknowledged: removed by :meth:`Spool.recover`). Nothing here imports gevent;
the server runs :meth:`Spool.commit` in a thread so fsync blocks no session.

Several processes share one spool (the server's workers, the delivery service, a
second server started by mistake): a writer holds an exclusive ``flock`` on each
file from its creation until it is renamed into place, and :meth:`Spool.recover`
removes only files whose lock is free and which are older than a grace period (the
grace covers the instant between a file's creation and its lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attrs import frozen

from appliance.mail.message import Message

#: Raised when a field changes meaning; 2: ``checks`` holds one object per check and
#: the client's reverse name moved there (``checks["reverse-dns"].name``).
FORMAT_VERSION = 2

#: Seconds a file must be older than before :meth:`Spool.recover` may remove it.
RECOVER_GRACE = 60.0


def new_queue_id() -> str:
    """Sortable by arrival time, unique across processes: 13 hex digits of
    microseconds since the epoch, then 7 random hex digits."""
    return f"{time.time_ns() // 1000:013X}{secrets.token_hex(4)[:7].upper()}"


@frozen
class QueuedMessage:
    queue_id: str
    envelope: dict[str, Any]
    message_path: Path
    size: int


class Spool:
    def __init__(self, directory: str | os.PathLike[str], fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.tmp = self.directory / "tmp"
        self.queue = self.directory / "queue"
        self.fsync = fsync

    def prepare(self) -> None:
        """Create the directories; fail early (at startup) if we cannot write."""
        for d in (self.directory, self.tmp, self.queue):
            d.mkdir(parents=True, exist_ok=True)
        probe = self.tmp / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()

    def recover(self, grace: float = RECOVER_GRACE) -> list[str]:
        """Remove what a crashed writer left half-done (files in tmp/, a queue/ .msg
        without its .json); returns the names removed. A file another running process
        is still writing is locked by it, and left alone."""
        orphans = [p for pattern in ("*.msg", "*.state") for p in self.queue.glob(pattern)
                   if not p.with_suffix(".json").exists()]
        removed = []
        for p in [*self.tmp.iterdir(), *orphans]:
            if _remove_if_abandoned(p, time.time() - grace):
                removed.append(str(p))
        return removed

    # --- writing -----------------------------------------------------------------

    def commit(self, queue_id: str, message: Message, envelope: dict[str, Any]) -> Path:
        """Store one message durably; raises OSError, leaving nothing in queue/."""
        result = self.commit_many([(queue_id, message, envelope)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def commit_many(self, batch: list[tuple[str, Message, dict[str, Any]]]
                    ) -> list[Path | OSError]:
        """Group commit: write and fsync every message of the batch, rename them
        into queue/, fsync queue/ once. Blocking. One result per message: its path,
        or the OSError that kept it out (nothing of it is left behind)."""
        staged: list[tuple[Path, Path, Path, Path]] = []
        results: list[Path | OSError] = []
        locks: list[Any] = []  # the staged files, open and locked until renamed
        try:
            for queue_id, message, envelope in batch:
                names = (self.tmp / f"{queue_id}.msg", self.tmp / f"{queue_id}.json",
                         self.queue / f"{queue_id}.msg", self.queue / f"{queue_id}.json")
                try:
                    self._stage(names[0], names[1], message, envelope, locks)
                except OSError as exc:
                    _unlink_quietly(names[0])
                    _unlink_quietly(names[1])
                    results.append(exc)
                    continue
                staged.append(names)
                results.append(names[2])
            try:
                for msg_tmp, env_tmp, msg_final, env_final in staged:
                    os.rename(msg_tmp, msg_final)
                    os.rename(env_tmp, env_final)
                if staged and self.fsync:
                    fsync_dir(self.queue)
            except OSError as exc:
                for names in staged:
                    for p in (names[3], names[2], names[1], names[0]):
                        _unlink_quietly(p)
                return [r if isinstance(r, OSError) else exc for r in results]
            return results
        finally:
            for f in locks:
                f.close()

    def _stage(self, msg_tmp: Path, env_tmp: Path, message: Message,
               envelope: dict[str, Any], locks: list[Any]) -> None:
        out = locked_create(msg_tmp, locks)
        message.move_to(out)  # a staged body moves: its size once on disk, not twice
        out.flush()
        size = out.tell()
        if self.fsync:
            os.fsync(out.fileno())
        out = locked_create(env_tmp, locks)
        out.write(json.dumps({**envelope, "size": size}, separators=(",", ":")).encode())
        out.flush()
        if self.fsync:
            os.fsync(out.fileno())

    # --- reading (the queue CLI, next stages) --------------------------------------

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.queue.glob("*.json"))

    def count(self) -> int:
        return sum(1 for _ in self.queue.glob("*.json"))

    def get(self, queue_id: str) -> QueuedMessage:
        if not _valid_id(queue_id):
            raise KeyError(queue_id)
        env_path = self.queue / f"{queue_id}.json"
        try:
            envelope = json.loads(env_path.read_bytes())
        except FileNotFoundError:
            raise KeyError(queue_id) from None
        msg_path = self.queue / f"{queue_id}.msg"
        return QueuedMessage(queue_id, envelope, msg_path, envelope.get("size", 0))

    def __iter__(self) -> Iterator[QueuedMessage]:
        for qid in self.ids():
            try:
                yield self.get(qid)
            except KeyError:  # deleted meanwhile
                continue

    def delete(self, queue_id: str) -> None:
        """Remove a message: the envelope first, so it is never half-visible."""
        if not _valid_id(queue_id) or not (self.queue / f"{queue_id}.json").exists():
            raise KeyError(queue_id)
        (self.queue / f"{queue_id}.json").unlink()
        _unlink_quietly(self.queue / f"{queue_id}.msg")
        _unlink_quietly(self.queue / f"{queue_id}.state")
        if self.fsync:
            fsync_dir(self.queue)

    # --- delivery state (appliance/delivery/state.py reads it) ----------------------

    def state_path(self, queue_id: str) -> Path:
        return self.queue / f"{queue_id}.state"

    def append_state(self, queue_id: str, records: list[dict[str, Any]]) -> None:
        """Append records to the message's state file and make them durable (the
        file, and the directory when the file is new) before returning."""
        if not _valid_id(queue_id) or not (self.queue / f"{queue_id}.json").exists():
            raise KeyError(queue_id)
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        path = self.state_path(queue_id)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            end = os.fstat(fd).st_size
            if end and os.pread(fd, 1, end - 1) != b"\n":
                data = b"\n" + data  # after a line a crash cut short: a line of its own
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if created and self.fsync:
            fsync_dir(self.queue)

    def read_state(self, queue_id: str) -> list[dict[str, Any]]:
        """The records of the state file; a last line torn by a crash is ignored."""
        try:
            data = self.state_path(queue_id).read_bytes()
        except FileNotFoundError:
            return []
        records = []
        for line in data.split(b"\n"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


def locked_create(path: Path, locks: list[Any]) -> Any:
    """Create ``path`` (it must not exist) and lock it for as long as it stays open;
    the open file is appended to ``locks`` for the caller to close."""
    out = open(path, "xb")  # noqa: SIM115 - closed by the caller, after the rename
    locks.append(out)
    fcntl.flock(out.fileno(), fcntl.LOCK_EX)
    return out


def _remove_if_abandoned(path: Path, older_than: float) -> bool:
    """Unlink ``path`` if no process holds its lock and it was last changed before
    ``older_than`` (a time); False when it is in use, young or gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_mtime >= older_than:
            return False
        path.unlink()
        return True
    except OSError:  # locked by a running writer, or removed meanwhile
        return False
    finally:
        os.close(fd)


def _valid_id(queue_id: str) -> bool:
    return queue_id.isalnum() and 0 < len(queue_id) <= 64


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def envelope(session: Any, transaction: Any) -> dict[str, Any]:
    """The envelope JSON of an accepted message (docs/spool.md)."""
    tx, s = transaction, session
    return {
        "version": FORMAT_VERSION,
        "queue_id": tx.queue_id,
        "session_id": s.session_id,
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "listener": {"name": s.listener, "ip": s.local_ip, "port": s.local_port},
        "client": {
            "ip": s.remote_ip,
            "port": s.remote_port,
            "helo": s.helo_name,
            "esmtp": s.esmtp,
            "auth_user": s.auth_user or None,
            "tls": s.tls.as_dict() if s.tls else None,
        },
        "mail_from": {
            "address": tx.mail_from,
            "params": {k: v for k, v in tx.mail_params.items()},
        },
        "recipients": [r.as_dict() for r in tx.recipients],
        "dsn": {
            "ret": tx.mail_params.get("RET"),
            "envid": tx.mail_params.get("ENVID"),
        },
        "delay_until": tx.delay_until.isoformat() if tx.delay_until else None,
        "quarantine": tx.quarantine_reason,
        # What every check found, by its name (the session's, then the message's),
        # and the method results as written in the Authentication-Results field.
        "checks": {
            **s.checks.as_dict(),
            **tx.checks.as_dict(),
            "results": [r.render() for r in (*s.auth_results, *tx.auth_results)],
        },
        "trace": [e.as_dict() for e in tx.trace],
    }
