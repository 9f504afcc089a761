"""TLS for the listeners: the server contexts built from a listener's [tls]
table (with SNI), the handshake, and what the session records of it."""

from __future__ import annotations

import socket
import ssl
from typing import Any

from appliance.mail.context import TLSInfo

_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def make_ssl_context(tls: Any) -> ssl.SSLContext:
    """Server context for one listener's effective [tls] table: the default
    certificate, and one context per [[tls.sni]] certificate, picked by the name
    the client asks for (the name is kept on the socket as ``sni_name``)."""
    default = _context(tls, tls.certificate, tls.key)
    by_name = {}
    for entry in tls.sni:
        ctx = _context(tls, entry.certificate, entry.key)
        for name in entry.names:
            by_name.setdefault(name.lower(), ctx)

    def pick(sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if not server_name:
            return
        name = server_name.lower()
        sock.sni_name = name
        chosen = by_name.get(name) or by_name.get("*." + name.partition(".")[2])
        if chosen is not None:
            sock.context = chosen

    default.sni_callback = pick
    return default


def _context(tls: Any, certificate: Any, key: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.load_cert_chain(str(certificate), str(key))
    if tls.ciphers:
        ctx.set_ciphers(tls.ciphers)
    if tls.dh_params:
        ctx.load_dh_params(str(tls.dh_params))
    if tls.client_ca:
        # Ask for a client certificate; one that is offered must verify.
        ctx.load_verify_locations(cafile=str(tls.client_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def handshake(sock: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
    """The server side of the handshake (implicit TLS, or after STARTTLS), within
    the socket's timeout. Raises ssl.SSLError, OSError or ValueError."""
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    tls.do_handshake()
    return tls


def describe(tls: ssl.SSLSocket) -> TLSInfo:
    """What plugins and the Received header see of the connection's TLS."""
    cipher = tls.cipher() or ("", "", 0)
    info = TLSInfo(protocol=tls.version() or "", cipher=cipher[0], bits=cipher[2] or 0,
                   sni=getattr(tls, "sni_name", "") or "")
    cert = tls.getpeercert()
    if cert:
        info.peer_subject = ", ".join("=".join(x) for rdn in cert.get("subject", ())
                                      for x in rdn)
    return info


def goodbye(sock: socket.socket) -> None:
    """Send TLS close_notify before closing (OpenSSL clients report a bare TCP
    close as a truncation attack); wait at most a second for the client's."""
    if isinstance(sock, ssl.SSLSocket):
        try:
            sock.settimeout(1.0)
            sock.unwrap()
        except (OSError, ValueError):
            pass
