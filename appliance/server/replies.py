"""The session's fixed replies, how a plugin's verdict becomes a reply, and the
two ways a session ends early."""

from __future__ import annotations

from appliance.hooks.verdict import Action, Verdict
from appliance.protocol import Reply

OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_MESSAGES = Reply(421, "4.7.0", "Too many messages in this session, closing connection")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops (Received headers): mail loop?")
QUEUE_FAILED = Reply(451, "4.3.0", "Could not queue the message, try again later")
NO_AUTH = Reply(503, "5.5.1", "Authentication not enabled")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_SUCCEEDED = Reply(235, "2.7.0", "Authentication successful")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures, closing connection")
NO_STARTTLS = Reply(502, "5.5.1", "STARTTLS not available here")


class Shutdown(Exception):
    """Raised into an idle session's greenlet when the server stops."""


class Closing(Exception):
    """The session is over (QUIT, 421, peer gone)."""


def refuses(verdict: Verdict) -> bool:
    return verdict.action in (Action.REJECT, Action.TMPREJECT, Action.ABORT)


def reply_of(verdict: Verdict) -> Reply:
    code, enhanced, text = verdict.reply_parts()
    return Reply(code, enhanced, text)
