"""A real Postfix relaying into the appliance over STARTTLS with SASL client
auth (issue 3, "Tests"): the private instance in postfix.py gets the mail with
its own sendmail(1), its smtp(8) client (Cyrus SASL, libsasl2-modules) logs in
to an AUTH-required listener, and we check what the spool received, the
Received header, and what Postfix logged."""

from __future__ import annotations

import smtplib
import time

import pytest

from appliance.users import make_entry, write_users

from .postfix import PostfixRelay, unavailable_reason
from .test_receive import stored
from .test_tls import client_context

pytestmark = pytest.mark.skipif(unavailable_reason() is not None,
                                reason=unavailable_reason() or "")

PASSWORD = "relay-Secret-42"
SENDER = "alice@relay.test.example"
RECIPIENTS = ["bob@example.net", "carol@example.net"]
MESSAGE = (b"From: Alice <alice@relay.test.example>\n"
           b"To: bob@example.net, carol@example.net\n"
           b"Subject: relayed by postfix\n"
           b"Message-ID: <postfix-relay-1@relay.test.example>\n\n"
           b"hello through a real relay\n")


@pytest.fixture
def auth_app(make_appliance, tmp_path):
    """STARTTLS listener with AUTH required; alice holds PLAIN/LOGIN/CRAM-MD5 secrets."""
    users = tmp_path / "users.toml"
    write_users(users, {"alice": make_entry("alice", PASSWORD, ["PLAIN", "LOGIN", "CRAM-MD5"],
                                            "mx.test.example")})
    return make_appliance(f"""
        [auth]
        users_file = "{users}"
        failure_delay = "0.2s"
        [listeners.mta.auth]
        required = true
        """, listeners={"mta": {"tls_mode": "starttls"}})


@pytest.fixture
def relay(auth_app, certs):
    """Factory: a private Postfix relaying to ``auth_app`` with the given TLS level,
    SASL mechanism and password; stopped (stop, abort, kill) afterwards."""
    started: list[PostfixRelay] = []

    def make(level: str, mechanism: str, password: str = PASSWORD) -> PostfixRelay:
        # "verify" checks the certificate's name: relay to [localhost] (a name in the
        # trustme certificate); "encrypt" only needs TLS, so the bare IP will do.
        host = "localhost" if level == "verify" else "127.0.0.1"
        nexthop = f"[{host}]:{auth_app.ports['mta']}"
        pf = PostfixRelay(nexthop)
        started.append(pf)
        return pf.start(f"""
smtp_tls_security_level = {level}
smtp_tls_CAfile = {certs[2]}
smtp_tls_verify_cert_match = hostname
smtp_tls_servername = {"hostname" if level == "verify" else ""}
smtp_tls_loglevel = 1
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:{pf.etc}/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = {mechanism.lower()}
""", files={"sasl_passwd": f"{nexthop} alice:{password}\n"})

    yield make
    for pf in started:
        pf.stop()


def wait_spooled(app, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(app.queued()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(app.queued()) == count, app.log()


@pytest.mark.parametrize(("level", "mechanism"), [
    ("encrypt", "PLAIN"),
    ("verify", "PLAIN"),
    ("verify", "CRAM-MD5"),
    ("verify", "LOGIN"),
])
def test_postfix_relays_over_tls_with_sasl(auth_app, relay, level, mechanism):
    pf = relay(level, mechanism)
    pf.send(SENDER, RECIPIENTS, MESSAGE)
    pf.flush()
    wait_spooled(auth_app, 1)

    env, data = stored(auth_app)
    assert env["mail_from"]["address"] == SENDER
    assert [r["address"] for r in env["recipients"]] == RECIPIENTS
    assert env["client"]["auth_user"] == "alice"
    assert env["client"]["helo"] == "relay.test.example"
    assert env["client"]["tls"]["protocol"] in ("TLSv1.2", "TLSv1.3")
    if level == "verify":
        assert env["client"]["tls"]["sni"] == "localhost"  # smtp_tls_servername

    # our Received field comes first, before the one Postfix added
    first = data.split(b"\r\nReceived:", 1)[0].replace(b"\r\n\t", b" ")
    assert first.startswith(b"Received: from relay.test.example (unknown [127.0.0.1]) "), first
    assert b"(using " + env["client"]["tls"]["protocol"].encode() + b" with cipher " in first
    assert b" by mx.test.example (smtp-appliance) with ESMTPSA id " + \
        env["queue_id"].encode() + b"; " in first
    assert b"by relay.test.example (Postfix" in data  # Postfix's own Received survived
    assert b"Subject: relayed by postfix\r\n" in data
    assert data.endswith(b"\r\nhello through a real relay\r\n")

    assert f"mechanism={mechanism}" in auth_app.log()
    pf.wait_log("status=sent")
    sent = [line for line in pf.log().splitlines() if "status=sent" in line]
    assert len(sent) == len(RECIPIENTS), sent
    host = "localhost" if level == "verify" else "127.0.0.1"
    for rcpt, line in zip(RECIPIENTS, sent, strict=True):
        assert f"to=<{rcpt}>, relay={host}[127.0.0.1]:{auth_app.ports['mta']}," in line, line
        assert f"status=sent (250 2.0.0 Ok: queued as {env['queue_id']})" in line, line
    # encrypt: the chain is checked against the CA file but not the name ("Trusted")
    trust = "Verified" if level == "verify" else "Trusted"
    assert f"{trust} TLS connection established to " in pf.log()


def test_wrong_password_is_deferred_and_nothing_is_spooled(auth_app, relay, certs):
    pf = relay("verify", "PLAIN", password="not-the-password")
    pf.send(SENDER, RECIPIENTS[:1], MESSAGE)
    pf.flush()
    line = pf.wait_log("status=deferred")
    assert "SASL authentication failed" in line and "535 5.7.8" in line, line
    assert auth_app.queued() == []
    log = auth_app.log()
    assert "auth_failed" in log and "user=alice" in log
    assert "not-the-password" not in log
    # the appliance still serves others: a correct login over STARTTLS works
    with smtplib.SMTP("localhost", auth_app.ports["mta"], timeout=10) as c:
        c.starttls(context=client_context(certs))
        c.login("alice", PASSWORD)
        assert c.sendmail("alice@example.org", ["b@example.net"],
                          MESSAGE.replace(b"\n", b"\r\n")) == {}
    assert len(auth_app.queued()) == 1
