"""The sans-IO SMTP server engine (h11's shape): bytes in, events out, replies rendered.

No sockets, no gevent, no plugins: see docs/protocol.md.
"""

from appliance.protocol._commands import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES
from appliance.protocol._state import State
from appliance.protocol.connection import LocalProtocolError, SMTPConnection
from appliance.protocol.events import (
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
    Xclient,
    Xforward,
)

__all__ = [
    "NEED_DATA",
    "XCLIENT_ATTRIBUTES",
    "XFORWARD_ATTRIBUTES",
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
    "Xclient",
    "Xforward",
]
