"""Local delivery into Maildirs (docs/delivery.md, "Maildir"), and the quota a
mailbox has.

A recipient's Maildir is ``DIRECTORY/domain/local-part/Maildir``; its ``folder``
(from the recipients file or a rule; INBOX by default) is a Maildir++ folder
inside it (``Archive`` is ``.Archive``, ``Lists/pg`` is ``.Lists.pg``). A message
is written under ``tmp/``, fsynced, then moved to ``new/`` and ``new/`` fsynced, as
the Maildir convention describes: a reader never sees a partial message.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from appliance.config.delivery import Delivery, NextHop
from appliance.delivery.routing import route
from appliance.delivery.transport import Reply
from appliance.spool import fsync_dir

_counter = itertools.count()


def maildir_of(hop: NextHop, address: str, folder: str = "INBOX") -> Path:
    local, _, domain = address.rpartition("@")
    root = Path(hop.directory) / _safe(domain.lower() or "localhost") / _safe(local.lower())
    root = root / "Maildir"
    if folder.upper() == "INBOX" or not folder:
        return root
    return root / ("." + ".".join(_safe(part) for part in folder.split("/") if part))


def _safe(name: str) -> str:
    """A path component that cannot leave its directory."""
    cleaned = name.replace("/", "_").replace("\0", "_")
    return "_" + cleaned if cleaned in ("", ".", "..") or cleaned.startswith(".") else cleaned


def usage(hop: NextHop, address: str) -> int:
    """Octets in the recipient's mailbox, every folder counted."""
    root = maildir_of(hop, address)
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) in ("cur", "new"):
            for name in files:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except OSError:
                    continue
    return total


def is_overquota(config: Delivery, address: str, relay_host: str = "") -> bool:
    """Is the recipient's local mailbox full: at or over its next hop's ``quota``?
    False for a recipient not delivered to a Maildir or without a quota."""
    found = route(config, address, relay_host)
    if found is None or found[1].protocol != "maildir" or not found[1].quota:
        return False
    return usage(found[1], address) >= found[1].quota


def deliver(hop: NextHop, address: str, folder: str, message_path: Path,
            fsync: bool = True) -> Reply:
    """Write one copy of the message into the recipient's folder. Blocking."""
    maildir = maildir_of(hop, address, folder)
    try:
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        name = _unique_name()
        tmp = maildir / "tmp" / name
        with open(message_path, "rb") as src, open(tmp, "xb") as out:
            while chunk := src.read(1024 * 1024):
                out.write(chunk.replace(b"\r\n", b"\n"))  # Maildir files have LF ends
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        final = maildir / "new" / f"{name},S={tmp.stat().st_size}"
        os.link(tmp, final)  # never overwrites: the name is unique
        tmp.unlink()
        if fsync:
            fsync_dir(maildir / "new")
    except OSError as exc:
        return Reply(451, "4.3.0", f"cannot write to {maildir}: {exc.strerror or exc}")
    return Reply(250, "2.0.0", f"delivered to maildir {final.name}")


def _unique_name() -> str:
    """The Maildir unique name: time, microseconds, pid, a counter, the host."""
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{host}"

