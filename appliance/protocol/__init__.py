"""The sans-IO SMTP server engine (h11's shape): bytes in, events out, replies rendered.

No sockets, no gevent, no plugins: see docs/protocol.md.
"""

from ._state import State
from .connection import LocalProtocolError, SMTPConnection
from .events import (
    NEED_DATA,
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    DataChunk,
    DataEnd,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    StartTLS,
    Vrfy,
)

__all__ = [
    "NEED_DATA",
    "Auth",
    "AuthResponse",
    "BadCommand",
    "Bdat",
    "ConnectionClosed",
    "Data",
    "DataChunk",
    "DataEnd",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "LocalProtocolError",
    "Mail",
    "Noop",
    "Quit",
    "Rcpt",
    "Reply",
    "Rset",
    "SMTPConnection",
    "StartTLS",
    "State",
    "Vrfy",
]
