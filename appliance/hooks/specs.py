"""The hooks: the public plugin API of smtp-appliance.

Every verdict hook returns a :class:`~appliance.hooks.verdict.Verdict` or ``None``.
Plugins are asked in priority order (``[plugins.NAME] priority``, lower first);
the first verdict that is not ``continue`` decides and later plugins are not
asked. ``None`` means "no opinion". A plugin that raises or overruns
``server.plugin_timeout`` gives ``451 4.3.0`` for that command, never a 250.
Every hook call, first-result hooks included, is bounded by that budget. A
plugin monitoring one of its own settings returns ``verdict.as_monitor()``.

Arguments are passed by keyword; a plugin may accept any subset of them.
Hook specs only ever gain arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from appliance.config import AppConfig
    from appliance.dns import Resolver
    from appliance.hooks.others import OtherPlugins
    from appliance.hooks.verdict import Verdict
    from appliance.mail.context import Recipient, RecipientInfo, SessionContext, Transaction
    from appliance.mail.headers import Headers
    from appliance.mail.message import Message
    from appliance.sasl import CredentialsBackend, MechanismFactory
    from appliance.spool import Spool
    from appliance.state.counters import Counters

NAME = "smtp_appliance"

hookspec = pluggy.HookspecMarker(NAME)

# -------------------------------------------------------------------------
# Connection-level events
# -------------------------------------------------------------------------


@hookspec
def on_connect(session: SessionContext) -> Verdict | None:
    """A client connected, before the banner. Reject/tmpreject/abort answer
    with that code instead of the banner (a 5xx greeting keeps the connection
    open until QUIT, as RFC 5321 3.1 asks; 4xx closes); ``Verdict.close()``
    closes without any banner.

    :param session: the new session (remote/local address, listener, TLS if implicit)
    """


@hookspec
def on_pregreet(session: SessionContext) -> Verdict | None:
    """The client sent data before the banner, while the session held it back for
    ``session.greeting_delay`` (set by a plugin at ``on_connect``);
    ``session.pregreet`` is True. A refusing verdict is answered instead of the
    banner and the connection is closed (reject: 554, otherwise 421); no verdict:
    the banner is sent and what the client sent is read as commands.
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


@hookspec(firstresult=True)
def auth_backend(session: SessionContext) -> CredentialsBackend | None:
    """Where AUTH gets credentials for this session: the first plugin that returns
    a backend wins (``appliance.sasl.CredentialsBackend``: password check and the
    mechanism-specific stored keys; a user it does not know gets ``None``). Its
    methods may block: the session calls them in the thread pool. The built-in
    ``users`` plugin returns the ``[auth] users_file``. No backend: AUTH is not
    offered."""


@hookspec(firstresult=True)
def auth_mechanisms(session: SessionContext) -> dict[str, MechanismFactory] | None:
    """For a plugin that relays the SASL exchange to a server that checks it
    (Dovecot) instead of handing out secrets: mechanism name -> factory
    ``(appliance.sasl.SASLOptions) -> appliance.sasl.Mechanism``, called for each
    AUTH command. The first plugin that returns a dict wins and replaces the
    built-in mechanisms and ``auth_backend`` for the session (asked once per
    session); the session still offers only the names also in ``[auth]
    mechanisms`` (``plaintext_mechanisms`` before TLS)."""


@hookspec(firstresult=True)
def verify_oauth_token(session: SessionContext, user: str | None, token: str) -> str | None:
    """XOAUTH2 / OAUTHBEARER: the identity the bearer ``token`` proves (``user`` is
    the name the client gave, if any), or ``None`` to refuse. Without a plugin
    implementing this hook those mechanisms are not offered."""


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


@hookspec(firstresult=True)
def lookup_recipient(
    session: SessionContext, transaction: Transaction | None, address: str
) -> RecipientInfo | None:
    """Is ``address`` (``local@domain``, as the client wrote it) a local recipient?
    Return an ``appliance.RecipientInfo`` (a mailbox and its folder, or an alias and
    its members) or ``None`` if you do not know it; the first answer wins. Asked by
    the ``relay`` plugin for recipients of its local domains, for alias members and
    for VRFY/EXPN (``transaction`` is then ``None``); its ``recipients_file`` is one
    implementation. Raise when your directory is down: the client gets 451 4.3.0."""


@hookspec
def on_vrfy(session: SessionContext, address: str) -> Verdict | None:
    """VRFY, when ``[smtp] vrfy`` is on (off: the core answers 252 without asking).
    ``Verdict.accept(text)`` answers ``250 2.1.5 text`` (lines split at newlines);
    a refusing verdict answers with its code (``550 5.1.1`` for an unknown user);
    no verdict: 252 2.5.2.

    :param address: the argument as the client sent it (a name or an address)
    """


@hookspec
def on_expn(session: SessionContext, name: str) -> Verdict | None:
    """EXPN, when ``[smtp] expn`` is on (off: the core answers 502 without asking).
    ``Verdict.accept(text)`` answers ``250 2.1.5`` with one line per line of
    ``text`` (the list's members); a refusing verdict answers with its code; no
    verdict: 502 5.5.1."""


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
def on_configure(
    config: AppConfig, spool: Spool, counters: Counters, hooks: OtherPlugins, dns: Resolver
) -> None:
    """A configuration took effect (at start and after each reload), before any
    session uses it. Every plugin is called; use it to open files or pools.

    :param config: the whole validated configuration
    :param spool: the spool of ``[queue]`` (staging area and default store)
    :param counters: the shared counters of ``[server.state]`` (windows, gauges,
        bans; see ``appliance.state.counters``): the same object across reloads unless
        ``[server.state]`` changed
    :param hooks: asks the other plugins: ``hooks.first("lookup_recipient",
        session=..., transaction=..., address=...)`` returns (first answer or
        ``None``, name of the plugin that gave it), each call under the time budget;
        exceptions propagate
    :param dns: the appliance's resolver (``[dns]``, ``appliance.dns.Resolver``):
        ``dns.budget(seconds)`` gives lookups under a time budget; failures raise
        ``appliance.dns.DnsTempError``
    """
