"""The hooks: the public plugin API of smtp-appliance.

Every verdict hook returns a :class:`~appliance.verdict.Verdict` or ``None``.
Plugins are asked in priority order (``[plugins.NAME] priority``, lower first);
the first verdict that is not ``continue`` decides and later plugins are not
asked. ``None`` means "no opinion". A plugin that raises or overruns
``server.plugin_timeout`` gives ``451 4.3.0`` for that command, never a 250.

Arguments are passed by keyword; a plugin may accept any subset of them.
Hook specs only ever gain arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .config import AppConfig
    from .context import Recipient, SessionContext, Transaction
    from .headers import Headers
    from .message import Message
    from .spool import Spool
    from .verdict import Verdict

NAME = "smtp_appliance"

hookspec = pluggy.HookspecMarker(NAME)

# -------------------------------------------------------------------------
# Connection-level events
# -------------------------------------------------------------------------


@hookspec
def on_connect(session: SessionContext) -> Verdict | None:
    """A client connected, before the banner. Reject/tmpreject/abort answer
    with that code instead of the banner (a 5xx greeting keeps the connection
    open until QUIT, as RFC 5321 3.1 asks; 4xx closes).

    :param session: the new session (remote/local address, listener, TLS if implicit)
    """


@hookspec
def on_ehlo(session: SessionContext, hostname: str, extended: bool) -> Verdict | None:
    """HELO or EHLO was received; ``session.helo_name`` is not yet set.

    :param hostname: the name the client declared
    :param extended: True for EHLO
    """


@hookspec
def on_auth(session: SessionContext, mechanism: str, username: str) -> Verdict | None:
    """A client authenticated successfully as ``username``; a refusing verdict
    turns the success into that reply (the session stays unauthenticated)."""


@hookspec
def on_disconnect(session: SessionContext) -> None:
    """The session ended (QUIT, timeout, error or the client went away).
    Every plugin is called; return values are ignored."""


# -------------------------------------------------------------------------
# Transaction events
# -------------------------------------------------------------------------


@hookspec
def on_mail_from(session: SessionContext, transaction: Transaction) -> Verdict | None:
    """MAIL FROM passed the core's checks (syntax, SIZE within the limit).

    :param transaction: the new envelope: ``mail_from``, ``mail_params``, ``queue_id``
    """


@hookspec
def on_rcpt_to(
    session: SessionContext, transaction: Transaction, recipient: Recipient
) -> Verdict | None:
    """RCPT TO passed the core's checks (syntax, max recipients).

    ``recipient`` is writable: change ``address``, ``folder`` or ``relay_host``
    to rewrite it; ``transaction.add_recipient()`` adds another one and
    ``transaction.discard_recipient()`` answers 250 but drops it. A ``discard``
    verdict does the same as ``discard_recipient()``.
    """


@hookspec
def on_data_start(session: SessionContext, transaction: Transaction) -> Verdict | None:
    """DATA or the first BDAT was received, before the 354 (or the chunk)."""


@hookspec
def on_headers_received(
    session: SessionContext, transaction: Transaction, headers: Headers
) -> Verdict | None:
    """The header section was read (the body has not been); ``headers`` already
    has our Received field on top. Edit it with the header methods (add,
    add_if_absent, remove_first, remove, remove_value, modify, modify_if_exists).
    A refusing verdict is answered after the rest of the data has been read."""


@hookspec
def on_message(
    session: SessionContext, transaction: Transaction, message: Message
) -> Verdict | None:
    """The whole message was received, just before it is queued. ``message``
    gives the headers (editable) and the body (``message.open_body()``).
    ``discard`` answers 250 and queues nothing."""


# -------------------------------------------------------------------------
# Hand-off
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def queue_message(
    session: SessionContext, transaction: Transaction, message: Message
) -> str | None:
    """Store an accepted message durably and return its queue id.

    Stops at the first non-None result. Must not return until the message is
    safe (for a disk spool: data and directory fsynced); the client gets its
    "250 OK" only after that. Raise to refuse: the client gets 451 4.3.0
    (``OSError`` with ENOSPC: 452 4.3.1). The built-in ``spool`` plugin is the
    default implementation (priority 1000: a next-hop plugin with a lower
    priority is asked first).
    """


# -------------------------------------------------------------------------
# Lifecycle
# -------------------------------------------------------------------------


@hookspec
def on_configure(config: AppConfig, spool: Spool) -> None:
    """A configuration took effect (at start and after each reload), before any
    session uses it. Every plugin is called; use it to open files or pools.

    :param config: the whole validated configuration
    :param spool: the spool of ``[queue]`` (staging area and default store)
    """
