"""STARTTLS and implicit TLS with real TLS (certificates from trustme)."""

from __future__ import annotations

import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

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


def test_a_client_that_stalls_mid_handshake_is_dropped_after_the_timeout(make_appliance, certs):
    app = make_appliance('[tls]\nhandshake_timeout = "1s"\n', listeners=LISTENERS)
    stalled = socket.create_connection(("127.0.0.1", app.ports["smtps"]), timeout=10)
    # the first bytes of a TLS record header (handshake, TLS 1.0), then nothing
    stalled.sendall(b"\x16\x03\x01\x02")
    idle = socket.create_connection(("127.0.0.1", app.ports["smtps"]), timeout=10)
    # others are served meanwhile
    with smtplib.SMTP_SSL("localhost", app.ports["smtps"], context=client_context(certs)) as c:
        assert c.noop()[0] == 250
    for sock in (stalled, idle):  # both closed by the server, nothing sent in clear
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 5
        sock.close()
    assert wait_for(lambda: app.log().count("tls_failed") >= 2)
    assert "TimeoutError" in app.log() or "timed out" in app.log()


def read_line(sock) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        data += sock.recv(1)
    return data


def _issue(tmp_path, ca, *names) -> tuple[Path, Path]:
    cert = ca.issue_cert(*names)
    stem = names[0].replace("*", "star")
    cert_path, key_path = tmp_path / f"{stem}.pem", tmp_path / f"{stem}.key"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    return cert_path, key_path


def _served_names(port: int, ca_path, server_name: str) -> set[str]:
    """The DNS names of the certificate the server presents for ``server_name``."""
    ctx = ssl.create_default_context(cafile=str(ca_path))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            return {v for k, v in tls.getpeercert()["subjectAltName"] if k == "DNS"}


def test_sni_picks_the_certificate_for_the_name_asked(make_appliance, certs, tmp_path):
    import trustme

    ca = trustme.CA()
    ca_path = tmp_path / "sni-ca.pem"
    ca.cert_pem.write_to_path(ca_path)
    default = _issue(tmp_path, ca, "mx.default.example")
    exact = _issue(tmp_path, ca, "mail.example.org")
    wild = _issue(tmp_path, ca, "*.example.net")
    app = make_appliance(f"""
        [tls]
        certificate = "{default[0]}"
        key = "{default[1]}"
        [[tls.sni]]
        names = ["mail.example.org"]
        certificate = "{exact[0]}"
        key = "{exact[1]}"
        [[tls.sni]]
        names = ["*.example.net"]
        certificate = "{wild[0]}"
        key = "{wild[1]}"
        """, listeners=LISTENERS)
    port = app.ports["smtps"]
    assert _served_names(port, ca_path, "mail.example.org") == {"mail.example.org"}
    assert _served_names(port, ca_path, "MX1.Example.NET") == {"*.example.net"}
    assert _served_names(port, ca_path, "a.b.example.net") == {"mx.default.example"}
    assert _served_names(port, ca_path, "other.example") == {"mx.default.example"}
    # the name is recorded in the envelope
    ctx = ssl.create_default_context(cafile=str(ca_path))
    with _smtps(port, ctx, "mail.example.org") as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, _ = stored(app)
    assert env["client"]["tls"]["sni"] == "mail.example.org"


def _smtps(port: int, ctx: ssl.SSLContext, server_name: str) -> smtplib.SMTP:
    """SMTP over implicit TLS to 127.0.0.1, asking for ``server_name`` by SNI."""
    c = smtplib.SMTP()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sock = ctx.wrap_socket(raw, server_hostname=server_name)
    c.file = None
    c._host = server_name
    code, msg = c.getreply()
    assert code == 220, msg
    return c


def test_client_certificate_subject_is_recorded_and_a_foreign_one_refused(
        make_appliance, certs, tmp_path):
    import trustme

    client_ca = trustme.CA()
    client_ca_path = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(client_ca_path)
    app = make_appliance(f'[tls]\nclient_ca = "{client_ca_path}"\n', listeners=LISTENERS)
    port = app.ports["smtps"]

    def client(ca) -> ssl.SSLContext:
        ctx = client_context(certs)
        ca.issue_cert("relay.example.org", common_name="relay.example.org").configure_cert(ctx)
        return ctx

    with _smtps(port, client(client_ca), "localhost") as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, _ = stored(app)
    assert "relay.example.org" in env["client"]["tls"]["peer_subject"]
    # a certificate from another CA: the handshake fails, logged with the client IP
    with pytest.raises((ssl.SSLError, OSError)):
        with _smtps(port, client(trustme.CA()), "localhost") as c:
            c.noop()
    # without a certificate: still served
    with _smtps(port, client_context(certs), "localhost") as c:
        assert c.noop()[0] == 250
    assert wait_for(lambda: "tls_failed" in app.log() and "client=127.0.0.1" in app.log())


def test_certificate_replaced_and_sighup_new_sessions_get_it(make_appliance, certs, tmp_path):
    import trustme

    ca = trustme.CA()
    ca_path = tmp_path / "rot-ca.pem"
    ca.cert_pem.write_to_path(ca_path)
    first = _issue(tmp_path, ca, "old.example.org")
    cert_path, key_path = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(first[0], cert_path)
    shutil.copy(first[1], key_path)
    app = make_appliance(f'[tls]\ncertificate = "{cert_path}"\nkey = "{key_path}"\n',
                         listeners=LISTENERS)
    port = app.ports["smtps"]
    ctx = ssl.create_default_context(cafile=str(ca_path))
    ctx.check_hostname = False
    held = _smtps(port, ctx, "old.example.org")  # a session in flight
    assert _served_names(port, ca_path, "x") == {"old.example.org"}
    second = _issue(tmp_path, ca, "new.example.org")
    shutil.copy(second[0], cert_path)
    shutil.copy(second[1], key_path)
    app.signal(signal.SIGHUP)
    assert wait_for(lambda: _served_names(port, ca_path, "x") == {"new.example.org"})
    assert held.sendmail("a@example.org", ["b@example.net"], MSG) == {}  # not dropped
    held.quit()


def wait_for(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_openssl_s_client_starttls_and_implicit(make_appliance, certs):
    """OpenSSL's own client: STARTTLS on the MTA port, TLS from the first byte on
    465, the certificate verified against the test CA; TLS 1.1 refused."""
    app = make_appliance(listeners=LISTENERS)

    def s_client(port: int, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
             "localhost", "-CAfile", str(certs[2]), "-verify_return_error", "-brief",
             "-ign_eof", *extra],
            input=b"EHLO openssl.example\r\nQUIT\r\n", capture_output=True, timeout=30)

    for port, extra in ((app.ports["mta"], ("-starttls", "smtp")), (app.ports["smtps"], ())):
        done = s_client(port, *extra)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert b"Verification: OK" in out and b"Protocol version: TLSv1.3" in out
        assert b"250-PIPELINING" in done.stdout and b"221 2.0.0" in done.stdout
    old = s_client(app.ports["smtps"], "-tls1_1")
    assert old.returncode != 0 and b"221" not in old.stdout
    with smtplib.SMTP_SSL("localhost", app.ports["smtps"], context=client_context(certs)) as c:
        assert c.noop()[0] == 250


def test_cipher_list_and_dh_params(make_appliance, certs, tmp_path):
    """[tls] ciphers limits TLS 1.2 ciphers; dh_params makes DHE ones possible
    (with an RSA certificate: DHE has no ECDSA ciphers)."""
    import trustme

    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ca_path = tmp_path / "rsa-ca.pem"
    ca.cert_pem.write_to_path(ca_path)
    leaf = ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    cert, key = tmp_path / "rsa.pem", tmp_path / "rsa.key"
    leaf.private_key_and_cert_chain_pem.write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    dh = tmp_path / "dh.pem"
    subprocess.run(["openssl", "dhparam", "-dsaparam", "-out", str(dh), "2048"],
                   check=True, capture_output=True, timeout=120)
    app = make_appliance(f"""
        [tls]
        certificate = "{cert}"
        key = "{key}"
        ciphers = "DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
        dh_params = "{dh}"
        """, listeners=LISTENERS)

    def tls12(cipher: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca_path))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher)
        return ctx

    for cipher in ("DHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"):
        with smtplib.SMTP_SSL("localhost", app.ports["smtps"], context=tls12(cipher)) as c:
            assert c.sock.cipher()[0] == cipher
            assert c.noop()[0] == 250
    with pytest.raises((ssl.SSLError, OSError)):  # not in the server's list
        smtplib.SMTP_SSL("localhost", app.ports["smtps"],
                         context=tls12("ECDHE-RSA-AES128-GCM-SHA256"), timeout=10)
