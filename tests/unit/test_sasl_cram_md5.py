"""CRAM-MD5 (RFC 2195) from the stored HMAC-MD5 key state, against smtplib and swaks."""

# ruff: noqa: F811  (pytest fixtures imported from sasl_harness are parameters here)

from __future__ import annotations

import base64
import hmac
import smtplib

import pytest

from appliance.sasl import CramMD5, CramMD5Key, CredentialsBackend, SASLOptions, Success, md5state
from appliance.sasl.exchange import AuthExchange

from .sasl_harness import (  # noqa: F401 (fixtures)
    ALICE,
    ALICE_PW,
    BOB,
    BOB_PW,
    HOSTNAME,
    auth_server,
    backend,
    options,
    run,
    swaks,
    users_path,
)

BAD_CREDENTIALS = b"535 5.7.8 Authentication credentials invalid\r\n"
RFC_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"


def answer(challenge_reply: bytes, user: str, password: str) -> str:
    """What a client sends: base64("user hex(HMAC-MD5(password, challenge)))")."""
    challenge = base64.b64decode(challenge_reply.split()[1])
    digest = hmac.new(password.encode(), challenge, "md5").hexdigest()
    return base64.b64encode(f"{user} {digest}".encode()).decode()


@pytest.mark.parametrize("password", ["", "tanstaaftanstaaf", "pässwörd", "x" * 65, "y" * 200])
def test_key_state_gives_the_same_hmac_as_the_password(password):
    key = CramMD5Key.from_password(password)
    for message in (b"", RFC_CHALLENGE, b"z" * 55, b"z" * 56, b"z" * 64, b"z" * 300):
        assert key.hmac(message) == hmac.new(password.encode(), message, "md5").digest()
    assert CramMD5Key.from_hex(key.to_hex()) == key
    assert CramMD5Key.from_hex("{CRAM-MD5}" + key.to_hex()) == key


def test_rfc_2195_example():
    """RFC 2195 section 2: tim / tanstaaftanstaaf."""
    key = CramMD5Key.from_password("tanstaaftanstaaf")
    assert key.hmac(RFC_CHALLENGE).hex() == "b913a602c7eda7a495b4e6e7334d3890"

    class Tim(CredentialsBackend):
        def cram_md5_key(self, user):
            return key if user == "tim" else None

    class FixedChallenge(CramMD5):
        def _new_challenge(self):
            return RFC_CHALLENGE

    exchange = AuthExchange(FixedChallenge(SASLOptions(backend=Tim(), hostname="x")))
    reply = exchange.start(None)
    assert reply.render() == b"334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n"
    assert exchange.line("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw").code == 235
    assert exchange.result == Success(identity="tim", authcid="tim")


def test_dovecot_layout_outer_state_first():
    """Dovecot's hmac_md5_get_cram_context writes the opad state, then the ipad one."""
    key = CramMD5Key.from_password("secret")
    padded = b"secret".ljust(64, b"\0")
    outer = md5state.state_after_block(bytes(b ^ 0x5C for b in padded))
    inner = md5state.state_after_block(bytes(b ^ 0x36 for b in padded))
    assert key.to_hex() == (md5state.to_bytes(outer) + md5state.to_bytes(inner)).hex()
    swapped = CramMD5Key.from_hex(key.to_hex()[32:] + key.to_hex()[:32])
    assert swapped.hmac(b"msg") != hmac.new(b"secret", b"msg", "md5").digest()


def test_smtplib_and_swaks_log_in(auth_server):
    server = auth_server("CRAM-MD5")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        assert client.login(ALICE, ALICE_PW)[0] == 235
    done = swaks(server.port, "CRAM-MD5", ALICE, ALICE_PW)
    assert "235 2.7.0 Authentication successful" in done.stdout, done.stdout
    refused = swaks(server.port, "CRAM-MD5", ALICE, "wrong")
    assert refused.returncode != 0
    assert "535 5.7.8 Authentication credentials invalid" in refused.stdout
    assert [r.identity for r in server.results[:2]] == [ALICE, ALICE]


def test_challenge_is_fresh_and_names_the_host(options):
    first, _ = run(options, "CRAM-MD5", None)
    second, _ = run(options, "CRAM-MD5", None)
    challenge = base64.b64decode(first[0].split()[1])
    assert challenge.startswith(b"<") and challenge.endswith(f"@{HOSTNAME}>".encode())
    assert first != second


def test_wrong_password_unknown_user_and_user_without_key_look_alike(options):
    replies = []
    for user, password in ((ALICE, "wrong"), ("nobody", ALICE_PW), (BOB, BOB_PW)):
        first, exchange = run(options, "CRAM-MD5", None)
        replies.append(exchange.line(answer(first[0], user, password)).render())
    assert replies == [BAD_CREDENTIALS] * 3


@pytest.mark.parametrize("response", [
    "alice",  # no digest
    "alice 1234",  # short digest
    "alice " + "g" * 32,  # not hex
    " " + "a" * 32,  # no user
])
def test_malformed_response(options, response):
    replies, _ = run(options, "CRAM-MD5", None, base64.b64encode(response.encode()).decode())
    assert replies[-1] == b"501 5.5.2 Malformed authentication exchange\r\n"


def test_initial_response_bad_base64_and_cancel(options):
    replies, _ = run(options, "CRAM-MD5", "YWxpY2U=")  # a server-first mechanism
    assert replies == [b"501 5.5.2 Malformed authentication exchange\r\n"]
    replies, _ = run(options, "CRAM-MD5", None, "%%%")
    assert replies[-1] == b"501 5.5.2 Cannot decode base64 response\r\n"
    replies, _ = run(options, "CRAM-MD5", None, "*")
    assert replies[-1] == b"501 5.7.0 Authentication cancelled\r\n"


def test_failure_reasons_tell_missing_secret_from_unknown_user(options):
    """The client gets the same 535; only the log reason differs."""
    reasons = []
    for user, password in ((BOB, BOB_PW), ("mallory", "x"), (ALICE, "wrong")):
        exchange = AuthExchange(CramMD5(options))
        challenge = exchange.start(None).render()
        assert exchange.line(answer(challenge, user, password)).render() == BAD_CREDENTIALS
        reasons.append(exchange.result.reason)
    assert reasons == ["no CRAM-MD5 secret stored for this user", "unknown user",
                       "wrong password"]
    assert options.backend.mechanisms() == {"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5",
                                            "SCRAM-SHA-256"}

    class CannotTell(CredentialsBackend):
        pass  # neither mechanisms() nor has_user(): a plugin's store that does not say

    exchange = AuthExchange(CramMD5(SASLOptions(backend=CannotTell(), hostname=HOSTNAME)))
    exchange.line(answer(exchange.start(None).render(), "bob", "x"))
    assert exchange.result.reason == "unknown user or no CRAM-MD5 secret stored"
    assert CannotTell().mechanisms() is None
