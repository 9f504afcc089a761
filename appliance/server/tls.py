"""TLS for the listeners: the server contexts built from a listener's [tls]
table (with SNI), the handshake, and what the session records of it."""

from __future__ import annotations

import socket
import ssl
from typing import Any

from appliance.mail.context import TLSInfo

_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TLSFileError(OSError):
    """A certificate, key, DH parameters or CA file of a listener that does not
    load: ``key`` is the [tls] key that names it (``certificate``,
    ``sni[0].certificate``, ``dh_params``, ``client_ca``), ``detail`` names the file."""

    def __init__(self, listener: str, key: str, detail: str) -> None:
        super().__init__(f"listener {listener}: tls.{key}: {detail}")
        self.listener, self.key, self.detail = listener, key, detail


def make_ssl_context(tls: Any, listener: str = "") -> ssl.SSLContext:
    """Server context for one listener's effective [tls] table: the default
    certificate, and one context per [[tls.sni]] certificate, picked by the name
    the client asks for (the name is kept on the socket as ``sni_name``).
    Raises TLSFileError naming the listener, the key and the file."""
    default = _context(tls, tls.certificate, tls.key, listener, "")
    by_name = {}
    for i, entry in enumerate(tls.sni):
        ctx = _context(tls, entry.certificate, entry.key, listener, f"sni[{i}].")
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


def _context(tls: Any, certificate: Any, key: Any, listener: str, prefix: str
             ) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    try:
        ctx.load_cert_chain(str(certificate), str(key))
    except (OSError, ValueError) as exc:
        raise TLSFileError(listener, prefix + "certificate",
                           _pair_problem(str(certificate), str(key), exc)) from exc
    if tls.ciphers:
        ctx.set_ciphers(tls.ciphers)
    if tls.dh_params:
        try:
            ctx.load_dh_params(str(tls.dh_params))
        except (OSError, ValueError) as exc:
            raise TLSFileError(listener, "dh_params", f"cannot load DH parameters "
                               f"{tls.dh_params}: {exc}") from exc
    if tls.client_ca:
        # Ask for a client certificate; one that is offered must verify.
        try:
            ctx.load_verify_locations(cafile=str(tls.client_ca))
        except (OSError, ValueError) as exc:
            raise TLSFileError(listener, "client_ca", f"cannot load CA certificates "
                               f"{tls.client_ca}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def _pair_problem(certificate: str, key: str, exc: Exception) -> str:
    """Which of the pair is wrong, when it shows (OpenSSL only says "PEM lib"):
    a file with no PEM certificate, or with no PEM private key."""
    try:
        with open(certificate, "rb") as f:
            cert_text = f.read()
        with open(key, "rb") as f:
            key_text = f.read()
    except OSError as read_error:
        return f"cannot read {read_error.filename}: {read_error.strerror}"
    if b"-----BEGIN CERTIFICATE-----" not in cert_text:
        return f"certificate {certificate} holds no certificate (no PEM BEGIN CERTIFICATE)"
    if b"PRIVATE KEY-----" not in key_text:
        return f"key {key} holds no private key (no PEM BEGIN ... PRIVATE KEY)"
    return f"certificate {certificate} with key {key}: {exc}"


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
