"""Logging: one structured line per event worth an admin's attention.

Every session line carries ``session=ID``. Text lines are ``event key=value …``;
with ``logging.format = "json"`` each line is one JSON object with the same keys.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from typing import Any

log = logging.getLogger("smtp_appliance")

_FACILITIES = logging.handlers.SysLogHandler.facility_names

#: How many times one refusal (same command, code and enhanced code) is logged per
#: session; the rest are counted in one ``replies_not_logged`` line at disconnect.
LOGGED_REPEATS = 10


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\\r\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        msg = record.getMessage()
        if fields:
            msg = msg + " " + " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        line = f"{self.formatTime(record)} {record.levelname.lower()} {msg}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(config: Any) -> None:
    """Configure the root of our loggers from the [logging] table."""
    if config.destination == "syslog":
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=_FACILITIES.get(config.syslog_facility, 2 << 3))
    elif config.destination == "file":
        handler = logging.handlers.WatchedFileHandler(config.file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if config.format == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(config.level.upper())
    log.propagate = False


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, name, extra={"fields": fields})


class SessionLog:
    """Log lines of one session, each with its id."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        #: refusals per (command, code, enhanced code): past LOGGED_REPEATS the
        #: same refusal is only counted, and summed up at disconnect
        self._refusals: dict[tuple[str, int, str], list] = {}

    def event(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        if log.isEnabledFor(level):
            log.log(level, name, extra={"fields": {"session": self.session_id, **fields}})

    def exception(self, name: str, **fields: Any) -> None:
        log.error(name, exc_info=True, extra={"fields": {"session": self.session_id, **fields}})

    def connect(self, ctx: Any) -> None:
        self.event("connect", listener=ctx.listener, client=f"[{ctx.remote_ip}]:{ctx.remote_port}",
                   server=f"[{ctx.local_ip}]:{ctx.local_port}")

    def proxied(self, arrival: Any) -> None:
        """Which load balancer relayed the connection, and what its header said."""
        header = arrival.header
        fields = {"proxy": f"[{arrival.proxy[0]}]:{arrival.proxy[1]}",
                  "version": header.version, "command": header.command}
        if header.authority is not None:
            fields["authority"] = header.authority
        if header.unique_id is not None:
            fields["unique_id"] = header.unique_id.hex()
        if header.ssl is not None:
            fields.update(proxy_tls=header.ssl.version or header.ssl.tls,
                          proxy_cipher=header.ssl.cipher)
        self.event("proxied", **fields)

    def reply(self, reply: Any, ctx: Any, tx: Any, command: str, rcpt_to: list[str],
              size: int) -> None:
        """A refusal (4xx/5xx): what was refused, and of whom; the same refusal
        repeated in a session is logged LOGGED_REPEATS times, then counted."""
        seen = self._refusals.setdefault((command, reply.code, reply.enhanced or ""),
                                         [0, " ".join(reply.text)])
        seen[0] += 1
        if seen[0] > LOGGED_REPEATS:
            return
        self.event("reply", code=reply.code, enhanced=reply.enhanced or "",
                   text=" ".join(reply.text), command=command,
                   **envelope(ctx, tx, rcpt_to, size))

    def queued(self, ctx: Any, tx: Any, queue_id: str, plugin: str) -> None:
        fields = envelope(ctx, tx, [r.address for r in tx.recipients], tx.size)
        fields["queue_id"] = queue_id
        self.event("queued", **fields, rcpts=len(tx.recipients), by=plugin)

    def disconnect(self, ctx: Any) -> None:
        for (command, code, enhanced), (count, text) in self._refusals.items():
            if count > LOGGED_REPEATS:
                self.event("replies_not_logged", command=command, code=code,
                           enhanced=enhanced, text=text, count=count - LOGGED_REPEATS)
        self.event("disconnect", messages=ctx.message_count, bytes=ctx.total_size,
                   bad_commands=ctx.bad_commands, bad_recipients=ctx.bad_recipients,
                   seconds=round(time.time() - ctx.connected_at, 3))


def envelope(ctx: Any, tx: Any, rcpt_to: list[str], size: int) -> dict[str, Any]:
    """The fields of a decision line, as in Postfix's mail.log ("from host[ip] ...
    from=<...> to=<...> helo=<...>"): the transaction (``tx`` may be None), the
    client by its forward-confirmed reverse DNS name if the reverse-dns check found
    one ("unknown" otherwise, as Postfix), its HELO and TLS."""
    name = ctx.reverse_name if ctx.checks.value("reverse-dns") == "pass" else None
    return {
        "queue_id": tx.queue_id if tx is not None else "",
        "client": f"{name or 'unknown'}[{ctx.remote_ip}]",
        "helo": ctx.helo_name,
        "mail_from": f"<{tx.mail_from}>" if tx is not None else "",
        "rcpt_to": ",".join(f"<{a}>" for a in rcpt_to),
        "size": size,
        "tls": ctx.tls.protocol if ctx.tls is not None else "none",
    }
