"""STARTTLS and implicit TLS with real TLS (certificates from trustme)."""

from __future__ import annotations

import smtplib
import socket
import ssl

from .test_receive import MSG, connect, stored, talk

LISTENERS = {"mta": {"tls_mode": "starttls"}, "smtps": {"tls_mode": "implicit"}}


def client_context(certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs[2]))
    return ctx


def test_starttls_then_mail_records_tls(make_appliance, certs):
    app = make_appliance(listeners=LISTENERS)
    with smtplib.SMTP("localhost", app.ports["mta"]) as c:
        c.ehlo("tls.example")
        assert c.has_extn("starttls")
        c.starttls(context=client_context(certs))
        c.ehlo("tls.example")
        assert not c.has_extn("starttls")  # never offered again
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, data = stored(app)
    assert env["client"]["tls"]["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert b" with ESMTPS id " in data and b"(using TLSv1." in data


def test_implicit_tls(make_appliance, certs):
    app = make_appliance(listeners=LISTENERS)
    with smtplib.SMTP_SSL("localhost", app.ports["smtps"], context=client_context(certs)) as c:
        c.ehlo("implicit.example")
        assert not c.has_extn("starttls")
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, _ = stored(app)
    assert env["listener"]["name"] == "smtps" and env["client"]["tls"]


def test_starttls_discards_pipelined_plaintext(make_appliance, certs):
    """CVE-2011-0411 class: commands sent with STARTTLS must not run after TLS."""
    app = make_appliance(listeners=LISTENERS)
    s = connect(app, app.ports["mta"])
    talk(s, b"EHLO inject.example\r\n")
    s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
    assert read_line(s).startswith(b"220 2.0.0")
    tls = client_context(certs).wrap_socket(s, server_hostname="localhost")
    # the injected MAIL must be gone; and HELO is required again (RFC 3207)
    assert talk(tls, b"RCPT TO:<b@example.net>\r\n").startswith(b"503")
    assert talk(tls, b"MAIL FROM:<a@example.org>\r\n").startswith(b"503")
    assert talk(tls, b"EHLO inject.example\r\n").startswith(b"250")
    assert talk(tls, b"STARTTLS\r\n").startswith(b"503")  # not twice
    assert "starttls_injection" in app.log()


def test_starttls_refused_on_plain_only_listener(appliance):
    s = connect(appliance)
    talk(s, b"EHLO p.example\r\n")
    assert talk(s, b"STARTTLS\r\n").startswith(b"502 5.5.1")


def test_garbage_instead_of_client_hello_and_old_tls(make_appliance, certs):
    app = make_appliance(listeners=LISTENERS)
    g = socket.create_connection(("127.0.0.1", app.ports["smtps"]), timeout=10)
    g.sendall(b"EHLO not tls at all\r\n" * 3)
    g.settimeout(10)
    try:
        answer = g.recv(100)
    except ConnectionResetError:
        answer = b""
    # no plaintext SMTP on an implicit-TLS port: at most a TLS alert record (0x15)
    assert answer == b"" or answer[:1] == b"\x15", answer
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
    except ValueError:
        pass
    raw = socket.create_connection(("127.0.0.1", app.ports["smtps"]), timeout=10)
    refused = False
    try:
        old.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, OSError):
        refused = True
    assert refused
    # the listener keeps serving
    with smtplib.SMTP_SSL("localhost", app.ports["smtps"], context=client_context(certs)) as c:
        assert c.noop()[0] == 250
    assert app.log().count("tls_failed") >= 2


def read_line(sock) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        data += sock.recv(1)
    return data
