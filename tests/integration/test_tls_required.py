"""`[listeners.NAME.tls] required = true`: a listener that serves nothing but
EHLO/HELO, STARTTLS, NOOP, RSET and QUIT before TLS (Postfix's
smtpd_tls_security_level = encrypt), without requiring AUTH."""

from __future__ import annotations

import base64
import smtplib
import subprocess

import pytest

from appliance.users import make_entry, write_users

from .conftest import have
from .test_receive import MSG, connect, stored, talk
from .test_tls import client_context

PASSWORD = "correct horse battery staple"
MUST_STARTTLS = b"530 5.7.0 Must issue a STARTTLS command first"


@pytest.fixture
def app(make_appliance, tmp_path):
    users = tmp_path / "users.toml"
    write_users(users, {"alice": make_entry("alice", PASSWORD, ["PLAIN"], "mx.test.example")})
    return make_appliance(f"""
        [auth]
        users_file = "{users}"
        plaintext_mechanisms = ["PLAIN"]   # would be offered before TLS, were TLS not required
        [listeners.submission.tls]
        required = true
        """, listeners={"mta": {"tls_mode": "starttls"}, "submission": {"tls_mode": "starttls"}})


def test_before_starttls_only_ehlo_starttls_noop_rset_quit_are_served(app):
    s = connect(app, app.ports["submission"])
    ehlo = talk(s, b"EHLO plain.example\r\n")
    assert ehlo.startswith(b"250") and b"STARTTLS" in ehlo
    assert b"AUTH" not in ehlo  # AUTH would be refused: not offered
    token = base64.b64encode(b"\0alice\0" + PASSWORD.encode())
    for command in (b"MAIL FROM:<a@example.org>", b"AUTH PLAIN " + token,
                    b"VRFY alice", b"EXPN staff", b"HELP"):
        assert talk(s, command + b"\r\n").startswith(MUST_STARTTLS), command
    for command in (b"NOOP", b"RSET", b"HELO plain.example"):
        assert talk(s, command + b"\r\n").startswith(b"250"), command
    assert talk(s, b"QUIT\r\n").startswith(b"221")
    assert not app.queued()


def test_after_starttls_unauthenticated_mail_goes_to_relay_policy(app, certs):
    with smtplib.SMTP("localhost", app.ports["submission"], timeout=10) as c:
        c.ehlo("client.example")
        code, text = c.mail("a@example.org")
        assert (code, text) == (530, MUST_STARTTLS[4:])
        c.rset()
        c.starttls(context=client_context(certs))
        c.ehlo("client.example")
        assert "PLAIN" in c.esmtp_features["auth"]
        # no AUTH: loopback is in relay_networks by default, so relaying is allowed
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, _ = stored(app)
    assert env["client"]["tls"]["protocol"].startswith("TLSv1")
    assert not env["client"]["auth_user"]


def test_a_listener_without_required_still_serves_mail_before_tls(app):
    s = connect(app, app.ports["mta"])
    assert b"AUTH PLAIN" in talk(s, b"EHLO plain.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")


@pytest.mark.skipif(not have("swaks"), reason="swaks (Debian) is installed by make test")
def test_swaks_without_and_with_tls(app, certs):
    def swaks(*tls: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(app.ports["submission"]), *tls,
             "--ehlo", "swaks.example", "--from", "a@example.org", "--to", "b@example.net",
             "--header", "Subject: swaks tls required"],
            capture_output=True, text=True, timeout=60)

    plain = swaks()
    assert plain.returncode != 0 and MUST_STARTTLS.decode() in plain.stdout
    assert not app.queued()
    tls = swaks("--tls", "--tls-verify", "--tls-ca-path", str(certs[2]), "--tls-sni", "localhost")
    assert tls.returncode == 0, tls.stdout + tls.stderr
    assert len(app.queued()) == 1


def test_check_config_refuses_required_tls_on_a_listener_without_tls(make_appliance):
    app = make_appliance("""
        [listeners.mta.tls]
        required = true
        """, listeners={"mta": {}}, start=False)
    result = app.cli("check-config")
    assert result.returncode == 1, result.stdout
    assert "listeners.mta.tls.required" in result.stderr + result.stdout
    assert 'tls_mode = "starttls" or "implicit"' in result.stderr + result.stdout
