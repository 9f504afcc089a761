"""The outputs of ``[logging] destination``: stderr, a file, syslog, the journal.

Several may be on at once; each gets every line its event class lets through.
The file is reopened when logrotate moved it (checked at each line, as
``WatchedFileHandler`` does) and on SIGUSR1 (after a copy-and-truncate, or to be
sure). The journal is written in its native protocol (systemd's "Native Journal
Protocol": one datagram of ``FIELD=value`` lines to its socket), so each event's
fields are fields of the journal entry: ``journalctl QUEUE_ID=…`` finds a message.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import struct
import sys
from typing import Any

from appliance.logs import text_of

_FACILITIES = logging.handlers.SysLogHandler.facility_names
#: syslog severities (RFC 5424 6.2.1) of our levels, which the journal's PRIORITY uses
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
IDENTIFIER = "smtp-appliance"


def make_handlers(config: Any, formatter: logging.Formatter) -> list[logging.Handler]:
    """One handler per output named in ``config.destination``; OSError names the
    key whose output could not be opened."""
    handlers: list[logging.Handler] = []
    for output in config.destination:
        try:
            handler = _make(output, config)
        except OSError as exc:
            key = {"file": f"logging.file {config.file}",
                   "syslog": f"logging.syslog_address {config.syslog_address or '/dev/log'}",
                   "journal": f"logging.journal_socket {config.journal_socket}"}.get(
                       output, f"logging.destination {output}")
            for h in handlers:
                h.close()
            raise OSError(f"{key}: {exc.strerror or exc}") from exc
        if not isinstance(handler, JournalHandler):
            handler.setFormatter(formatter)
        handlers.append(handler)
    return handlers


def _make(output: str, config: Any) -> logging.Handler:
    if output == "file":
        return ReopeningFileHandler(config.file)
    facility = _FACILITIES.get(config.syslog_facility, 2)
    if output == "syslog":
        return logging.handlers.SysLogHandler(address=_syslog_address(config.syslog_address),
                                              facility=facility)
    if output == "journal":
        return JournalHandler(config.journal_socket, facility)
    return logging.StreamHandler(sys.stderr)


def _syslog_address(spec: str) -> str | tuple[str, int]:
    """``""`` (/dev/log), ``unix:/path`` or ``inet:host:port`` (UDP)."""
    kind, _, rest = spec.partition(":")
    if kind == "unix":
        return rest
    if kind == "inet":
        host, _, port = rest.rpartition(":")
        return (host.strip("[]"), int(port))
    return "/dev/log"


class ReopeningFileHandler(logging.handlers.WatchedFileHandler):
    """A log file reopened when moved away (each line checks) and on :meth:`reopen`."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
            self._statstream()
        finally:
            self.release()


class JournalHandler(logging.Handler):
    """systemd's native journal protocol, written by hand (no libsystemd binding):
    ``MESSAGE`` is the text line without time and level, ``PRIORITY`` the syslog
    severity, and every field of the event one journal field (upper case)."""

    #: journal fields of its own that an event's field must not overwrite
    RESERVED = frozenset({"MESSAGE", "MESSAGE_ID", "PRIORITY", "CODE_FILE", "CODE_LINE",
                          "CODE_FUNC", "ERRNO", "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER",
                          "SYSLOG_PID", "SYSLOG_TIMESTAMP", "SYSLOG_RAW", "TID",
                          "DOCUMENTATION", "EVENT", "EVENT_CLASS", "LOGGER"})

    def __init__(self, path: str, facility: int) -> None:
        super().__init__()
        self.path = path
        self.facility = facility
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.connect(path)  # fails now, at start-up, if journald is not there
        except OSError:
            self.sock.close()
            raise

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sock.send(self.datagram(record))
        except Exception:  # noqa: BLE001 - logging must never raise into a session
            self.handleError(record)

    def datagram(self, record: logging.LogRecord) -> bytes:
        fields: dict[str, Any] = {
            "MESSAGE": text_of(record),
            "PRIORITY": _PRIORITY.get(record.levelno, 6),
            "SYSLOG_IDENTIFIER": IDENTIFIER,
            "SYSLOG_FACILITY": self.facility,
            "LOGGER": record.name,
        }
        if getattr(record, "fields", None) is not None:
            fields["EVENT"] = record.msg
            fields["EVENT_CLASS"] = getattr(record, "event_class", "")
            for key, value in record.fields.items():
                name = key.upper()
                fields[f"SMTP_{name}" if name in self.RESERVED else name] = value
        if record.exc_info:
            fields["TRACEBACK"] = logging.Formatter().formatException(record.exc_info)
        return b"".join(_field(k, v) for k, v in fields.items())

    def close(self) -> None:
        self.sock.close()
        super().close()


def _field(name: str, value: Any) -> bytes:
    """One field: ``NAME=value\\n``, or, for a value with a newline, the name, a
    newline, the value's length as 64-bit little-endian, the value and a newline."""
    data = str(value).encode("utf-8", "replace")
    key = "".join(c if c.isalnum() or c == "_" else "_" for c in name).lstrip("_").encode()
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


__all__ = ["JournalHandler", "ReopeningFileHandler", "make_handlers"]
