"""AUTH offers only the mechanisms the users file can verify, and the log says why
a known user failed. The users file is made by the real `smtp-appliance users`
command, with its default mechanisms (PLAIN, LOGIN, SCRAM-SHA-256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys

import pytest

from .conftest import have
from .test_auth import starttls

PASSWORD = "correct horse battery staple"
DEFAULT_OFFER = ["PLAIN", "LOGIN", "SCRAM-SHA-256"]


def users_cli(users, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "users", *args, "--file", str(users),
         "--password-stdin"], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def app(make_appliance, tmp_path):
    users = tmp_path / "users.toml"
    users_cli(users, "add", "alice")
    app = make_appliance(f"""
        [auth]
        users_file = "{users}"
        failure_delay = "0s"
        """, listeners={"mta": {"tls_mode": "starttls"}})
    app.users = users
    return app


def cram_md5(c, user: str) -> tuple[int, bytes]:
    code, challenge = c.docmd("AUTH", "CRAM-MD5")
    assert code == 334
    digest = hmac.new(PASSWORD.encode(), base64.b64decode(challenge), hashlib.md5).hexdigest()
    return c.docmd(base64.b64encode(f"{user} {digest}".encode()).decode())


def test_ehlo_offers_only_the_mechanisms_users_have_secrets_for(app, certs):
    with starttls(app, certs) as c:
        assert c.esmtp_features["auth"].split() == DEFAULT_OFFER
        for mechanism in ("CRAM-MD5", "DIGEST-MD5"):  # not offered: no failure counted
            code, text = c.docmd("AUTH", mechanism)
            assert (code, text[:5]) == (504, b"5.5.4"), mechanism
        c.login("alice", PASSWORD)
    assert "auth_failed" not in app.log()
    users_cli(app.users, "add", "bob", "--mechanisms", "CRAM-MD5")  # offered from the next session
    with starttls(app, certs) as c:
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5",
                                                    "SCRAM-SHA-256"]
        assert cram_md5(c, "bob")[0] == 235


def test_the_log_tells_unknown_user_missing_secret_and_wrong_password(app, certs):
    users_cli(app.users, "add", "bob", "--mechanisms", "CRAM-MD5")
    with starttls(app, certs) as c:
        assert cram_md5(c, "alice")[0] == 535  # alice has no CRAM-MD5 secret
        assert cram_md5(c, "mallory")[0] == 535
    with starttls(app, certs) as c:
        token = base64.b64encode(f"\0bob\0{PASSWORD}".encode()).decode()
        assert c.docmd("AUTH", "PLAIN " + token)[0] == 535  # bob has no password hash
        token = base64.b64encode(b"\0alice\0Tr0ub4dor&3").decode()
        assert c.docmd("AUTH", "PLAIN " + token)[0] == 535
    failures = [line for line in app.log().splitlines() if "auth_failed" in line]
    assert len(failures) == 4, failures
    assert 'user=alice mechanism=CRAM-MD5 reason="no CRAM-MD5 secret stored for this user"' \
        in failures[0]
    assert 'user=mallory mechanism=CRAM-MD5 reason="unknown user"' in failures[1]
    assert 'user=bob mechanism=PLAIN reason="no password hash stored for this user"' \
        in failures[2]
    assert 'user=alice mechanism=PLAIN reason="wrong password"' in failures[3]
    assert PASSWORD not in app.log() and "Tr0ub4dor" not in app.log()


@pytest.mark.skipif(not have("swaks"), reason="swaks (Debian) is installed by make test")
@pytest.mark.parametrize("mechanism", ["", "PLAIN", "LOGIN"])  # "": swaks picks from EHLO
def test_swaks_succeeds_at_the_first_attempt(app, certs, mechanism):
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(app.ports["mta"]),
         "--tls", "--tls-verify", "--tls-ca-path", str(certs[2]), "--tls-sni", "localhost",
         "--ehlo", "swaks.example", "--auth", *([mechanism] if mechanism else []),
         "--auth-user", "alice", "--auth-password", PASSWORD,
         "--from", "alice@example.org", "--to", "b@example.net"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0" in result.stdout and " 535 " not in result.stdout
    assert "auth_failed" not in app.log()
    assert len(app.queued()) == 1
