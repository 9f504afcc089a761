"""DIGEST-MD5 (RFC 2831): the RFC's example exchange, swaks (Authen::SASL), and a
client written here from the RFC's formulas (section 2.1.2.1) for the edge cases."""

# ruff: noqa: F811  (pytest fixtures imported from sasl_harness are parameters here)

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from attrs import evolve

from appliance.sasl import CredentialsBackend, DigestMD5, SASLOptions, Success
from appliance.sasl.digest_md5 import parse_directives
from appliance.sasl.exchange import AuthExchange
from appliance.sasl.mechanism import Malformed
from appliance.users import UsersFile, make_entry, write_users

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
MALFORMED = b"501 5.5.2 Malformed authentication exchange\r\n"


def _h(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def _enc(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def client_response(challenge: bytes, user: str, password: str, *, realm: str | None = None,
                    authzid: str | None = None, uri: str = f"smtp/{HOSTNAME}",
                    cnonce: str = "OA6MHXh6VqTrRk", nc: str = "00000001",
                    extra: str = "") -> tuple[str, str]:
    """A DIGEST-MD5 client from RFC 2831's formulas: (base64 response, expected rspauth)."""
    nonce = re.search(r'nonce="([^"]*)"', challenge.decode()).group(1)
    if realm is None:
        realm = re.search(r'realm="([^"]*)"', challenge.decode()).group(1)
    a1 = _h(_enc(user) + b":" + _enc(realm) + b":" + _enc(password)) \
        + f":{nonce}:{cnonce}".encode()
    if authzid:
        a1 += b":" + authzid.encode()

    def kd(a2: str) -> str:
        tail = f":{nonce}:{nc}:{cnonce}:auth:{_h(a2.encode()).hex()}"
        return _h(_h(a1).hex().encode() + tail.encode()).hex()

    fields = [f'charset=utf-8,username="{user}",realm="{realm}",nonce="{nonce}",nc={nc}',
              f'cnonce="{cnonce}",digest-uri="{uri}",response={kd("AUTHENTICATE:" + uri)}',
              "qop=auth"]
    if authzid:
        fields.append(f'authzid="{authzid}"')
    line = ",".join(fields) + extra
    return base64.b64encode(line.encode()).decode(), "rspauth=" + kd(":" + uri)


def challenge_of(reply: bytes) -> bytes:
    return base64.b64decode(reply.split()[1])


def test_rfc_2831_example_exchange():
    """Section 4's IMAP example, byte for byte: chris / secret."""
    realm = "elwood.innosoft.com"

    class Chris(CredentialsBackend):
        def digest_md5_ha1(self, user, r):
            return _h(b"chris:elwood.innosoft.com:secret") if (user, r) == ("chris", realm) \
                else None

    class RFCNonce(DigestMD5):
        def _new_nonce(self):
            return "OA6MG9tEQGm2hh"

    opts = SASLOptions(backend=Chris(), hostname=realm, digest_uri_service="imap")
    exchange = AuthExchange(RFCNonce(opts))
    challenge = challenge_of(exchange.start(None).render())
    assert challenge == (b'realm="elwood.innosoft.com",nonce="OA6MG9tEQGm2hh",qop="auth",'
                         b"charset=utf-8,algorithm=md5-sess")
    response = (b'charset=utf-8,username="chris",realm="elwood.innosoft.com",'
                b'nonce="OA6MG9tEQGm2hh",nc=00000001,cnonce="OA6MHXh6VqTrRk",'
                b'digest-uri="imap/elwood.innosoft.com",'
                b"response=d388dad90d4bbd760a152321f2143af7,qop=auth")
    reply = exchange.line(base64.b64encode(response).decode())
    assert challenge_of(reply.render()) == b"rspauth=ea40f60335c427b5527b84dbabcdfffd"
    assert exchange.line("").render() == b"235 2.7.0 Authentication successful\r\n"
    assert exchange.result == Success(identity="chris", authcid="chris",
                                      data=b"rspauth=ea40f60335c427b5527b84dbabcdfffd")


def test_swaks_authen_sasl_logs_in_and_is_refused(auth_server):
    server = auth_server("DIGEST-MD5")
    ok = swaks(server.port, "DIGEST-MD5", ALICE, ALICE_PW)
    assert "235 2.7.0 Authentication successful" in ok.stdout, ok.stdout + ok.stderr
    bad = swaks(server.port, "DIGEST-MD5", ALICE, "wrong")
    assert "535 5.7.8 Authentication credentials invalid" in bad.stdout
    assert bad.returncode != 0
    assert server.results[0].identity == ALICE


def test_formula_client_success_and_rspauth(options):
    first, exchange = run(options, "DIGEST-MD5", None)
    response, rspauth = client_response(challenge_of(first[0]), ALICE, ALICE_PW)
    assert challenge_of(exchange.line(response).render()) == rspauth.encode()
    assert exchange.line("").code == 235


@pytest.mark.parametrize(("user", "password"), [
    ("jürgen", "pässwörd"),  # both fit ISO 8859-1: hashed in it
    ("josé@例え.jp", "密码 and ä"),  # do not fit: hashed in UTF-8
])
def test_non_ascii_names_and_passwords(tmp_path, user, password):
    path = tmp_path / "users.toml"
    write_users(path, {user: make_entry(user, password, ["DIGEST-MD5"], HOSTNAME)})
    opts = SASLOptions(backend=UsersFile(path), hostname=HOSTNAME)
    first, exchange = run(opts, "DIGEST-MD5", None)
    response, rspauth = client_response(challenge_of(first[0]), user, password)
    assert challenge_of(exchange.line(response).render()) == rspauth.encode()


def test_wrong_password_unknown_user_other_realm_and_no_key_look_alike(options):
    replies = []
    for user, password, realm in ((ALICE, "wrong", None), ("nobody", ALICE_PW, None),
                                  (ALICE, ALICE_PW, "other.example"), (BOB, BOB_PW, None)):
        first, exchange = run(options, "DIGEST-MD5", None)
        response, _ = client_response(challenge_of(first[0]), user, password, realm=realm)
        replies.append(exchange.line(response).render())
    assert replies == [BAD_CREDENTIALS] * 4


def test_authzid_needs_the_hook(options):
    first, exchange = run(options, "DIGEST-MD5", None)
    response, _ = client_response(challenge_of(first[0]), ALICE, ALICE_PW, authzid="boss")
    assert exchange.line(response).render() == BAD_CREDENTIALS
    allowing = evolve(options, authorize=lambda authcid, authzid: authzid == "boss")
    first, exchange = run(allowing, "DIGEST-MD5", None)
    response, rspauth = client_response(challenge_of(first[0]), ALICE, ALICE_PW, authzid="boss")
    assert challenge_of(exchange.line(response).render()) == rspauth.encode()
    exchange.line("")
    assert exchange.result.identity == "boss" and exchange.result.authcid == ALICE


@pytest.mark.parametrize("change", [
    {"nc": "00000002"},  # no subsequent authentication
    {"uri": f"imap/{HOSTNAME}"},  # another service
    {"extra": ",qop=auth-int"},  # repeated directive
    {"extra": ",cipher=rc4"},  # no security layer offered
    {"extra": ',x="unterminated'},
])
def test_malformed_responses(options, change):
    first, exchange = run(options, "DIGEST-MD5", None)
    response, _ = client_response(challenge_of(first[0]), ALICE, ALICE_PW, **change)
    assert exchange.line(response).render() == MALFORMED


def test_response_size_limit_is_4095_bytes(options):
    """RFC 2831 2.1.2: a digest-response is less than 4096 bytes."""
    for size, code in ((4095, 334), (4096, 501)):
        first, exchange = run(options, "DIGEST-MD5", None)
        challenge = challenge_of(first[0])
        plain_len = len(base64.b64decode(client_response(challenge, ALICE, ALICE_PW)[0]))
        padding = ",x=" + "a" * (size - plain_len - 3)
        response, _ = client_response(challenge, ALICE, ALICE_PW, extra=padding)
        assert len(base64.b64decode(response)) == size
        assert exchange.line(response).code == code


def test_nonce_must_be_the_one_offered(options):
    first, exchange = run(options, "DIGEST-MD5", None)
    other = challenge_of(first[0]).replace(b'nonce="', b'nonce="X')
    response, _ = client_response(other, ALICE, ALICE_PW)
    assert exchange.line(response).render() == MALFORMED
    assert "nonce" in exchange.result.reason


def test_missing_directive(options):
    first, exchange = run(options, "DIGEST-MD5", None)
    response = base64.b64encode(b'username="alice",nonce="x",nc=00000001').decode()
    assert exchange.line(response).render() == MALFORMED
    assert exchange.result.reason.startswith("missing")


def test_initial_response_cancel_bad_base64_and_a_reply_to_rspauth(options):
    assert run(options, "DIGEST-MD5", "dXNlcg==")[0] == [MALFORMED]
    assert run(options, "DIGEST-MD5", None, "*")[0][-1] == b"501 5.7.0 Authentication cancelled\r\n"
    assert run(options, "DIGEST-MD5", None, "@@")[0][-1] == \
        b"501 5.5.2 Cannot decode base64 response\r\n"
    first, exchange = run(options, "DIGEST-MD5", None)
    response, _ = client_response(challenge_of(first[0]), ALICE, ALICE_PW)
    assert exchange.line(response).code == 334
    assert exchange.line(base64.b64encode(b"junk").decode()).render() == MALFORMED


def test_directive_parser():
    assert parse_directives(' a = "x\\"y" ,, B=tok, c=""') == {"a": 'x"y', "b": "tok", "c": ""}
    for bad in ("a", "a=", "a=1 b=2", "=1", 'a="x'):
        with pytest.raises(Malformed):
            parse_directives(bad)
