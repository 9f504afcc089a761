"""OAUTHBEARER (RFC 7628) and XOAUTH2 with the example messages of RFC 7628 and
Google's XOAUTH2 documentation. The token check is the caller's callable (later
a hook); here a dict of valid tokens stands in for an authorization server,
which has no real peer on this machine."""

# ruff: noqa: F811  (pytest fixtures imported from sasl_harness are parameters here)

from __future__ import annotations

import base64
import json
import smtplib

import pytest
from attrs import evolve

from appliance.sasl import BackendUnavailable, Success

from .sasl_harness import (  # noqa: F401 (fixtures)
    auth_server,
    backend,
    options,
    run,
    users_path,
)

RFC_TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
# RFC 7628 section 4.1 (IMAP, port 143) and 4.3 (SMTP, port 587) initial responses.
RFC_IMAP_IR = ("bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1"
               "dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB")
RFC_SMTP_IR = ("bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9NTg3AWF1"
               "dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB")
# Google's XOAUTH2 example (developers.google.com/gmail/imap/xoauth2-protocol).
GOOGLE_IR = ("dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52"
             "YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2cBAQ==")
BAD_CREDENTIALS = b"535 5.7.8 Authentication credentials invalid\r\n"
MALFORMED = b"501 5.5.2 Malformed authentication exchange\r\n"


@pytest.fixture
def oauth(options):
    tokens = {RFC_TOKEN: "user@example.com",
              "ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg": "someuser@example.com"}
    asked = []

    def verify(user, token):
        asked.append((user, token))
        return tokens.get(token)

    opts = evolve(options, verify_token=verify, oauth_scope="https://mail.example.com/")
    return opts, asked


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_rfc_7628_success(oauth):
    opts, asked = oauth
    replies, exchange = run(opts, "OAUTHBEARER", RFC_IMAP_IR)
    assert replies == [b"235 2.7.0 Authentication successful\r\n"]
    assert exchange.result == Success(identity="user@example.com", authcid="user@example.com")
    assert asked == [("user@example.com", RFC_TOKEN)]


def test_rfc_7628_smtp_failure_exchange(options):
    """Section 4.3: the error JSON as a 334 challenge, ^A from the client, then 535."""
    opts = evolve(options, verify_token=lambda user, token: None,
                  oauth_scope="https://mail.example.com/")
    replies, exchange = run(opts, "OAUTHBEARER", RFC_SMTP_IR, "AQ==")
    code, challenge = replies[0].split()
    assert code == b"334"
    assert json.loads(base64.b64decode(challenge)) == {
        "status": "invalid_token", "schemes": "bearer", "scope": "https://mail.example.com/"}
    assert replies[1] == BAD_CREDENTIALS
    assert exchange.result.user == "user@example.com"


def test_openid_configuration_in_the_error(options):
    url = "https://example.com/.well-known/openid-configuration"
    opts = evolve(options, verify_token=lambda u, t: None, oauth_configuration=url)
    replies, _ = run(opts, "OAUTHBEARER", RFC_SMTP_IR)
    assert json.loads(base64.b64decode(replies[0].split()[1]))["openid-configuration"] == url


def test_token_of_another_user_is_refused_unless_allowed(oauth):
    opts, _ = oauth
    message = f"n,a=boss@example.com,\x01auth=Bearer {RFC_TOKEN}\x01\x01".encode()
    replies, _ = run(opts, "OAUTHBEARER", b64(message), "AQ==")
    assert replies[0].startswith(b"334 ") and replies[1] == BAD_CREDENTIALS
    allowing = evolve(opts, authorize=lambda authcid, authzid: True)
    replies, exchange = run(allowing, "OAUTHBEARER", b64(message))
    assert exchange.result == Success(identity="boss@example.com", authcid="user@example.com")


def test_no_authzid_means_the_token_names_the_user(oauth):
    opts, asked = oauth
    message = f"n,,\x01host=mx\x01auth=Bearer {RFC_TOKEN}\x01\x01".encode()
    replies, exchange = run(opts, "OAUTHBEARER", None, b64(message))
    assert replies == [b"334 \r\n", b"235 2.7.0 Authentication successful\r\n"]
    assert exchange.result.identity == "user@example.com"
    assert asked[-1] == (None, RFC_TOKEN)


def test_unknown_user_and_bad_token_look_alike(oauth):
    opts, _ = oauth
    bad_token = b"n,a=user@example.com,\x01auth=Bearer nope\x01\x01"
    unknown = f"n,a=nobody@example.com,\x01auth=Bearer {RFC_TOKEN}\x01\x01".encode()
    one, _ = run(opts, "OAUTHBEARER", b64(bad_token), "AQ==")
    two, _ = run(opts, "OAUTHBEARER", b64(unknown), "AQ==")
    assert one == two and one[1] == BAD_CREDENTIALS


@pytest.mark.parametrize("message", [
    f"n,,\x01auth=Bearer {RFC_TOKEN}\x01".encode(),  # one ^A at the end
    b"n,,\x01host=mx\x01\x01",  # no auth
    b"n,,\x01auth=Basic dXNlcg==\x01\x01",  # not a bearer token
    f"p=tls-unique,,\x01auth=Bearer {RFC_TOKEN}\x01\x01".encode(),  # channel binding
    f"n,,\x01auth=Bearer {RFC_TOKEN}\x01auth=Bearer x\x01\x01".encode(),  # repeated key
    b"\x01",  # a lone ^A is only the reply to an error
])
def test_malformed_oauthbearer(oauth, message):
    opts, _ = oauth
    assert run(opts, "OAUTHBEARER", b64(message))[0] == [MALFORMED]


def test_token_check_backend_down_gives_454(options):
    def down(user, token):
        raise BackendUnavailable("authorization server unreachable")

    opts = evolve(options, verify_token=down)
    for mechanism, ir in (("OAUTHBEARER", RFC_SMTP_IR), ("XOAUTH2", GOOGLE_IR)):
        replies, exchange = run(opts, mechanism, ir)
        assert replies == [b"454 4.7.0 Temporary authentication failure\r\n"]
        assert exchange.result.reason == "authorization server unreachable"


def test_no_verifier_refuses_every_token(options):
    replies, _ = run(options, "OAUTHBEARER", RFC_SMTP_IR, "AQ==")
    assert replies[1] == BAD_CREDENTIALS


def test_xoauth2_google_example(oauth):
    opts, asked = oauth
    assert base64.b64decode(GOOGLE_IR) == (
        b"user=someuser@example.com\x01auth=Bearer "
        b"ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg\x01\x01")
    replies, exchange = run(opts, "XOAUTH2", GOOGLE_IR)
    assert replies == [b"235 2.7.0 Authentication successful\r\n"]
    assert exchange.result.identity == "someuser@example.com"


def test_xoauth2_failure_is_a_json_challenge_then_535(oauth):
    opts, _ = oauth
    message = b"user=someuser@example.com\x01auth=Bearer expired\x01\x01"
    replies, _ = run(opts, "XOAUTH2", b64(message), "")
    assert json.loads(base64.b64decode(replies[0].split()[1])) == {
        "status": "401", "schemes": "bearer", "scope": "https://mail.example.com/"}
    assert replies[1] == BAD_CREDENTIALS


def test_xoauth2_through_smtplib(oauth, auth_server):
    opts, _ = oauth
    server = auth_server("XOAUTH2", opts=opts)
    message = "user=someuser@example.com\x01auth=Bearer " \
              "ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg\x01\x01"
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.auth("XOAUTH2", lambda challenge=None: message)[0] == 235
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            smtp.auth("XOAUTH2", lambda challenge=None: "" if challenge else
                      "user=someuser@example.com\x01auth=Bearer bad\x01\x01")
    assert err.value.smtp_code == 535


def test_xoauth2_unknown_user_and_bad_token_look_alike(oauth):
    opts, _ = oauth
    bad_token = b"user=someuser@example.com\x01auth=Bearer nope\x01\x01"
    unknown = b"user=nobody@example.com\x01auth=Bearer " \
              b"ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg\x01\x01"
    one, _ = run(opts, "XOAUTH2", b64(bad_token), "")
    two, _ = run(opts, "XOAUTH2", b64(unknown), "")
    assert one == two and one[1] == BAD_CREDENTIALS


@pytest.mark.parametrize("message", [
    b"user=someuser@example.com\x01auth=Bearer x\x01",  # one ^A at the end
    b"auth=Bearer x\x01\x01",  # no user
    b"user=a\x01auth=Bearer\x01\x01",  # no token
    b"",  # the empty reply to an error challenge, sent first: wrong step
])
def test_malformed_xoauth2(oauth, message):
    opts, _ = oauth
    assert run(opts, "XOAUTH2", b64(message))[0] == [MALFORMED]


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_cancel_and_bad_base64(options, mechanism):
    opts = evolve(options, verify_token=lambda u, t: None)
    assert run(opts, mechanism, None, "*")[0][-1] == b"501 5.7.0 Authentication cancelled\r\n"
    assert run(opts, mechanism, "x!y")[0] == [b"501 5.5.2 Cannot decode base64 response\r\n"]
