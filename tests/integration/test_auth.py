"""SMTP AUTH end to end: a real server, real TLS, smtplib and swaks as clients,
secrets from a real users file (hashed only)."""

from __future__ import annotations

import base64
import json
import smtplib
import subprocess

import pytest

from appliance.users import make_entry, write_users

from .conftest import have
from .test_receive import MSG, connect, stored, talk
from .test_tls import _smtps, client_context

PASSWORD = "correct horse battery staple"
MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256"]
LISTENERS = {
    "mta": {"tls_mode": "starttls"},
    "submission": {"tls_mode": "starttls"},
    "smtps": {"tls_mode": "implicit"},
}


@pytest.fixture
def auth_app(make_appliance, tmp_path):
    users = tmp_path / "users.toml"
    write_users(users, {"alice": make_entry("alice", PASSWORD, MECHANISMS, "mx.test.example",
                                            scram_iterations=4096)})
    return make_appliance(f"""
        [auth]
        users_file = "{users}"
        failure_delay = "0.2s"
        [listeners.submission.auth]
        required = true
        [listeners.smtps.auth]
        required = true
        """, listeners=LISTENERS)


def starttls(app, certs, listener="mta") -> smtplib.SMTP:
    c = smtplib.SMTP("localhost", app.ports[listener], timeout=10)
    c.ehlo("client.example")
    c.starttls(context=client_context(certs))
    c.ehlo("client.example")
    return c


def test_no_auth_before_tls_and_538_for_a_tls_only_mechanism(auth_app):
    s = connect(auth_app, auth_app.ports["mta"])
    assert b"AUTH" not in talk(s, b"EHLO plain.example\r\n")
    token = base64.b64encode(b"\0alice\0" + PASSWORD.encode())
    assert talk(s, b"AUTH PLAIN " + token + b"\r\n").startswith(b"538 5.7.11")
    assert talk(s, b"NOOP\r\n").startswith(b"250")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_login_over_starttls_records_the_user(auth_app, certs, mechanism):
    with starttls(auth_app, certs, "submission") as c:
        assert sorted(c.esmtp_features["auth"].split()) == sorted(MECHANISMS)
        c.user, c.password = "alice", PASSWORD
        code, _ = c.auth(mechanism, getattr(c, "auth_" + mechanism.lower().replace("-", "_")))
        assert code == 235
        assert c.sendmail("alice@example.org", ["b@example.net"], MSG) == {}
    env, data = stored(auth_app)
    assert env["client"]["auth_user"] == "alice"
    assert b" with ESMTPSA id " in data
    assert f"mechanism={mechanism}" in auth_app.log()


def test_failures_same_reply_for_unknown_user_and_421_after_the_maximum(auth_app, certs):
    with starttls(auth_app, certs) as c:
        for user, password in (("alice", "Tr0ub4dor&3"), ("mallory", PASSWORD)):
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            code, text = c.docmd("AUTH", "PLAIN " + token)
            assert (code, text[:5]) == (535, b"5.7.8")
        token = base64.b64encode(b"\0alice\0nope").decode()
        code, text = c.docmd("AUTH", "PLAIN " + token)
        assert (code, text[:5]) == (421, b"4.7.0")  # the third failure closes
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.noop()
    log = auth_app.log()
    assert "auth_failed" in log and "user=mallory" in log and "client=127.0.0.1" in log
    assert "Tr0ub4dor" not in log and PASSWORD not in log  # never a password in the log
    # the server still serves others
    with starttls(auth_app, certs) as c:
        c.login("alice", PASSWORD)


def test_malformed_cancelled_twice_and_required(auth_app, certs):
    with starttls(auth_app, certs, "submission") as c:
        code, text = c.docmd("MAIL", "FROM:<alice@example.org>")
        assert (code, text[:5]) == (530, b"5.7.0")  # submission requires AUTH
        code, text = c.docmd("AUTH", "PLAIN not*base64")
        assert (code, text[:5]) == (501, b"5.5.2")
        assert c.docmd("AUTH", "LOGIN")[0] == 334
        code, text = c.docmd("*")
        assert (code, text[:5]) == (501, b"5.7.0")
        code, text = c.docmd("AUTH", "NTLM")
        assert (code, text[:5]) == (504, b"5.5.4")
        c.login("alice", PASSWORD)
        code, text = c.docmd("AUTH", "PLAIN")
        assert (code, text[:5]) == (503, b"5.5.1")
        assert c.docmd("MAIL", "FROM:<alice@example.org> AUTH=<alice@example.org>")[0] == 250


def test_auth_param_from_an_unauthenticated_client_is_not_trusted(auth_app, certs):
    with starttls(auth_app, certs) as c:
        assert c.docmd("MAIL", "FROM:<a@example.org> AUTH=<boss@example.org>")[0] == 250
        assert c.docmd("RCPT", "TO:<b@example.net>")[0] == 250
        assert c.data(MSG)[0] == 250
    env, _ = stored(auth_app)
    assert env["mail_from"]["params"]["AUTH"] == "<>"


def test_implicit_tls_offers_auth(auth_app, certs):
    with _smtps(auth_app.ports["smtps"], client_context(certs), "localhost") as c:
        c.ehlo("client.example")
        assert "CRAM-MD5" in c.esmtp_features["auth"]
        c.login("alice", PASSWORD)
        assert c.sendmail("alice@example.org", ["b@example.net"], MSG) == {}


def test_scram_sha_256_with_a_real_scram_client(auth_app, certs):
    import scramp

    def exchange(password: str) -> tuple[int, bytes]:
        client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", password)
        code, text = c.docmd("AUTH", "SCRAM-SHA-256 "
                             + base64.b64encode(client.get_client_first().encode()).decode())
        assert code == 334
        client.set_server_first(base64.b64decode(text).decode())
        code, text = c.docmd(base64.b64encode(client.get_client_final().encode()).decode())
        if code != 334:
            return code, text
        client.set_server_final(base64.b64decode(text).decode())  # verifies the server
        return c.docmd("")

    with starttls(auth_app, certs) as c:
        code, text = exchange("Tr0ub4dor&3")
        assert (code, text[:5]) == (535, b"5.7.8")
        code, text = exchange(PASSWORD)
        assert (code, text[:5]) == (235, b"2.7.0")


@pytest.mark.skipif(not have("swaks"), reason="swaks (Debian) not installed")
@pytest.mark.parametrize("mechanism", ["DIGEST-MD5", "CRAM-MD5", "LOGIN", "PLAIN"])
def test_swaks_every_mechanism(auth_app, certs, mechanism):
    def swaks(password: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(auth_app.ports["submission"]),
             "--tls", "--tls-verify", "--tls-ca-path", str(certs[2]),
             "--tls-sni", "localhost", "--ehlo", "swaks.example",
             "--auth", mechanism, "--auth-user", "alice", "--auth-password", password,
             "--from", "alice@example.org", "--to", "b@example.net",
             "--header", "Subject: swaks auth"],
            capture_output=True, text=True, timeout=60)

    ok = swaks(PASSWORD)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "235 2.7.0" in ok.stdout
    env = json.loads(auth_app.queued()[-1].read_text())
    assert env["client"]["auth_user"] == "alice"
    bad = swaks("wrong")
    assert bad.returncode != 0 and "535 5.7.8" in bad.stdout


def test_oauth_through_the_token_hook_and_a_failing_checker_gives_454(
        make_appliance, certs, tmp_path):
    users = tmp_path / "users.toml"
    write_users(users, {"alice": make_entry("alice", PASSWORD, ["PLAIN"], "mx.test.example")})
    app = make_appliance(f"""
        [auth]
        users_file = "{users}"
        mechanisms = ["PLAIN", "XOAUTH2", "OAUTHBEARER"]
        [plugins.test-authprobe]
        enabled = true
        """, listeners=LISTENERS)
    with starttls(app, certs) as c:
        assert c.esmtp_features["auth"].split() == ["PLAIN", "XOAUTH2", "OAUTHBEARER"]
        good = base64.b64encode(b"user=alice\x01auth=Bearer letmein\x01\x01").decode()
        assert c.docmd("AUTH", "XOAUTH2 " + good) == (235, b"2.7.0 Authentication successful")
    with starttls(app, certs) as c:
        bad = base64.b64encode(b"n,a=alice,\x01auth=Bearer other\x01\x01").decode()
        code, text = c.docmd("AUTH", "OAUTHBEARER " + bad)
        assert (code, text[:5]) == (454, b"4.7.0")  # the checker raised: try later
        c.login("alice", PASSWORD)  # the session goes on
    assert "auth_backend_failed" in app.log()


def test_a_credentials_store_that_raises_gives_454_and_the_session_goes_on(
        make_appliance, certs):
    app = make_appliance("""
        [plugins.test-authprobe]
        enabled = true
        broken = true
        """, listeners=LISTENERS)
    with starttls(app, certs) as c:
        assert "PLAIN" in c.esmtp_features["auth"]
        token = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
        code, text = c.docmd("AUTH", "PLAIN " + token)
        assert (code, text[:5]) == (454, b"4.7.0")
        assert c.noop()[0] == 250
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
