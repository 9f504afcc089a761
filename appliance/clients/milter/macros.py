"""Milter macros: the Sendmail names milters read (``j``, ``{client_addr}``, …)
and their values taken from the session and the transaction.

Which macros go with which step follows Postfix's defaults
(``milter_connect_macros`` and the others); a milter may ask for its own list at
negotiation, and an admin may change the lists and add fixed-value macros.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Per step, the macros sent when neither the admin nor the milter chose others.
DEFAULT_MACROS: dict[str, list[str]] = {
    "connect": ["j", "_", "v", "{daemon_name}", "{daemon_addr}", "{daemon_port}",
                "{client_addr}", "{client_port}", "{client_name}", "{client_ptr}"],
    "helo": ["{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}"],
    "mail": ["i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}",
             "{mail_host}", "{mail_mailer}"],
    "rcpt": ["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"],
    "data": ["i"],
    "eoh": ["i"],
    "eom": ["i"],
}


def _client_name(s: Any) -> str:
    return s.reverse_name or "unknown"


def _tls(attr: str) -> Callable[[Any, Any, Any], str]:
    def get(s: Any, tx: Any, rcpt: Any) -> str:
        value = getattr(s.tls, attr, "") if s.tls else ""
        return str(value) if value else ""
    return get


_VALUES: dict[str, Callable[[Any, Any, Any], str]] = {
    "j": lambda s, tx, r: s.hostname,
    "_": lambda s, tx, r: f"{_client_name(s)} [{s.remote_ip}]",
    "v": lambda s, tx, r: "smtp-appliance",
    "{daemon_name}": lambda s, tx, r: s.listener,
    "{daemon_addr}": lambda s, tx, r: s.local_ip,
    "{daemon_port}": lambda s, tx, r: str(s.local_port),
    "{client_addr}": lambda s, tx, r: s.remote_ip,
    "{client_port}": lambda s, tx, r: str(s.remote_port),
    "{client_name}": lambda s, tx, r: _client_name(s),
    "{client_ptr}": lambda s, tx, r: _client_name(s),
    "{tls_version}": _tls("protocol"),
    "{cipher}": _tls("cipher"),
    "{cipher_bits}": _tls("bits"),
    "{cert_subject}": _tls("peer_subject"),
    "{auth_type}": lambda s, tx, r: s.auth_mechanism,
    "{auth_authen}": lambda s, tx, r: s.auth_user,
    "{auth_author}": lambda s, tx, r: (tx.mail_params.get("AUTH") or "") if tx else "",
    "i": lambda s, tx, r: tx.queue_id if tx else "",
    "{mail_addr}": lambda s, tx, r: tx.mail_from if tx else "",
    "{mail_host}": lambda s, tx, r: tx.mail_from_domain if tx else "",
    "{mail_mailer}": lambda s, tx, r: "smtp" if tx else "",
    "{rcpt_addr}": lambda s, tx, r: r.address if r else "",
    "{rcpt_host}": lambda s, tx, r: r.domain if r else "",
    "{rcpt_mailer}": lambda s, tx, r: "smtp" if r else "",
}

#: Every macro the appliance can fill in from its contexts.
KNOWN_MACROS = frozenset(_VALUES)


def macro_values(names: list[str], session: Any, transaction: Any = None,
                 recipient: Any = None, fixed: dict[str, str] | None = None
                 ) -> dict[str, str]:
    """The values of ``names`` now; fixed values (from the config) win, unknown or
    empty macros are left out, as an MTA leaves out undefined ones."""
    fixed = fixed or {}
    out: dict[str, str] = {}
    for name in names:
        if name in fixed:
            value = fixed[name]
        elif name in _VALUES:
            value = _VALUES[name](session, transaction, recipient)
        else:
            continue
        if value:
            out[name] = value
    return out
