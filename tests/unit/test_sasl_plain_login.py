"""PLAIN (RFC 4616) and LOGIN against real clients: smtplib and swaks."""

# ruff: noqa: F811  (pytest fixtures imported from sasl_harness are parameters here)

from __future__ import annotations

import base64
import smtplib

import pytest
from attrs import evolve

from appliance.sasl import ExchangeOver, Failure, Success, create

from .sasl_harness import (  # noqa: F401 (fixtures)
    ALICE,
    ALICE_PW,
    BOB,
    BOB_PW,
    CAROL,
    CAROL_PW,
    auth_server,
    backend,
    options,
    run,
    swaks,
    users_path,
)

BAD_CREDENTIALS = b"535 5.7.8 Authentication credentials invalid\r\n"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize(("user", "password"), [(ALICE, ALICE_PW), (BOB, BOB_PW)],
                         ids=["argon2id", "sha512-crypt"])
def test_smtplib_logs_in(auth_server, mechanism, user, password):
    server = auth_server(mechanism)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        code, text = client.login(user, password)
    assert (code, text) == (235, b"2.7.0 Authentication successful")
    assert server.results == [Success(identity=user, authcid=user)]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_logs_in_and_is_refused_a_wrong_password(auth_server, mechanism):
    server = auth_server(mechanism)
    ok = swaks(server.port, mechanism, ALICE, ALICE_PW)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "235 2.7.0 Authentication successful" in ok.stdout
    bad = swaks(server.port, mechanism, ALICE, "pencils")
    assert bad.returncode != 0
    assert "535 5.7.8 Authentication credentials invalid" in bad.stdout
    assert [type(r) for r in server.results] == [Success, Failure]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_wrong_password_raises_535(auth_server, mechanism):
    server = auth_server(mechanism)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.login(ALICE, "wrong")
    assert (err.value.smtp_code, err.value.smtp_error) == (
        535, b"5.7.8 Authentication credentials invalid")


def plain(options, authzid, authcid, password):
    return run(options, "PLAIN", b64(f"{authzid}\0{authcid}\0{password}"))


def test_plain_unknown_user_gets_the_same_reply_as_a_wrong_password(options):
    wrong, ex1 = plain(options, "", ALICE, "wrong")
    unknown, ex2 = plain(options, "", "nobody@example.org", ALICE_PW)
    no_verifier, ex3 = plain(options, "", CAROL, CAROL_PW)  # SCRAM keys only
    assert wrong == unknown == no_verifier == [BAD_CREDENTIALS]
    assert (ex1.result.reason, ex2.result.reason) == ("wrong password", "unknown user")
    assert ex2.result.user == "nobody@example.org"


def test_plain_without_initial_response_gets_an_empty_challenge(options):
    replies, exchange = run(options, "PLAIN", None, b64(f"\0{ALICE}\0{ALICE_PW}"))
    assert replies == [b"334 \r\n", b"235 2.7.0 Authentication successful\r\n"]
    assert exchange.result.identity == ALICE


def test_plain_authzid_equal_to_authcid_is_fine(options):
    replies, exchange = plain(options, ALICE, ALICE, ALICE_PW)
    assert replies == [b"235 2.7.0 Authentication successful\r\n"]
    assert exchange.result == Success(identity=ALICE, authcid=ALICE)


def test_plain_other_authzid_is_refused_unless_allowed(options):
    replies, exchange = plain(options, "boss@example.org", ALICE, ALICE_PW)
    assert replies == [BAD_CREDENTIALS]
    assert "may not act as" in exchange.result.reason
    asked = []
    allowing = evolve(options, authorize=lambda c, z: asked.append((c, z)) or True)
    replies, exchange = plain(allowing, "boss@example.org", ALICE, ALICE_PW)
    assert replies == [b"235 2.7.0 Authentication successful\r\n"]
    assert exchange.result == Success(identity="boss@example.org", authcid=ALICE)
    assert asked == [(ALICE, "boss@example.org")]
    # The hook is never asked on behalf of a wrong password.
    replies, _ = plain(allowing, "boss@example.org", ALICE, "wrong")
    assert replies == [BAD_CREDENTIALS] and len(asked) == 1


@pytest.mark.parametrize("message", [
    b"alice\0pencil",  # one NUL
    b"\0alice\0pencil\0",  # three
    b"\0alice\0\xff\xfe",  # not UTF-8
    b"",  # "=" : an empty message
])
def test_plain_malformed_message(options, message):
    initial = "=" if message == b"" else b64(message)
    replies, exchange = run(options, "PLAIN", initial)
    assert replies == [b"501 5.5.2 Malformed authentication exchange\r\n"]
    assert exchange.done


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_malformed_base64_and_cancel(options, mechanism):
    replies, _ = run(options, mechanism, None, "not*base64!")
    assert replies[-1] == b"501 5.5.2 Cannot decode base64 response\r\n"
    replies, exchange = run(options, mechanism, None, "*")
    assert replies[-1] == b"501 5.7.0 Authentication cancelled\r\n"
    assert exchange.result.reason == "cancelled by client"


def test_login_dialogue_and_initial_response(options):
    replies, _ = run(options, "LOGIN", None, b64(ALICE), b64(ALICE_PW))
    assert replies == [b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n",
                       b"235 2.7.0 Authentication successful\r\n"]
    replies, _ = run(options, "LOGIN", b64(ALICE), b64(ALICE_PW))
    assert replies == [b"334 UGFzc3dvcmQ6\r\n", b"235 2.7.0 Authentication successful\r\n"]


def test_login_unknown_user_same_reply_and_cancel_at_password(options):
    wrong, _ = run(options, "LOGIN", None, b64(ALICE), b64("wrong"))
    unknown, _ = run(options, "LOGIN", None, b64("nobody"), b64(ALICE_PW))
    assert wrong == unknown
    assert wrong[-1] == BAD_CREDENTIALS
    replies, exchange = run(options, "LOGIN", None, b64(ALICE), "*")
    assert replies[-1] == b"501 5.7.0 Authentication cancelled\r\n"
    assert exchange.result.user == ALICE


def test_a_finished_mechanism_cannot_be_stepped(options):
    mech = create("PLAIN", options)
    assert isinstance(mech.start(f"\0{ALICE}\0{ALICE_PW}".encode()), Success)
    with pytest.raises(ExchangeOver):
        mech.respond(b"again")
    with pytest.raises(ExchangeOver):
        mech.start(None)
    fresh = create("LOGIN", options)
    with pytest.raises(ExchangeOver):  # respond before start
        fresh.respond(b"alice")
    replies, exchange = run(options, "PLAIN", b64(f"\0{ALICE}\0{ALICE_PW}"))
    with pytest.raises(ExchangeOver):
        exchange.line(b64("more"))
