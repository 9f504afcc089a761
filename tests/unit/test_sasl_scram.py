"""SCRAM-SHA-256 (RFC 5802, RFC 7677) against the scramp client library, and the
RFC 7677 example exchange byte for byte."""

# ruff: noqa: F811  (pytest fixtures imported from sasl_harness are parameters here)

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib

import pytest
from attrs import evolve
from scramp import ScramClient

from appliance.sasl import CredentialsBackend, SASLOptions, ScramKeys, ScramSHA256, Success
from appliance.sasl.exchange import AuthExchange
from appliance.sasl.saslprep import saslprep
from appliance.users import UsersFile, make_entry, write_users

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
    users_path,
)

BAD_CREDENTIALS = b"535 5.7.8 Authentication credentials invalid\r\n"
MALFORMED = b"501 5.5.2 Malformed authentication exchange\r\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def text_of(reply) -> str:
    return base64.b64decode(reply.text).decode()


def scramp_login(port: int, user: str, password: str):
    """smtplib's AUTH dialogue with scramp computing the SCRAM messages."""
    client = ScramClient(["SCRAM-SHA-256"], user, password)

    def answer(challenge: bytes | None = None) -> str:
        if challenge is None:
            return client.get_client_first()
        if challenge.startswith(b"r="):
            client.set_server_first(challenge.decode())
            return client.get_client_final()
        client.set_server_final(challenge.decode())  # raises if v= is wrong
        return ""

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        return smtp.auth("SCRAM-SHA-256", answer)


@pytest.mark.parametrize(("user", "password"), [(ALICE, ALICE_PW), (CAROL, CAROL_PW)])
def test_scramp_client_logs_in_and_checks_the_server_signature(auth_server, user, password):
    server = auth_server("SCRAM-SHA-256")
    assert scramp_login(server.port, user, password) == (
        235, b"2.7.0 Authentication successful")
    result = server.results[0]
    assert (result.identity, result.authcid) == (user, user)
    assert result.data.startswith(b"v=")


@pytest.mark.parametrize(("user", "password"), [
    (ALICE, "wrong"), ("nobody", ALICE_PW), (BOB, BOB_PW)],
    ids=["wrong-password", "unknown-user", "no-scram-keys"])
def test_scramp_client_refused(auth_server, user, password):
    server = auth_server("SCRAM-SHA-256")
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        scramp_login(server.port, user, password)
    assert (err.value.smtp_code, err.value.smtp_error) == (
        535, b"5.7.8 Authentication credentials invalid")


def test_rfc_7677_example():
    """Section 3: user / pencil, the RFC's nonces and salt."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")

    class User(CredentialsBackend):
        def scram_keys(self, user, mechanism):
            assert mechanism == "SCRAM-SHA-256"
            return ScramKeys.from_password("pencil", salt, 4096) if user == "user" else None

    class RFCNonce(ScramSHA256):
        def _server_nonce(self):
            return "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"

    exchange = AuthExchange(RFCNonce(SASLOptions(backend=User(), hostname="x")))
    reply = exchange.start(b64("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"))
    assert text_of(reply) == ("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                              "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    reply = exchange.line(b64("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                              "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
    assert text_of(reply) == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert exchange.line("").code == 235
    assert exchange.result.identity == "user"


def first_message(options, message: str, mechanism_options=None):
    exchange = AuthExchange(ScramSHA256(mechanism_options or options))
    return exchange, exchange.start(b64(message))


def test_unknown_user_gets_a_stable_salt_and_the_usual_iterations(options):
    _, one = first_message(options, "n,,n=nobody,r=abc")
    _, two = first_message(options, "n,,n=nobody,r=abc")
    _, other = first_message(options, "n,,n=somebody,r=abc")
    salt = lambda reply: text_of(reply).split(",")[1]  # noqa: E731
    assert salt(one) == salt(two) != salt(other)
    assert text_of(one).endswith(",i=4096")


def test_y_flag_is_accepted_and_p_refused(auth_server, options):
    exchange, reply = first_message(options, f"y,,n={ALICE},r=abc")
    assert reply.code == 334
    exchange, reply = first_message(options, f"p=tls-unique,,n={ALICE},r=abc")
    assert reply.render() == b"535 5.7.8 Channel binding is not supported\r\n"


def test_authzid_needs_the_hook(options):
    allowing = evolve(options, authorize=lambda authcid, authzid: authzid == "boss")
    for opts, expected in ((options, BAD_CREDENTIALS), (allowing, None)):
        keys = opts.backend.scram_keys(ALICE, "SCRAM-SHA-256")
        exchange, reply = first_message(opts, f"n,a=boss,n={ALICE},r=abc")
        server_first = text_of(reply)
        final = _proof(keys, ALICE_PW, f"n={ALICE},r=abc", server_first, "n,a=boss,")
        reply = exchange.line(b64(final))
        if expected:
            assert reply.render() == expected
        else:
            assert reply.code == 334
            exchange.line("")
            assert exchange.result == Success(identity="boss", authcid=ALICE,
                                              data=exchange.result.data)


def _proof(keys, password, bare, server_first, gs2_header):
    """RFC 5802 section 3 client proof, for a gs2 header scramp cannot send."""
    nonce = server_first.split(",")[0]
    without = f"c={base64.b64encode(gs2_header.encode()).decode()},{nonce}"
    auth_message = f"{bare},{server_first},{without}".encode()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), keys.salt, keys.iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without},p={base64.b64encode(proof).decode()}"


@pytest.mark.parametrize("message", [
    "c=biws,r=abc,p=AAAA",  # a client-final message first: wrong step
    "n,,r=abc,n=alice",  # attributes out of order
    "n,,m=ext,n=alice,r=abc",  # mandatory extension
    "n,,n=al=2Xce,r=abc",  # bad escape
    "x,,n=alice,r=abc",  # bad flag
    "n,,n=,r=abc",  # empty name
])
def test_malformed_client_first(options, message):
    _, reply = first_message(options, message)
    assert reply.render() == MALFORMED


def test_extensions_after_the_nonce_are_ignored(options):
    _, reply = first_message(options, f"n,,n={ALICE},r=abc,x=ext")
    assert reply.code == 334


def test_malformed_client_final(options):
    for final in ("p=AAAA", "c=biws,r=WRONG,p=AAAA", "c=eSws,r={n},p=AAAA",
                  "c=biws,r={n},p=!!!", "c=biws,r={n},p=AAAA", "c=biws,r={n}"):
        exchange, reply = first_message(options, f"n,,n={ALICE},r=abc")
        nonce = text_of(reply).split(",")[0][2:]
        assert exchange.line(b64(final.format(n=nonce))).render() == MALFORMED, final


def test_cancel_bad_base64_and_a_reply_to_the_server_signature(options, auth_server):
    exchange, _ = first_message(options, f"n,,n={ALICE},r=abc")
    assert exchange.line("*").render() == b"501 5.7.0 Authentication cancelled\r\n"
    exchange, _ = first_message(options, f"n,,n={ALICE},r=abc")
    assert exchange.line("a=b=c").render() == b"501 5.5.2 Cannot decode base64 response\r\n"
    client = ScramClient(["SCRAM-SHA-256"], ALICE, ALICE_PW)
    exchange, reply = first_message(options, client.get_client_first())
    client.set_server_first(text_of(reply))
    reply = exchange.line(b64(client.get_client_final()))
    client.set_server_final(text_of(reply))
    assert exchange.line(b64("more")).render() == MALFORMED
    replies, _ = run(options, "SCRAM-SHA-256", None, "*")  # no initial response
    assert replies == [b"334 \r\n", b"501 5.7.0 Authentication cancelled\r\n"]


@pytest.mark.parametrize(("text", "prepared"), [
    ("I\u00adX", "IX"), ("user", "user"), ("USER", "USER"), ("\u00aa", "a"), ("\u2168", "IX"),
    ("a\u00a0b", "a b"),
])
def test_saslprep_rfc_4013_examples(text, prepared):
    assert saslprep(text) == prepared


@pytest.mark.parametrize("text", ["\u0007", "\u0627\u0031"])
def test_saslprep_rfc_4013_refusals(text):
    with pytest.raises(ValueError):
        saslprep(text)


def test_prepared_password_matches_what_scramp_sends(tmp_path, auth_server):
    """The users file keeps keys of the SASLprep-ed password, as clients hash it."""
    path = tmp_path / "users.toml"
    write_users(path, {"dave": make_entry("dave", "I\u00adX pässwörd", ["SCRAM-SHA-256"], "r")})
    server = auth_server("SCRAM-SHA-256",
                         opts=SASLOptions(backend=UsersFile(path), hostname="mx.example.org"))
    assert scramp_login(server.port, "dave", "IX pässwörd")[0] == 235
