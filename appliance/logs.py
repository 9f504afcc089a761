"""Logging: one structured line per event worth an admin's attention.

Every session line carries ``session=ID``. Text lines are ``event key=value …``;
with ``logging.format = "json"`` each line is one JSON object with the same keys.

Each event belongs to an event class (connection, tls, auth, transcript, verdict,
queue, delivery, disconnect, server) whose threshold the admin sets in
``[logging.classes]``; the outputs are in ``appliance/log_outputs.py``. Observers
(the metrics) see every event, logged or not, with its fields.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("smtp_appliance")

#: How many times one refusal (same command, code and enhanced code) is logged per
#: session; the rest are counted in one ``replies_not_logged`` line at disconnect.
LOGGED_REPEATS = 10

CLASSES = ("connection", "tls", "auth", "transcript", "verdict", "queue", "delivery",
           "disconnect", "server")
#: The class of each event the appliance logs; others by _PREFIXES, then by logger.
_CLASS_OF = {
    **dict.fromkeys(("connect", "too_busy", "pregreet", "timeout", "lost", "lost_in_data",
                     "starttls_injection", "too_many_errors"), "connection"),
    **dict.fromkeys(("tls", "tls_failed"), "tls"),
    **dict.fromkeys(("auth", "auth_failed"), "auth"),
    **dict.fromkeys(("command", "response"), "transcript"),
    **dict.fromkeys(("reply", "replies_not_logged", "mail", "discarded", "trace"), "verdict"),
    **dict.fromkeys(("queued", "queue_failed", "spool_recovered"), "queue"),
    # the delivery side's events (docs/operations.md, "Event classes")
    **dict.fromkeys(("delivered", "deferred", "bounced", "expired", "dsn_sent", "released"),
                    "delivery"),
    "disconnect": "disconnect",
}
_PREFIXES = (("tls_", "tls"), ("auth_", "auth"), ("queue_", "queue"), ("delivery_", "delivery"),
             ("dsn_", "delivery"))
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "off": logging.CRITICAL + 1}

#: class -> lowest level logged; set by :func:`configure` from ``[logging]``
_thresholds: dict[str, int] = dict.fromkeys(CLASSES, logging.INFO)
_thresholds["transcript"] = _LEVELS["off"]
#: called with (event name, fields) for every event, before any level check
_observers: list[Callable[[str, dict[str, Any]], None]] = []


@functools.lru_cache(maxsize=4096)
def event_class(name: str, logger: str = "smtp_appliance") -> str:
    """The class of event ``name`` logged on ``logger``: the table above, the name's
    prefix, then the logger: a plugin's or check's own lines are ``verdict``,
    the users file's ``auth``, anything else of the server ``server``."""
    found = _CLASS_OF.get(name)
    if found:
        return found
    for prefix, cls in _PREFIXES:
        if name.startswith(prefix):
            return cls
    if logger == "smtp_appliance.auth":
        return "auth"
    if logger != "smtp_appliance" and logger.startswith(("smtp_appliance.", "appliance.")):
        return "verdict"
    return "server"


def enabled(name: str, level: int) -> bool:
    """Would an event ``name`` at ``level`` be logged?"""
    return level >= _thresholds[event_class(name)]


def configure(config: Any) -> None:
    """Thresholds from ``[logging] level`` and ``[logging.classes]``."""
    for cls in CLASSES:
        own = getattr(config.classes, cls)
        _thresholds[cls] = _LEVELS[own or config.level]
    log.setLevel(min(_thresholds.values()))


def observe(observer: Callable[[str, dict[str, Any]], None]) -> None:
    """Call ``observer(name, fields)`` for every event from now on (the metrics)."""
    _observers.append(observer)


def forget_observers() -> None:
    _observers.clear()


class ClassFilter(logging.Filter):
    """On each output: drop records below their class's threshold. Records of
    :func:`event` carry their class; others (plugins' own loggers) get theirs here."""

    def filter(self, record: logging.LogRecord) -> bool:
        cls = getattr(record, "event_class", None)
        if cls is None:
            msg = record.msg if isinstance(record.msg, str) else ""
            cls = record.event_class = event_class(msg, record.name)
        return record.levelno >= _thresholds[cls]


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\\r\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def text_of(record: logging.LogRecord) -> str:
    """``event key=value …``: a text line without its time and level."""
    fields = getattr(record, "fields", None)
    msg = record.getMessage()
    if fields:
        msg = msg + " " + " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
    return msg


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname.lower()} {text_of(record)}"
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
    """Configure the root of our loggers from the [logging] table: its outputs
    (each with the class filter) and the class thresholds."""
    from appliance import log_outputs

    formatter = JSONFormatter() if config.format == "json" else TextFormatter()
    handlers = log_outputs.make_handlers(config, formatter)
    for handler in log.handlers:
        handler.close()
    for handler in handlers:
        handler.addFilter(ClassFilter())
    log.handlers[:] = handlers
    configure(config)
    log.propagate = False


def reopen() -> None:
    """SIGUSR1: reopen the log file (after logrotate's copy or move)."""
    for handler in log.handlers:
        if hasattr(handler, "reopen"):
            handler.reopen()


def _log(name: str, level: int, fields: dict[str, Any]) -> None:
    for observer in _observers:
        observer(name, fields)
    cls = event_class(name)
    if level >= _thresholds[cls] and log.isEnabledFor(level):
        log.log(level, name, extra={"fields": fields, "event_class": cls})


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    _log(name, level, fields)


class SessionLog:
    """Log lines of one session, each with its id."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        #: is the command transcript on? (asked once: it is checked at every line)
        self.transcript = enabled("command", logging.INFO)
        self.listener = ""
        #: refusals per (command, code, enhanced code): past LOGGED_REPEATS the
        #: same refusal is only counted, and summed up at disconnect
        self._refusals: dict[tuple[str, int, str], list] = {}

    def event(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        _log(name, level, {"session": self.session_id, **fields})

    def exception(self, name: str, **fields: Any) -> None:
        log.error(name, exc_info=True, extra={"fields": {"session": self.session_id, **fields}})

    def connect(self, ctx: Any) -> None:
        self.listener = ctx.listener
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
              size: int, by: str = "") -> None:
        """A refusal (4xx/5xx): what was refused, of whom, and by which plugin
        (``by``; "" for the server's own); the same refusal repeated in a session
        is logged LOGGED_REPEATS times, then counted."""
        seen = self._refusals.setdefault((command, reply.code, reply.enhanced or ""),
                                         [0, " ".join(reply.text)])
        seen[0] += 1
        if seen[0] > LOGGED_REPEATS:
            return
        self.event("reply", code=reply.code, enhanced=reply.enhanced or "",
                   text=" ".join(reply.text), command=command,
                   **envelope(ctx, tx, rcpt_to, size), by=by)

    def queued(self, ctx: Any, tx: Any, queue_id: str, plugin: str,
               seconds: float | None = None) -> None:
        """A message stored; ``seconds``: how long the queue plugin took to store it."""
        fields = envelope(ctx, tx, [r.address for r in tx.recipients], tx.size)
        fields["queue_id"] = queue_id
        if seconds is not None:
            fields["seconds"] = round(seconds, 6)
        if tx.checks:
            fields["checks"] = checks_of(tx.checks)
        self.event("queued", **fields, rcpts=len(tx.recipients), by=plugin)

    def disconnect(self, ctx: Any) -> None:
        for (command, code, enhanced), (count, text) in self._refusals.items():
            if count > LOGGED_REPEATS:
                self.event("replies_not_logged", command=command, code=code,
                           enhanced=enhanced, text=text, count=count - LOGGED_REPEATS)
        more = {"checks": checks_of(ctx.checks)} if ctx.checks else {}
        self.event("disconnect", messages=ctx.message_count, bytes=ctx.total_size,
                   bad_commands=ctx.bad_commands, bad_recipients=ctx.bad_recipients,
                   seconds=round(time.time() - ctx.connected_at, 3),
                   listener=self.listener, **more)


def checks_of(checks: Any) -> str:
    """``check:result,…``: what the checks of a session or message found."""
    return ",".join(f"{name}:{checks.value(name)}" for name in checks)


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
