"""SMTP AUTH checked by a real Dovecot (Debian's dovecot-core, started privately by
tests/dovecot_fixture.py), as Postfix's smtpd_sasl_type = dovecot: the real
server, real TLS, smtplib and swaks as clients.

Dovecot delays every request from a client IP that recently failed (its auth
penalty, keyed on the ``rip`` we pass): most tests turn it off (``penalty =
false``); the swaks ones keep it and each talks from its own loopback address."""

from __future__ import annotations

import base64
import os
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from appliance.clients.dovecot import RETRY_AFTER
from tests.dovecot_fixture import PASSWORD, USER

from .conftest import have
from .test_receive import MSG, connect, stored, talk
from .test_tls import client_context

pytestmark = pytest.mark.skipif(not have("dovecot"),
                                reason="dovecot (Debian dovecot-core) not installed")

LISTENERS = {"submission": {"tls_mode": "starttls"}}


def config(socket: str, timeout: str = "5s", penalty: bool = False) -> str:
    return f"""
        [auth]
        failure_delay = "0.1s"
        max_failures = 3
        [listeners.submission.auth]
        required = true
        [plugins.dovecot-auth]
        enabled = true
        socket = "{socket}"
        timeout = "{timeout}"
        penalty = {str(penalty).lower()}
        """


@pytest.fixture
def dovecot_app(make_appliance, dovecot):
    return make_appliance(config(dovecot.inet), listeners=LISTENERS)


@pytest.fixture
def penalty_app(make_appliance, dovecot):
    return make_appliance(config(dovecot.inet, timeout="30s", penalty=True),
                          listeners=LISTENERS)


def starttls(app, certs, source: str = "127.0.0.1") -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", app.ports["submission"], timeout=15,
                     source_address=(source, 0))
    c.ehlo("client.example")
    c.starttls(context=client_context(certs))
    c.ehlo("client.example")
    return c


def plain(user: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_dovecot_checks_each_mechanism_it_announces(dovecot_app, certs, mechanism):
    with starttls(dovecot_app, certs) as c:
        # Dovecot announces PLAIN LOGIN CRAM-MD5; [auth] mechanisms (the default)
        # also lists DIGEST-MD5 and SCRAM-SHA-256: only the intersection is offered.
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        c.user, c.password = USER, PASSWORD
        code, text = c.auth(mechanism,
                            getattr(c, "auth_" + mechanism.lower().replace("-", "_")))
        assert (code, text[:5]) == (235, b"2.7.0")
        assert c.sendmail("alice@example.org", ["b@example.net"], MSG) == {}
    env, data = stored(dovecot_app)
    assert env["client"]["auth_user"] == USER
    assert b" with ESMTPSA id " in data
    assert f"mechanism={mechanism}" in dovecot_app.log()


def test_unix_socket_and_no_auth_before_tls(make_appliance, dovecot, certs):
    app = make_appliance(config(dovecot.unix), listeners=LISTENERS)
    s = connect(app, app.ports["submission"])
    assert b"AUTH" not in talk(s, b"EHLO plain.example\r\n")
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    assert talk(s, b"AUTH PLAIN " + token + b"\r\n").startswith(b"538 5.7.11")
    s.close()
    with starttls(app, certs) as c:
        assert c.docmd("AUTH", plain(USER, PASSWORD))[0] == 235


def test_wrong_password_and_unknown_user_get_535_then_421(dovecot_app, certs):
    with starttls(dovecot_app, certs, "127.0.0.2") as c:
        for user, password in ((USER, "Tr0ub4dor&3"), ("mallory", PASSWORD)):
            code, text = c.docmd("AUTH", plain(user, password))
            assert (code, text[:5]) == (535, b"5.7.8")
        # an exchange continued through Dovecot (LOGIN: two CONT round trips)
        assert c.docmd("AUTH", "LOGIN")[0] == 334
        assert c.docmd(base64.b64encode(USER.encode()).decode())[0] == 334
        code, text = c.docmd(base64.b64encode(b"nope").decode())
        assert (code, text[:5]) == (421, b"4.7.0")  # the third failure closes
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.noop()
    log = dovecot_app.log()
    assert "auth_failed" in log and "user=mallory" in log and "client=127.0.0.2" in log
    assert "Tr0ub4dor" not in log and PASSWORD not in log
    with starttls(dovecot_app, certs, "127.0.0.3") as c:  # others are still served
        assert c.docmd("AUTH", plain(USER, PASSWORD))[0] == 235


def test_cancelled_exchange_then_success_on_the_same_connection(dovecot_app, certs):
    with starttls(dovecot_app, certs) as c:
        assert c.docmd("AUTH", "LOGIN")[0] == 334
        code, text = c.docmd("*")
        assert (code, text[:5]) == (501, b"5.7.0")
        code, text = c.docmd("AUTH", "PLAIN not*base64")
        assert (code, text[:5]) == (501, b"5.5.2")
        assert c.docmd("AUTH", plain(USER, PASSWORD))[0] == 235
        code, text = c.docmd("AUTH", plain(USER, PASSWORD))
        assert (code, text[:5]) == (503, b"5.5.1")


def test_dovecot_down_gives_454_and_the_server_keeps_serving(dovecot_app, dovecot, certs):
    with starttls(dovecot_app, certs) as c:
        assert c.docmd("AUTH", plain(USER, PASSWORD))[0] == 235  # connection made
    dovecot.stop()
    with starttls(dovecot_app, certs) as c:
        # the mechanisms Dovecot announced last are still offered ...
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        code, text = c.docmd("AUTH", plain(USER, PASSWORD))
        assert (code, text[:5]) == (454, b"4.7.0")  # ... and answered "try later"
        assert c.noop()[0] == 250
        code, text = c.docmd("MAIL", "FROM:<alice@example.org>")
        assert (code, text[:5]) == (530, b"5.7.0")  # still unauthenticated
    assert "reason=\"cannot talk to Dovecot at inet:127.0.0.1:" in dovecot_app.log()
    dovecot.start()  # back: the next AUTH reconnects
    time.sleep(RETRY_AFTER)  # (failed connects are retried after that)
    with starttls(dovecot_app, certs) as c:
        assert c.docmd("AUTH", plain(USER, PASSWORD))[0] == 235
        assert c.sendmail("alice@example.org", ["b@example.net"], MSG) == {}


def test_dovecot_never_reached_offers_auth_mechanisms_and_answers_454(make_appliance,
                                                                      dovecot, certs):
    dovecot.stop()
    app = make_appliance(config(dovecot.inet), listeners=LISTENERS)
    with starttls(app, certs) as c:
        assert "PLAIN" in c.esmtp_features["auth"].split()
        code, text = c.docmd("AUTH", plain(USER, PASSWORD))
        assert (code, text[:5]) == (454, b"4.7.0")
        assert c.noop()[0] == 250


def test_a_stalled_dovecot_times_out_with_454(make_appliance, dovecot, certs):
    app = make_appliance(config(dovecot.inet, timeout="1s"), listeners=LISTENERS)
    with starttls(app, certs) as c:
        assert c.docmd("AUTH", plain(USER, PASSWORD))[0] == 235
    auth_pids = [pid for pid in dovecot.children()
                 if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"dovecot/auth\0")]
    assert auth_pids, "dovecot's auth process not found"
    for pid in auth_pids:  # the real Dovecot, stalled: accepts, never answers
        os.kill(pid, signal.SIGSTOP)
    try:
        with starttls(app, certs) as c:
            code, text = c.docmd("AUTH", plain(USER, PASSWORD))
            assert (code, text[:5]) == (454, b"4.7.0")
            assert c.noop()[0] == 250
    finally:
        for pid in auth_pids:
            os.kill(pid, signal.SIGCONT)
    with starttls(app, certs) as c:  # Dovecot answers again: served again
        assert c.docmd("AUTH", plain(USER, PASSWORD))[0] == 235


@pytest.mark.skipif(not have("swaks"), reason="swaks (Debian) not installed")
@pytest.mark.parametrize("mechanism,source", [("PLAIN", "127.0.0.4"), ("LOGIN", "127.0.0.5"),
                                              ("CRAM-MD5", "127.0.0.6")])
def test_swaks(penalty_app, certs, mechanism, source):
    dovecot_app = penalty_app
    def swaks(password: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(dovecot_app.ports["submission"]),
             "--local-interface", source,
             "--tls", "--tls-verify", "--tls-ca-path", str(certs[2]),
             "--tls-sni", "localhost", "--ehlo", "swaks.example",
             "--auth", mechanism, "--auth-user", USER, "--auth-password", password,
             "--from", "alice@example.org", "--to", "b@example.net",
             "--header", "Subject: swaks dovecot auth"],
            capture_output=True, text=True, timeout=60)

    ok = swaks(PASSWORD)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "235 2.7.0" in ok.stdout
    env, _ = stored(dovecot_app)
    assert env["client"]["auth_user"] == USER
    bad = swaks("wrong")
    assert bad.returncode != 0 and "535 5.7.8" in bad.stdout

